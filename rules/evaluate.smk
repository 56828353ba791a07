# Evaluation: one job per (variant, benchmark), then the result table.


rule evaluate_benchmark:
    input:
        unpack(benchmark_inputs),
        model="models/{variant}/model.pt",
    output:
        "results/metrics/{variant}/{benchmark}.json",
    params:
        settings=eval_settings(),
        data_dir=DATA_DIR,
        cache_dir=FEATURE_CACHE,
    threads: 1
    conda:
        CONDA_ENV
    log:
        "logs/evaluate/{variant}/{benchmark}.log",
    benchmark:
        "logs/evaluate/{variant}/{benchmark}.benchmark.tsv"
    shell:
        "atreid evaluate --model {input.model:q} --benchmark {wildcards.benchmark:q}"
        " --data-dir {params.data_dir:q} --settings {params.settings:q} --cache-dir {params.cache_dir:q}"
        " --out {output:q} --threads {threads:q} 2> {log:q}"


rule make_table:
    input:
        all_metrics(),
    output:
        csv=report("results/table.csv", caption="../report/table.rst", category="Results"),
        markdown="results/table.md",
        summary="results/summary.json",
    params:
        paper="--paper" if config["eval"]["paper_results"] else "",
    conda:
        CONDA_ENV
    log:
        "logs/table.log",
    shell:
        "atreid table {input:q} --out {output.csv:q} --markdown {output.markdown:q}"
        " --summary {output.summary:q} {params.paper:q} 2> {log:q}"
