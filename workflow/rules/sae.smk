"""One sparse autoencoder per (model, step, layer), trained with dictionary-learning."""


rule sae:
    input:
        training_cache,
    output:
        weights=f"{RESULTS}/sae/{{model}}/step{{step}}/layer{{layer}}/ae.pt",
        config=f"{RESULTS}/sae/{{model}}/step{{step}}/layer{{layer}}/config.json",
        metrics=sae_metrics("{model}", "{step}", "{layer}"),
    params:
        settings=per_model(sae_settings),
        device=config["device"],
    log:
        f"{LOGS}/sae/{{model}}/step{{step}}/layer{{layer}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 4000),
        runtime=model_grows("runtime", 60),
    shell:
        "python -m featurebirth --threads {threads} sae --model {wildcards.model} --step {wildcards.step} --layer {wildcards.layer}"
        " --settings {params.settings} --cache {input} --out $(dirname {output.metrics}) --device {params.device} > {log} 2>&1"
