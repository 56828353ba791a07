# Figures and the HTML report (snakemake --report results/report.html).


rule plot_cmc:
    input:
        expand("results/metrics/{variant}/atustc.json", variant=VARIANTS),
    output:
        report(
            "results/plots/cmc_atustc.png",
            caption="../report/cmc.rst",
            category="Evaluation",
            subcategory="CMC curves",
        ),
    conda:
        CONDA_ENV
    log:
        "logs/report/plot_cmc.log",
    shell:
        "atreid plot-cmc {input} --out {output} 2> {log}"


rule plot_comparison:
    input:
        "results/table.csv",
    output:
        report(
            "results/plots/comparison.png",
            caption="../report/comparison.rst",
            category="Evaluation",
            subcategory="Comparison",
        ),
    conda:
        CONDA_ENV
    log:
        "logs/report/plot_comparison.log",
    shell:
        "atreid plot-comparison --table {input} --out {output} 2> {log}"


rule plot_training:
    input:
        "models/{variant}/history.csv",
    output:
        report(
            "results/plots/training_{variant}.png",
            caption="../report/training.rst",
            category="Training",
            subcategory="{variant}",
        ),
    conda:
        CONDA_ENV
    log:
        "logs/report/plot_training_{variant}.log",
    shell:
        "atreid plot-training --history {input} --variant {wildcards.variant} --out {output} 2> {log}"


rule cmc_table:
    input:
        "results/metrics/{variant}/atustc.json",
    output:
        "results/plots/cmc_{variant}.csv",
    conda:
        CONDA_ENV
    log:
        "logs/report/cmc_table_{variant}.log",
    shell:
        "atreid cmc-csv --metrics {input} --out {output} 2> {log}"
