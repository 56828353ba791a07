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
        "atreid plot-cmc {input:q} --out {output:q} 2> {log:q}"


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
        "atreid plot-comparison --table {input:q} --out {output:q} 2> {log:q}"


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
        "atreid plot-training --history {input:q} --variant {wildcards.variant:q} --out {output:q} 2> {log:q}"


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
        "atreid cmc-csv --metrics {input:q} --out {output:q} 2> {log:q}"


rule plot_galleries:
    input:
        unpack(atustc_eval_inputs),
        model="models/{variant}/model.pt",
    output:
        [
            report(
                f"results/galleries/{{variant}}/{scenario}.png",
                caption="../report/gallery.rst",
                category="Retrieval galleries",
                subcategory="{variant}",
                labels={"variant": "{variant}", "scenario": scenario},
            )
            for scenario in SCENARIO_NAMES
        ],
    params:
        settings=eval_settings(),
        data_dir=DATA_DIR,
        cache_dir=FEATURE_CACHE,
        seed=config["seed"],
    conda:
        CONDA_ENV
    log:
        "logs/report/galleries_{variant}.log",
    shell:
        "atreid galleries --model {input.model:q} --data-dir {params.data_dir:q} --settings {params.settings:q}"
        " --cache-dir {params.cache_dir:q} --seed {params.seed:q} --out {output:q} 2> {log:q}"
