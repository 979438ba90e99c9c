"""Activations per (model, step): one forward pass writes every requested layer.

The SAE-training cache is temporary (removed once its layers' SAEs are trained) and named
by the layers it holds (train-0-1-2.h5), so a layer added later gets its own cache; the
probe activations (every layer, target tokens only) are small and kept for scoring.
"""


rule cache_training_activations:
    input:
        model=model_dir,
        tokens=training_tokens,
    output:
        temp(f"{RESULTS}/activations/{{model}}/step{{step}}/train-{{layers}}.h5"),
    params:
        batch_size=config["activations"]["batch_size"],
        max_tokens=config["activations"]["max_tokens"],
        seq_len=config["corpus"]["seq_len"],
        gpu_dtype=config["activations"]["gpu_dtype"],
        device=config["device"],
    log:
        f"{LOGS}/activations/{{model}}/step{{step}}/train-{{layers}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 4000),
        runtime=model_grows("runtime", 60),
    shell:
        "python -m featurebirth --threads {threads} cache-train --model {wildcards.model} --step {wildcards.step}"
        " --model-dir {input.model} --tokens {input.tokens} --layers {wildcards.layers} --out {output}"
        " --batch-size {params.batch_size} --max-tokens {params.max_tokens} --seq-len {params.seq_len}"
        " --device {params.device} --gpu-dtype {params.gpu_dtype} > {log} 2>&1"


rule cache_probe_activations:
    input:
        model=model_dir,
        probes=rules.corpus.output.probes,
    output:
        f"{RESULTS}/activations/{{model}}/step{{step}}/probes.h5",
    params:
        batch_size=config["activations"]["batch_size"],
        gpu_dtype=config["activations"]["gpu_dtype"],
        device=config["device"],
    log:
        f"{LOGS}/activations/{{model}}/step{{step}}/probes.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=model_grows("mem_mb", 4000),
        runtime=model_grows("runtime", 30),
    shell:
        "python -m featurebirth --threads {threads} cache-probes --model {wildcards.model} --step {wildcards.step}"
        " --model-dir {input.model} --probes {input.probes} --out {output}"
        " --batch-size {params.batch_size} --device {params.device} --gpu-dtype {params.gpu_dtype} > {log} 2>&1"
