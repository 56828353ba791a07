# atreid workflow: AT-USTC (synthetic or your copy) -> verify/index -> frame sampling
# -> training of every variant -> per-benchmark evaluation -> results/table.csv.
# Wiring only: the logic lives in the atreid package, each rule calls one CLI step.

from snakemake.utils import min_version

min_version("8.20")


# Snakemake's own YAML reading keeps the last of a duplicated key and reports a syntax
# error without file or line: read every params file strictly first (file, line, key).
# (A --configfile that is not valid YAML at all stops Snakemake before this file is read;
# `atreid check-params params.yaml <file>` names the line.)
import sys as _sys
from atreid.config import read_yaml as _read_yaml
from atreid.errors import AtreidError as _AtreidError

for _params_file in ["params.yaml", *workflow.config_settings.configfiles]:
    try:
        _read_yaml(_params_file)
    except _AtreidError as _exc:
        _sys.exit(f"error: {_exc}")


# A killed snakemake leaves its locks in .snakemake/locks and the next run stops with a
# LockException. Locks present when this run started and still there when it ends are
# not its own: say what to run (on stderr, after Snakemake's own message).
import atexit as _atexit
from pathlib import Path as _Path

_LOCKS = sorted(_Path(".snakemake/locks").glob("*.lock"))
if _LOCKS and workflow.is_main_process and "--unlock" not in _sys.argv:

    def _stale_lock_hint(locks=tuple(_LOCKS)):
        if any(lock.exists() for lock in locks):
            print("hint: .snakemake/locks holds a lock of an earlier snakemake. If no other snakemake is"
                  " running in this folder (the last one was killed or the machine went down), run"
                  " `snakemake --unlock` then rerun.", file=_sys.stderr)

    _atexit.register(_stale_lock_hint)


configfile: "params.yaml"


include: "rules/common.smk"


wildcard_constraints:
    variant="|".join(VARIANTS),
    benchmark="|".join(BENCHMARKS),


include: "rules/data.smk"
include: "rules/benchmarks.smk"
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
        expand("results/plots/training_{variant}.png", variant=TRAINED_VARIANTS),
        expand("results/plots/cmc_{variant}.csv", variant=VARIANTS),
        expand(
            "results/galleries/{variant}/{scenario}.png",
            variant=VARIANTS,
            scenario=SCENARIO_NAMES,
        ),
