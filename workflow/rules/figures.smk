"""Seaborn figures of the cube, each registered with the Snakemake report."""


localrules:
    heatmaps,
    figure,


rule heatmaps:
    input:
        rules.cube.output,
    output:
        report(
            f"{RESULTS}/figures/heatmaps/{{model}}.png",
            caption="../report/heatmaps.rst",
            category="Figures",
            subcategory="Heatmaps",
            labels={"model": "{model}"},
        ),
    log:
        f"{LOGS}/figures/heatmaps/{{model}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(15),
    shell:
        "python -m featurebirth figure heatmaps --model {wildcards.model} --cube {input} --out {output} > {log} 2>&1"


rule figure:
    input:
        rules.cube.output,
    output:
        report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    wildcard_constraints:
        figure="emergence|scale|reactivation",
    log:
        f"{LOGS}/figures/{{figure}}.log",
    conda:
        "../../envs/featurebirth.yaml"
    threads: 1
    resources:
        mem_mb=grows(2000),
        runtime=grows(15),
    shell:
        "python -m featurebirth figure {wildcards.figure} --cube {input} --out {output} > {log} 2>&1"
