"""Score per (model, step): every studied layer's SAE on the probe sets (templates; with real text also the mined
contexts), and its quality on held-out text.

Scoring and evaluation settings are this job's alone: changing them rescores without retraining an SAE.
"""


rule score:
    input:
        checkpoint=checkpoint,
        probes=rules.probes.output[0],
        mined=mined_probes,
        eval_tokens=split_tokens("eval"),
        saes=trained_saes,
    output:
        layout.score_path(RESULTS, "{model}", "{step}"),
    log:
        layout.log_for(RESULTS, layout.score_path(RESULTS, "{model}", "{step}")),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 4000),
        runtime=model_grows("runtime", 30),
    params:
        settings=as_arg(scoring_settings(config)),
        layers=studied_layers,
        mined=lambda wildcards, input: f"--mined {input.mined}" if input.mined else "",
    shell:
        "python -m featurebirth --threads {threads} score --model {wildcards.model} --step {wildcards.step}"
        " --layers {params.layers} --checkpoint {input.checkpoint} --probes {input.probes} {params.mined}"
        " --eval-tokens {input.eval_tokens} --settings {params.settings} --saes {input.saes}"
        " --out {output} > {log} 2>&1"
