"""Checkpoints, one per (model, step): toy models are trained here from scratch to the step; hub
revisions are fetched into the hub cache by a local rule (the submitting node has internet)."""


localrules:
    prefetch,


rule toy_model:
    input:
        tokens=rules.corpus.output.tokens,
        tokenizer=rules.corpus.output.tokenizer,
    output:
        directory(f"{RESULTS}/models/{{model}}/step{{step}}"),
    wildcard_constraints:
        model=TOY_MODELS,
    params:
        spec=per_model(model_spec),
    log:
        f"{LOGS}/models/{{model}}/step{{step}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 2000),
        runtime=model_grows("runtime", 30),
    shell:
        "python -m featurebirth --threads {threads} train-model --model {wildcards.model} --step {wildcards.step}"
        " --spec {params.spec} --tokens {input.tokens} --tokenizer {input.tokenizer} --out {output} > {log} 2>&1"


rule prefetch:
    output:
        f"{RESULTS}/hub/{{model}}/step{{step}}.json",
    wildcard_constraints:
        model=HUB_MODELS,
    params:
        spec=per_model(model_spec),
        cache_dir=config["hub"]["cache_dir"],
        offline="--offline" if config["hub"]["offline_prefetch"] else "",
    log:
        f"{LOGS}/hub/{{model}}/step{{step}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        # a download: little memory whatever the model, but time grows with its size
        mem_mb=grows(2000),
        runtime=model_grows("runtime", 120),
    shell:
        "HF_HUB_OFFLINE=0 python -m featurebirth prefetch --model {wildcards.model} --step {wildcards.step}"
        " --spec {params.spec} --cache-dir {params.cache_dir} {params.offline} --out {output} > {log} 2>&1"
