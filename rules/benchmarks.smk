# Cross-dataset benchmarks (Market-1501, CUHK03-NP, MSMT17, SYSU-MM01, RegDB, LLCM, PRCC,
# LTCC, DeepChange, VC-Clothes): generate-or-import -> verify/index. Evaluation jobs
# (rules/evaluate.smk) read data/{benchmark}/index.csv and data/{benchmark}/images.
# AT-USTC declares its own rules (rules/data.smk, ``own_rules`` of its module); the
# constraint below keeps these rules to the other registered benchmarks, so
# data/atustc/* is never ambiguous. Names were checked with params.yaml
# (atreid.config, the registry's one check). As there,
# prepare_benchmark stages the copy and writes data/{benchmark}/prepared.json, and
# install_benchmark swaps it in: a refused import keeps the previous copy and its index.
import re
import sys

from atreid.data.benchmarks import benchmark_names, get_benchmark

# The benchmarks these rules prepare and index (every one without rules of its own).
SHARED_RULE_BENCHMARKS = [name for name in benchmark_names() if not get_benchmark(name).own_rules]
SHARED_RULE_PATTERN = "|".join(re.escape(name) for name in SHARED_RULE_BENCHMARKS)

# Your own dataset (custom) has no synthetic miniature: evaluating it needs its source.
if "custom" in BENCHMARKS and "custom" not in config["data"]["benchmarks"]:
    sys.exit("error: eval.benchmarks lists custom, but data.benchmarks.custom is not set; set its source to "
             "your folder or archive holding atreid.csv (docs/datasets.md: Bring your own dataset)")
# index_benchmark indexes the releases; index_custom also passes the chosen protocol family.
RELEASE_BENCHMARK_PATTERN = one_of([name for name in SHARED_RULE_BENCHMARKS if name != "custom"])


# data.benchmarks.<name> with the schema's defaults (an absent entry: the miniature).
BENCHMARK_SOURCES = plan.benchmark_sources(config, SHARED_RULE_BENCHMARKS)


# The user's copy of a benchmark (an input of prepare_benchmark and install_benchmark).
benchmark_source_input = lambda wc: required_file(
    BENCHMARK_SOURCES[wc.benchmark]["source"], f"data.benchmarks.{wc.benchmark}.source",
    f"your copy of {wc.benchmark} (zip, tar, tar.gz or folder)", f"{DATA_DIR}/{wc.benchmark}")


rule prepare_benchmark:
    input:
        benchmark_source_input,
    output:
        f"{DATA_DIR}/{{benchmark}}/prepared.json",
    wildcard_constraints:
        benchmark=SHARED_RULE_PATTERN,
    params:
        # What the job depends on: the source, plus the renderer settings for a miniature.
        source=lambda wc: as_json(plan.benchmark_prepare_settings(config, BENCHMARK_SOURCES[wc.benchmark])[0]),
        synthetic=lambda wc: as_json(plan.benchmark_prepare_settings(config, BENCHMARK_SOURCES[wc.benchmark])[1]),
        record=f"{DATA_DIR}/{{benchmark}}/source.json",
        images=f"{DATA_DIR}/{{benchmark}}/images",
        **code_params("prepare-benchmark"),
    conda:
        CONDA_ENV
    log:
        "logs/data/prepare_{benchmark}.log",
    benchmark:
        "logs/data/prepare_{benchmark}.benchmark.tsv"
    shell:
        "atreid prepare-benchmark --benchmark {wildcards.benchmark:q} --source {params.source:q}"
        " --synthetic {params.synthetic:q} --out {params.images:q} --manifest {output:q}"
        " --record {params.record:q}"
        ' --max-expansion "$ATREID_MAX_EXPANSION" --max-extracted-gib "$ATREID_MAX_EXTRACTED_GIB" 2> {log:q}'


rule install_benchmark:
    input:
        manifest=f"{DATA_DIR}/{{benchmark}}/prepared.json",
        source=benchmark_source_input,  # as in install_atustc
    output:
        directory(f"{DATA_DIR}/{{benchmark}}/images"),
    params:
        **code_params("install-images"),
    wildcard_constraints:
        benchmark=SHARED_RULE_PATTERN,
    localrule: True
    conda:
        CONDA_ENV
    log:
        "logs/data/install_{benchmark}.log",
    shell:
        "atreid install-images --manifest {input.manifest:q} --out {output:q} --rule prepare_benchmark 2> {log:q}"


rule index_benchmark:
    input:
        f"{DATA_DIR}/{{benchmark}}/images",
    output:
        index=f"{DATA_DIR}/{{benchmark}}/index.csv",
        verification=f"{DATA_DIR}/{{benchmark}}/verification.json",
        verification_txt=f"{DATA_DIR}/{{benchmark}}/verification.txt",
    wildcard_constraints:
        benchmark=RELEASE_BENCHMARK_PATTERN,
    params:
        expected=lambda wc: BENCHMARK_SOURCES[wc.benchmark]["expected_counts"],
        count_differences=lambda wc: BENCHMARK_SOURCES[wc.benchmark]["count_differences"],
        **code_params("index-benchmark"),
    threads: 1
    conda:
        CONDA_ENV
    log:
        "logs/data/index_{benchmark}.log",
    benchmark:
        "logs/data/index_{benchmark}.benchmark.tsv"
    shell:
        "atreid index-benchmark --benchmark {wildcards.benchmark:q} --images {input:q}"
        " --expected {params.expected:q} --count-differences {params.count_differences:q}"
        " --workers {threads} --index {output.index:q}"
        " --report {output.verification:q} --report-txt {output.verification_txt:q} 2> {log:q}"


rule index_custom:
    input:
        f"{DATA_DIR}/custom/images",
    output:
        index=f"{DATA_DIR}/custom/index.csv",
        verification=f"{DATA_DIR}/custom/verification.json",
        verification_txt=f"{DATA_DIR}/custom/verification.txt",
    params:
        expected=BENCHMARK_SOURCES["custom"]["expected_counts"],
        count_differences=BENCHMARK_SOURCES["custom"]["count_differences"],
        protocol=BENCHMARK_SOURCES["custom"]["protocol"],
        **code_params("index-benchmark"),
    threads: 1
    conda:
        CONDA_ENV
    log:
        "logs/data/index_custom.log",
    benchmark:
        "logs/data/index_custom.benchmark.tsv"
    shell:
        "atreid index-benchmark --benchmark custom --images {input:q} --expected {params.expected:q}"
        " --count-differences {params.count_differences:q} --protocol {params.protocol:q} --workers {threads}"
        " --index {output.index:q}"
        " --report {output.verification:q} --report-txt {output.verification_txt:q} 2> {log:q}"
