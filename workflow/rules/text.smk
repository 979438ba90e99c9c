"""Real text (corpus.source: text): fetched once into the hub cache, tokenized once, split by document and
packed; each model's lexicon and SAE budget are checked against it before any of that model's SAE jobs; the lexicon
words' contexts (and frequency-matched controls') are mined from its probe-mining part for the score jobs."""


localrules:
    fetch_text,
    check_text,
    mine_probes,


rule fetch_text:
    output:
        layout.corpus_file(RESULTS, "text_source"),
    log:
        layout.log_for(RESULTS, layout.corpus_file(RESULTS, "text_source")),
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=grows(120),
    params:
        settings=lambda wildcards: as_arg(text_fetch_settings(config)),
    shell:
        "HF_HUB_OFFLINE=0 python -m featurebirth fetch-text --settings {params.settings} --out {output} > {log} 2>&1"


rule tokenize_text:
    input:
        source=rules.fetch_text.output[0],
        tokenizer=text_tokenizer,
    output:
        **{part: layout.corpus_file(RESULTS, f"text_{part}") for part in ("sae", "eval", "probe")},
    log:
        layout.log_for(RESULTS, layout.corpus_file(RESULTS, "text_sae")),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(8000),
        runtime=grows(120),
    params:
        settings=lambda wildcards: as_arg(text_tokenize_settings(config)),
    shell:
        "python -m featurebirth tokenize-text --settings {params.settings} --source {input.source}"
        " --tokenizer {input.tokenizer} --sae {output.sae} --eval {output.eval} --probe {output.probe} > {log} 2>&1"


rule check_text:
    input:
        split=rules.tokenize_text.output.sae,
        evaluation=rules.tokenize_text.output.eval,
        tokenizer=first_checkpoint,
    output:
        layout.text_check(RESULTS, "{model}"),
    log:
        layout.log_for(RESULTS, layout.text_check(RESULTS, "{model}")),
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(2000),
        runtime=grows(10),
    params:
        settings=lambda wildcards: as_arg(text_check_settings(config, wildcards.model)),
    shell:
        "python -m featurebirth check-text --model {wildcards.model} --settings {params.settings}"
        " --split {input.split} --eval {input.evaluation} --tokenizer {input.tokenizer} --out {output} > {log} 2>&1"


rule mine_probes:
    input:
        probe=rules.tokenize_text.output.probe,
        tokenizer=text_tokenizer,
        # after the lexicon's check against the text's tokenizer, whose error names every word at fault
        checked=text_frequency_source(),
    output:
        mined=layout.corpus_file(RESULTS, "text_mined"),
        record=layout.corpus_file(RESULTS, "text_mined_record"),
    log:
        layout.log_for(RESULTS, layout.corpus_file(RESULTS, "text_mined")),
    conda:
        "../../envs/featurebirth.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=grows(30),
    params:
        settings=lambda wildcards: as_arg(mining_settings(config)),
    shell:
        "python -m featurebirth mine-probes --settings {params.settings} --probe {input.probe}"
        " --tokenizer {input.tokenizer} --out {output.mined} --record {output.record} > {log} 2>&1"
