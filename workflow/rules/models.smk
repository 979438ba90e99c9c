"""Checkpoints, one per (model, step): toy models are trained here from scratch to the step."""


rule toy_model:
    input:
        tokens=rules.corpus.output.tokens,
        tokenizer=rules.corpus.output.tokenizer,
    output:
        directory(f"{RESULTS}/models/{{model}}/step{{step}}"),
    params:
        spec=lambda wc: as_arg(model_spec(config, wc.model)),
    log:
        f"{LOGS}/models/{{model}}/step{{step}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(30),
    shell:
        "python -m featurebirth --threads {threads} train-model --model {wildcards.model} --step {wildcards.step}"
        " --spec {params.spec} --tokens {input.tokens} --tokenizer {input.tokenizer} --out {output} > {log} 2>&1"
