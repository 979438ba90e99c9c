"""Every scored checkpoint into one cube, then the analysis and its tables: aggregation runs locally."""


localrules:
    cube,
    tables,


rule cube:
    input:
        scores=all_scores(),
        text_check=text_frequency_source(),
    output:
        layout.cube_path(RESULTS),
    log:
        layout.log_for(RESULTS, layout.cube_path(RESULTS)),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(4000),
        runtime=grows(30),
    params:
        # a function: the provenance config holds '{word}' templates that would read as wildcards
        settings=lambda wildcards: as_arg(cube_settings(config)),
        text_check=lambda wildcards, input: f"--text-check {input.text_check}" if input.text_check else "",
    shell:
        "python -m featurebirth cube --settings {params.settings} --out {output} {params.text_check} {input.scores}"
        " > {log} 2>&1"


rule tables:
    input:
        rules.cube.output,
    output:
        **{
            name: report(layout.table_path(RESULTS, name), caption="../report/tables.rst", category="Tables")
            for name in layout.TABLES
        },
        summary=layout.summary_path(RESULTS),
        analysis=layout.analysis_path(RESULTS),
    log:
        layout.log_for(RESULTS, layout.tables_dir(RESULTS)),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(4000),
        runtime=grows(30),
    params:
        settings=as_arg(config["analysis"]),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "python -m featurebirth tables --cube {input} --settings {params.settings} --out-dir {params.out_dir}"
        " --analysis {output.analysis} > {log} 2>&1"
