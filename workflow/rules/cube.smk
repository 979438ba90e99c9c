"""Every cell into one cube, then the answers as tables: aggregation runs locally, never on the cluster."""


localrules:
    cube,
    tables,


rule cube:
    input:
        all_scores(),
    output:
        cube_path(RESULTS),
    params:
        # a function: the config holds '{word}' templates that would read as wildcards
        config=lambda wildcards: as_arg(config),
        # JSON keys are sorted: the config's order of models and categories travels separately
        order=as_arg({"models": list(config["models"]), "categories": list(config["corpus"]["categories"])}),
    log:
        f"{LOGS}/cube.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(4000),
        runtime=grows(30),
    shell:
        "python -m featurebirth cube --config {params.config} --order {params.order} --out {output} > {log} 2>&1"


rule tables:
    input:
        rules.cube.output,
    output:
        **{name: report(f"{RESULTS}/tables/{name}.tsv", caption="../report/tables.rst", category="Tables")
           for name in TABLES},
        summary=f"{RESULTS}/tables/summary.json",
    params:
        settings=as_arg(config["analysis"]),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    log:
        f"{LOGS}/tables.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(4000),
        runtime=grows(30),
    shell:
        "python -m featurebirth tables --cube {input} --settings {params.settings} --out-dir {params.out_dir} > {log} 2>&1"
