"""Sparse autoencoders, trained with dictionary-learning: one job per layer group and set of seeds of a (model, step).

One forward pass over the SAE split, streamed chunk by chunk (activations.mode), feeds every SAE of the group
(sae.layers_per_job layers x the job's seeds); each SAE lands in its own folder, and the group's manifest, written last, is
the job's output. A retry resumes from the training state the previous attempt saved beside it.
"""


rule train_saes:
    input:
        checkpoint=checkpoint,
        tokens=split_tokens("sae"),
        checked=text_checked,
    output:
        layout.sae_group(RESULTS, "{model}", "{step}", "{group}"),
    log:
        layout.log_for(RESULTS, layout.sae_group(RESULTS, "{model}", "{step}", "{group}")),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 4000),
        runtime=model_grows("runtime", 60),
        # job shape, not a rerun trigger (params are): changing the interval retrains nothing
        save_every_minutes=config["sae"]["save_every_minutes"],
    params:
        settings=sae_job_settings,
    shell:
        # exec: the SAE job is the shell's process, so SLURM's SIGTERM reaches it and no wrapper exits before its save
        "exec python -m featurebirth --threads {threads} train-saes --model {wildcards.model} --step {wildcards.step}"
        " --checkpoint {input.checkpoint} --tokens {input.tokens} --settings {params.settings} --manifest {output}"
        " --save-every-minutes {resources.save_every_minutes} > {log} 2>&1"
