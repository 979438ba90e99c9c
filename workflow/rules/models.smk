"""Checkpoints, one per (model, step): toy models are trained here from scratch to the step; hub
revisions are fetched into the hub cache by a local rule (the submitting node has internet)."""


localrules:
    prefetch,


rule toy_model:
    input:
        tokens=rules.corpus.output.tokens,
        tokenizer=rules.corpus.output.tokenizer,
    output:
        directory(layout.toy_checkpoint(RESULTS, "{model}", "{step}")),
    log:
        layout.log_for(RESULTS, layout.toy_checkpoint(RESULTS, "{model}", "{step}")),
    wildcard_constraints:
        model=TOY_MODELS,
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 2000),
        runtime=model_grows("runtime", 30),
    params:
        settings=per_model(model_spec),
    shell:
        "python -m featurebirth --threads {threads} train-model --model {wildcards.model} --step {wildcards.step}"
        " --settings {params.settings} --tokens {input.tokens} --tokenizer {input.tokenizer} --out {output} > {log} 2>&1"


rule prefetch:
    output:
        layout.hub_pointer(RESULTS, "{model}", "{step}"),
    log:
        layout.log_for(RESULTS, layout.hub_pointer(RESULTS, "{model}", "{step}")),
    wildcard_constraints:
        model=HUB_MODELS,
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        # a download: little memory whatever the model, but time grows with its size
        mem_mb=grows(2000),
        runtime=model_grows("runtime", 120),
    params:
        settings=per_model(hub_settings),
    shell:
        "HF_HUB_OFFLINE=0 python -m featurebirth prefetch --model {wildcards.model} --step {wildcards.step}"
        " --settings {params.settings} --out {output} > {log} 2>&1"
