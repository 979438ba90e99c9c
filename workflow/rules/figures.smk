"""Seaborn figures of the cube and its analysis, each registered with the Snakemake report."""


localrules:
    heatmaps,
    quality_heatmaps,
    figure,


rule heatmaps:
    input:
        cube=rules.cube.output,
        analysis=rules.tables.output.analysis,
    output:
        report(
            layout.heatmap_path(RESULTS, "{model}"),
            caption="../report/heatmaps.rst",
            category="Figures",
            subcategory="Heatmaps",
            labels={"model": "{model}"},
        ),
    log:
        layout.log_for(RESULTS, layout.heatmap_path(RESULTS, "{model}")),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(15),
    params:
        settings=as_arg(figure_settings(config, "heatmaps")),
    shell:
        "python -m featurebirth figure heatmaps --model {wildcards.model} --cube {input.cube}"
        " --analysis {input.analysis} --settings {params.settings} --out {output} > {log} 2>&1"


rule quality_heatmaps:
    input:
        cube=rules.cube.output,
        analysis=rules.tables.output.analysis,
    output:
        report(
            layout.quality_heatmap_path(RESULTS, "{model}"),
            caption="../report/quality.rst",
            category="Figures",
            subcategory="SAE quality",
            labels={"model": "{model}"},
        ),
    log:
        layout.log_for(RESULTS, layout.quality_heatmap_path(RESULTS, "{model}")),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(15),
    params:
        settings=as_arg(figure_settings(config, "quality")),
    shell:
        "python -m featurebirth figure quality --model {wildcards.model} --cube {input.cube}"
        " --analysis {input.analysis} --settings {params.settings} --out {output} > {log} 2>&1"


rule figure:
    input:
        cube=rules.cube.output,
        analysis=rules.tables.output.analysis,
    output:
        report(
            layout.figure_path(RESULTS, "{figure}"),
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        layout.log_for(RESULTS, layout.figure_path(RESULTS, "{figure}")),
    wildcard_constraints:
        figure="|".join(layout.FIGURES),
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(15),
    params:
        settings=lambda wildcards: FIGURE_SETTINGS[wildcards.figure],
    shell:
        "python -m featurebirth figure {wildcards.figure} --cube {input.cube} --analysis {input.analysis}"
        " --settings {params.settings} --out {output} > {log} 2>&1"
