"""Score per (model, step, layer): encode the probe activations with the cell's SAE."""


rule score:
    input:
        probes=f"{RESULTS}/activations/{{model}}/step{{step}}/probes.h5",
        # written last by the SAE job, after its weights and config
        metrics=rules.sae.output.metrics,
    output:
        score_path(RESULTS, "{model}", "{step}", "{layer}"),
    params:
        categories=as_arg(list(config["corpus"]["categories"])),
        settings=as_arg(config["scoring"]),
    log:
        f"{LOGS}/scores/{{model}}/step{{step}}/layer{{layer}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(15),
    shell:
        "python -m featurebirth --threads {threads} score --model {wildcards.model} --step {wildcards.step}"
        " --layer {wildcards.layer} --probes {input.probes} --sae-dir $(dirname {input.metrics})"
        " --categories {params.categories} --settings {params.settings} --out {output} > {log} 2>&1"
