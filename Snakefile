# atreid workflow: AT-USTC (synthetic or your copy) -> verify/index -> frame sampling
# -> training of every (variant, seed) -> evaluation of each run on every benchmark
# -> results/table.csv (mean ± std over each variant's runs).
# Wiring only: the logic lives in the atreid package, each rule calls one CLI step.

from snakemake.utils import min_version

min_version("8.20")


# Before params.yaml is read: strict YAML for every params file (file, line, key), and a
# hint to run `snakemake --unlock` when an earlier, killed snakemake left its locks.
from atreid.workflow import check_params_files, hint_stale_locks

check_params_files(["params.yaml", *workflow.config_settings.configfiles])
hint_stale_locks(workflow.is_main_process)


configfile: "params.yaml"


include: "rules/common.smk"


wildcard_constraints:
    variant="|".join(VARIANTS),
    benchmark="|".join(BENCHMARKS),
    run=one_of(RUNS),  # seed<s> of a trained variant, or `imported`
    seed=one_of([str(seed) for seed in SEEDS]),


include: "rules/data.smk"
include: "rules/benchmarks.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/reference.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


report: "report/workflow.rst"


rule all:
    input:
        "results/table.csv",
        "results/plots/cmc_atustc.png",
        "results/plots/comparison.png",
        "results/search/index.html",
        # paired bootstrap comparisons of the variants, attention maps per scenario token
        ["results/comparison.md"] if len(VARIANTS) > 1 else [],
        expand("results/attention/{variant}.png", variant=VARIANTS),
        expand("results/plots/training_{variant}.png", variant=TRAINED_VARIANTS),
        expand("results/plots/cmc_{variant}.csv", variant=VARIANTS),
        expand(
            "results/galleries/{variant}/{scenario}.png",
            variant=VARIANTS,
            scenario=SCENARIO_NAMES,
        ),


# After every real run (Snakemake calls no handler for -n), record in dvc.lock the DVC
# stages whose outputs this run built or found current, so that `dvc status` agrees with
# Snakemake (atreid/commands/dvc_sync.py; skipped inside `dvc repro`, which records itself).
onsuccess:
    from atreid.commands.dvc_sync import record_snakemake_run

    record_snakemake_run(workflow)
