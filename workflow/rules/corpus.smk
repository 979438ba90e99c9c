"""Corpus with planted categories, its tokenizer, token ids and the probe set (once)."""


localrules:
    corpus,


rule corpus:
    output:
        tokens=f"{RESULTS}/corpus/tokens.h5",
        probes=f"{RESULTS}/corpus/probes.tsv",
        tokenizer=directory(f"{RESULTS}/corpus/tokenizer"),
        train_text=f"{RESULTS}/corpus/train.txt",
        sae_text=f"{RESULTS}/corpus/sae.txt",
        lexicon=f"{RESULTS}/corpus/lexicon.json",
    params:
        spec=lambda wc: as_arg({"corpus": config["corpus"], "probes": config["probes"]}),
        out_dir=lambda wc, output: os.path.dirname(output.tokens),
    log:
        f"{LOGS}/corpus.log",
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    shell:
        "python -m featurebirth corpus --spec {params.spec} --out {params.out_dir} > {log} 2>&1"
