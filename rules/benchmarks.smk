# Cross-dataset benchmarks (Market-1501, CUHK03-NP, MSMT17, SYSU-MM01, RegDB, LLCM, PRCC,
# LTCC, DeepChange, VC-Clothes): generate-or-import -> verify/index. Evaluation jobs
# (rules/evaluate.smk) read data/{benchmark}/index.csv and data/{benchmark}/images.
# AT-USTC has its own rules (rules/data.smk); the constraint below keeps these rules to
# the registered cross-dataset names, so data/atustc/* is never ambiguous.
import re
import sys

from atreid.data.adapters import benchmark_names

CROSS_BENCHMARKS = benchmark_names()
CROSS_BENCHMARK_PATTERN = "|".join(re.escape(name) for name in CROSS_BENCHMARKS)

# Unknown names stop the workflow with the valid ones (not a "no rule to produce" later).
for key, names in (("eval.benchmarks", BENCHMARKS), ("data.benchmarks", config["data"]["benchmarks"])):
    unknown = sorted(set(names) - set(CROSS_BENCHMARKS) - {"atustc"})
    if unknown:
        sys.exit(f"error: {key}: unknown benchmark {unknown[0]!r}; valid: atustc, {', '.join(CROSS_BENCHMARKS)}")


# data.benchmarks.<name> with the schema's defaults (an absent entry: the miniature).
BENCHMARK_SOURCES = {
    name: {"source": "synthetic", "sha256": None, "expected_counts": "synthetic",
           **config["data"]["benchmarks"].get(name, {})}
    for name in CROSS_BENCHMARKS
}
# What each prepare job depends on: the source, plus the renderer settings for a miniature.
BENCHMARK_PARAMS = {
    name: {
        "source": as_json({"source": s["source"], "sha256": s["sha256"]}),
        "synthetic": as_json(
            {key: config["data"]["synthetic"][key] for key in ("seed", "image_height", "image_width", "jpeg_quality")}
            if s["source"] == "synthetic" else {}
        ),
    }
    for name, s in BENCHMARK_SOURCES.items()
}


rule prepare_benchmark:
    input:
        lambda wc: required_file(BENCHMARK_SOURCES[wc.benchmark]["source"], f"data.benchmarks.{wc.benchmark}.source",
                                 f"your copy of {wc.benchmark} (zip, tar, tar.gz or folder)"),
    output:
        directory(f"{DATA_DIR}/{{benchmark}}/images"),
    wildcard_constraints:
        benchmark=CROSS_BENCHMARK_PATTERN,
    params:
        source=lambda wc: BENCHMARK_PARAMS[wc.benchmark]["source"],
        synthetic=lambda wc: BENCHMARK_PARAMS[wc.benchmark]["synthetic"],
        record=f"{DATA_DIR}/{{benchmark}}/source.json",
    conda:
        CONDA_ENV
    log:
        "logs/data/prepare_{benchmark}.log",
    benchmark:
        "logs/data/prepare_{benchmark}.benchmark.tsv"
    shell:
        "atreid prepare-benchmark --benchmark {wildcards.benchmark} --source {params.source}"
        " --synthetic {params.synthetic} --out {output} --record {params.record} 2> {log}"


rule index_benchmark:
    input:
        f"{DATA_DIR}/{{benchmark}}/images",
    output:
        index=f"{DATA_DIR}/{{benchmark}}/index.csv",
        verification=f"{DATA_DIR}/{{benchmark}}/verification.json",
        verification_txt=f"{DATA_DIR}/{{benchmark}}/verification.txt",
    wildcard_constraints:
        benchmark=CROSS_BENCHMARK_PATTERN,
    params:
        expected=lambda wc: BENCHMARK_SOURCES[wc.benchmark]["expected_counts"],
    threads: 1
    conda:
        CONDA_ENV
    log:
        "logs/data/index_{benchmark}.log",
    benchmark:
        "logs/data/index_{benchmark}.benchmark.tsv"
    shell:
        "atreid index-benchmark --benchmark {wildcards.benchmark} --images {input}"
        " --expected {params.expected} --workers {threads} --index {output.index}"
        " --report {output.verification} --report-txt {output.verification_txt} 2> {log}"
