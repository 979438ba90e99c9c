"""Corpus with planted categories: its tokenizer and training splits, the held-out evaluation split and the
probe set, each a job of its own, so that changing the evaluation split or the probes retrains nothing."""


localrules:
    corpus,
    eval_split,
    probes,


CORPUS_OUTPUTS = ("tokens", "tokenizer", "train_text", "sae_text", "lexicon")


rule corpus:
    output:
        **{name: layout.corpus_file(RESULTS, name) for name in CORPUS_OUTPUTS if name != "tokenizer"},
        tokenizer=directory(layout.corpus_file(RESULTS, "tokenizer")),
    log:
        layout.log_for(RESULTS, layout.corpus_dir(RESULTS)),
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    params:
        # functions: the probe templates hold '{word}', which would read as a wildcard
        settings=lambda wildcards: as_arg(corpus_settings(config)),
        out_dir=lambda wildcards, output: os.path.dirname(output.tokens),
    shell:
        "python -m featurebirth corpus --settings {params.settings} --out-dir {params.out_dir} > {log} 2>&1"


rule eval_split:
    input:
        tokenizer=rules.corpus.output.tokenizer,
    output:
        tokens=layout.corpus_file(RESULTS, "eval_tokens"),
        text=layout.corpus_file(RESULTS, "eval_text"),
    log:
        layout.log_for(RESULTS, layout.corpus_file(RESULTS, "eval_tokens")),
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    params:
        settings=lambda wildcards: as_arg(eval_split_settings(config)),
        out_dir=lambda wildcards, output: os.path.dirname(output.tokens),
    shell:
        "python -m featurebirth eval-split --settings {params.settings} --tokenizer {input.tokenizer}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule probes:
    output:
        layout.corpus_file(RESULTS, "probes"),
    log:
        layout.log_for(RESULTS, layout.corpus_file(RESULTS, "probes")),
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    params:
        settings=lambda wildcards: as_arg(probe_settings(config)),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m featurebirth probes --settings {params.settings} --out-dir {params.out_dir} > {log} 2>&1"
