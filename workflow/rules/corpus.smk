"""Corpus with planted categories, its tokenizer, token ids per split and the probe set (once)."""


localrules:
    corpus,


rule corpus:
    output:
        **{
            name: (
                directory(layout.corpus_file(RESULTS, name))
                if name == "tokenizer"
                else layout.corpus_file(RESULTS, name)
            )
            for name in layout.CORPUS_FILES
        },
    log:
        layout.log_for(RESULTS, layout.corpus_dir(RESULTS)),
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    params:
        # a function: the probe templates hold '{word}', which would read as a wildcard
        settings=lambda wildcards: as_arg(corpus_settings(config)),
        out_dir=lambda wildcards, output: os.path.dirname(output.tokens),
    shell:
        "python -m featurebirth corpus --settings {params.settings} --out-dir {params.out_dir} > {log} 2>&1"
