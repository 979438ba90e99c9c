"""Sparse autoencoders, trained with dictionary-learning: one job per layer group of a (model, step).

One forward pass over the SAE split feeds every layer of the group (sae.layers_per_job); each SAE
lands in its own cell's folder, and the group's manifest, written last, is the job's output.
"""


rule train_saes:
    input:
        checkpoint=checkpoint,
        tokens=split_tokens("sae"),
        checked=text_checked,
    output:
        layout.sae_group(RESULTS, "{model}", "{step}", "{layers}"),
    log:
        layout.log_for(RESULTS, layout.sae_group(RESULTS, "{model}", "{step}", "{layers}")),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 4000),
        runtime=model_grows("runtime", 60),
    params:
        settings=per_model(sae_training_settings),
    shell:
        "python -m featurebirth --threads {threads} train-saes --model {wildcards.model} --step {wildcards.step}"
        " --checkpoint {input.checkpoint} --tokens {input.tokens} --settings {params.settings} --manifest {output}"
        " > {log} 2>&1"
