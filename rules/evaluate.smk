# Evaluation: one job per run (variant, seed) that scores the run's model on every
# benchmark of eval.benchmarks in one process (the model is loaded once) and writes one
# metrics file per benchmark; then the result table (mean ± std over each variant's runs).


rule evaluate_run:
    input:
        unpack(benchmark_inputs),
        model="models/{variant}/{run}/model.pt",
    output:
        expand("results/metrics/{{variant}}/{{run}}/{benchmark}.json", benchmark=BENCHMARKS),
        # the per-query outcomes each metrics file's numbers average (atreid/eval/outcomes.py)
        expand("results/metrics/{{variant}}/{{run}}/{benchmark}.outcomes.npz", benchmark=BENCHMARKS),
    params:
        settings=lambda wc: eval_settings_file(),
        data_dir=DATA_DIR,
        cache_dir=FEATURE_CACHE,
        benchmarks=" ".join(f"--benchmark {shlex.quote(b)}" for b in BENCHMARKS),
        out_dir="results/metrics/{variant}/{run}",
        **code_params("evaluate", by_variant=True),
    threads: 1
    conda:
        CONDA_ENV
    log:
        "logs/evaluate/{variant}/{run}.log",
    benchmark:
        "logs/evaluate/{variant}/{run}.benchmark.tsv"
    shell:
        "atreid evaluate --model {input.model:q} {params.benchmarks}"
        " --data-dir {params.data_dir:q} --settings {params.settings:q} --cache-dir {params.cache_dir:q}"
        " --out-dir {params.out_dir:q} --threads {threads:q} 2> {log:q}"


rule make_table:
    input:
        metrics=all_metrics(),
        # the per-query outcomes beside each metrics file: the cells' bootstrap intervals
        outcomes=[path[: -len(".json")] + ".outcomes.npz" for path in all_metrics()],
    output:
        csv=report("results/table.csv", caption="../report/table.rst", category="Results"),
        markdown="results/table.md",
        summary="results/summary.json",
    params:
        paper="--paper" if config["eval"]["paper_results"] else "",
        **code_params("table"),
    conda:
        CONDA_ENV
    log:
        "logs/table.log",
    shell:
        "atreid table {input.metrics:q} --intervals --out {output.csv:q} --markdown {output.markdown:q}"
        " --summary {output.summary:q} {params.paper:q} 2> {log:q}"
