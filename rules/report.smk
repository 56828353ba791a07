# Figures and the HTML report (snakemake --report results/report.html).
# CMC curves, CMC tables, training curves and retrieval galleries show each variant's
# first run (the first seed of `seeds`, or `imported`); the table and the comparison
# plot cover every run (mean ± std).


rule plot_cmc:
    input:
        first_run_metrics("atustc"),
    output:
        report(
            "results/plots/cmc_atustc.png",
            caption="../report/cmc.rst",
            category="Evaluation",
            subcategory="CMC curves",
        ),
    params:
        **code_params("plot-cmc"),
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
    params:
        **code_params("plot-comparison"),
    conda:
        CONDA_ENV
    log:
        "logs/report/plot_comparison.log",
    shell:
        "atreid plot-comparison --table {input:q} --out {output:q} 2> {log:q}"


rule plot_training:
    input:
        lambda wc: f"models/{wc.variant}/{first_run(wc.variant)}/history.csv",
    output:
        report(
            "results/plots/training_{variant}.png",
            caption="../report/training.rst",
            category="Training",
            subcategory="{variant}",
        ),
    params:
        title=lambda wc: f"{wc.variant}, {first_run(wc.variant)}",
        **code_params("plot-training"),
    conda:
        CONDA_ENV
    log:
        "logs/report/plot_training_{variant}.log",
    shell:
        "atreid plot-training --history {input:q} --variant {params.title:q} --out {output:q} 2> {log:q}"


rule cmc_table:
    input:
        lambda wc: f"results/metrics/{wc.variant}/{first_run(wc.variant)}/atustc.json",
    output:
        "results/plots/cmc_{variant}.csv",
    params:
        **code_params("cmc-csv"),
    conda:
        CONDA_ENV
    log:
        "logs/report/cmc_table_{variant}.log",
    shell:
        "atreid cmc-csv --metrics {input:q} --out {output:q} 2> {log:q}"


rule plot_galleries:
    input:
        unpack(atustc_eval_inputs),
        model=lambda wc: model_of_run(wc.variant, first_run(wc.variant)),
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
        settings=lambda wc: eval_settings_file(rerank=False),
        data_dir=DATA_DIR,
        cache_dir=FEATURE_CACHE,
        seed=FIRST_SEED,
        **code_params("galleries", by_variant=True),
    conda:
        CONDA_ENV
    log:
        "logs/report/galleries_{variant}.log",
    shell:
        "atreid galleries --model {input.model:q} --data-dir {params.data_dir:q} --settings {params.settings:q}"
        " --cache-dir {params.cache_dir:q} --seed {params.seed:q} --out {output:q} 2> {log:q}"


# A ready retrieval page of the demo: a few AT-USTC queries (one per person, RGB and IR)
# ranked over the AT-USTC gallery by the first run of `full` (or the first variant).
SEARCH_VARIANT = "full" if "full" in VARIANTS else VARIANTS[0]


rule search_page:
    input:
        unpack(atustc_eval_inputs),
        model=lambda wc: model_of_run(SEARCH_VARIANT, first_run(SEARCH_VARIANT)),
    output:
        html=report("results/search/index.html", caption="../report/search.rst", category="Retrieval galleries",
                    subcategory="search page"),
        png="results/search/search.png",
        json="results/search/search.json",
    params:
        data_dir=DATA_DIR,
        out=lambda wc, output: os.path.dirname(output.html),
        **code_params("search"),
    conda:
        CONDA_ENV
    log:
        "logs/report/search_page.log",
    shell:
        "atreid search --model {input.model:q} --query-from atustc --queries 4 --benchmark atustc"
        " --data-dir {params.data_dir:q} --top-k 10 --out {params.out:q} 2> {log:q}"


# Paired comparisons (atreid/report/compare.py): every variant against `baseline` (or the
# first variant), per AT-USTC scenario, Any-Time and each benchmark's main protocol, with a
# paired person-cluster bootstrap interval over the same queries (and the seeds, when a
# variant has several runs: each side is the comma-joined list of its run folders).
rule compare_variants:
    input:
        metrics=all_metrics(),
        outcomes=[path[: -len(".json")] + ".outcomes.npz" for path in all_metrics()],
    output:
        "results/comparison.md",
    params:
        sides=plan.comparison_sides(config),
        **code_params("compare"),
    conda:
        CONDA_ENV
    log:
        "logs/report/comparison.log",
    shell:
        "atreid compare {params.sides:q} --out {output:q} 2> {log:q}"


# What each CLS (scenario) token looks at: attention rollout over one AT-USTC test person
# in RGB and IR, two outfits, by each variant's first run.
rule plot_attention:
    input:
        unpack(atustc_eval_inputs),
        model=lambda wc: model_of_run(wc.variant, first_run(wc.variant)),
    output:
        report(
            "results/attention/{variant}.png",
            caption="../report/attention.rst",
            category="Attention maps",
            subcategory="{variant}",
        ),
    params:
        data_dir=DATA_DIR,
        **code_params("explain"),
    threads: 1
    conda:
        CONDA_ENV
    log:
        "logs/report/attention_{variant}.log",
    shell:
        "atreid explain --model {input.model:q} --atustc {params.data_dir:q} --out {output:q}"
        " --threads {threads:q} 2> {log:q}"
