"""How long the person-cluster bootstrap intervals take (issue 26's speed targets).

(a) The whole table: 6 runs (3 variants x 2 seeds, as the demo) x 12 benchmarks, 1000
    resamples: ``build_table(..., intervals=True)`` minus ``build_table(...)`` on metrics
    and outcomes files written here with the REAL test sets' sizes (queries, persons,
    protocols and trials of each benchmark; the demo's synthetic sets are far smaller),
    so the time is an upper bound for the demo. Target: <= 10 s on 2 cores.
(b) One AT-USTC-size cell: 10,000 queries of 135 persons, 1000 resamples: the vectorised
    bootstrap (:func:`atreid.eval.bootstrap.weighted_replicates`) vs the naive reference
    (:func:`atreid.eval.bootstrap.naive_replicates`, one loop per resample gathering the
    drawn persons' queries) on the same counts, in the same process. Target: < 1 s.

Run: ``.venv/bin/python benchmarks/bootstrap.py`` (prints both; no argument).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atreid.eval.bootstrap import (  # noqa: E402
    cluster_sums,
    naive_replicates,
    percentile_interval,
    resample_counts,
    weighted_replicates,
)
from atreid.eval.metrics import QueryOutcomes  # noqa: E402
from atreid.eval.outcomes import OutcomeRecorder, outcomes_path, summary_from_outcomes, write_outcomes  # noqa: E402
from atreid.report.table import build_table  # noqa: E402

RESAMPLES = 1000
# benchmark -> (queries per unit, persons, protocols, trials per protocol): the real test sets.
SIZES = {
    "atustc": (10_000 // 6, 135, 6, 1),
    "market1501": (3368, 750, 1, 1),
    "cuhk03": (1400, 700, 1, 1),
    "cuhk03_labeled": (1400, 700, 1, 1),
    "msmt17": (11659, 3060, 1, 1),
    "sysu_mm01": (3803, 96, 6, 10),
    "regdb": (2060, 206, 2, 10),
    "llcm": (3500, 351, 2, 10),
    "prcc": (3543, 71, 2, 1),
    "ltcc": (493, 75, 2, 1),
    "deepchange": (4976, 451, 2, 1),
    "vc_clothes": (1020, 256, 2, 1),
}
SCENARIOS = ("DT-ST", "DT-LT", "NT-ST", "NT-LT", "AD-ST", "AD-LT")


def _fake_result(rng: np.random.Generator, queries: int, persons: int, skill: float) -> SimpleNamespace:
    person = np.sort(rng.integers(0, persons, queries))
    first_rank = np.where(rng.random(queries) < skill, 1, rng.integers(2, 50, queries))
    ap = np.clip(rng.normal(skill, 0.2, queries), 0.01, 1.0)
    outcomes = QueryOutcomes(query=np.arange(queries), person=person, first_rank=first_rank, ap=ap,
                             inp=ap / 2, chance_r1=np.full(queries, 0.01), chance_ap=np.full(queries, 0.02))
    return SimpleNamespace(outcomes=outcomes, num_queries=queries)


def write_demo_sized_runs(root: Path) -> list[Path]:
    """Metrics + outcomes files of 3 variants x 2 seeds x 12 benchmarks."""
    files = []
    for v, variant in enumerate(("full", "baseline", "ncls1")):
        for seed in (0, 1):
            rng = np.random.default_rng([v, seed])
            for benchmark, (queries, persons, protocols, trials) in SIZES.items():
                recorder = OutcomeRecorder()
                names = SCENARIOS if benchmark == "atustc" else [f"p{i}" for i in range(protocols)]
                for name in names:
                    for trial in range(trials):
                        recorder.add(name, _fake_result(rng, queries, persons, 0.3 + 0.1 * v), trial=trial)
                cells = ({"Any-Time_": list(SCENARIOS), **{f"{s}_": [s] for s in SCENARIOS}}
                         if benchmark == "atustc" else {"": [names[0]]})
                outcomes = recorder.table(benchmark, cells)
                path = root / variant / f"seed{seed}" / f"{benchmark}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                metrics = {"benchmark": benchmark, "variant": variant, "model": f"{variant}/seed{seed}",
                           "settings": {"seed": seed}, "summary": summary_from_outcomes(outcomes),
                           "chance_summary": summary_from_outcomes(outcomes, chance=True)}
                path.write_text(json.dumps(metrics))
                write_outcomes(outcomes_path(path), outcomes)
                files.append(path)
    return files


def whole_table() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        files = write_demo_sized_runs(Path(tmp))
        start = time.perf_counter()
        build_table(files)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        build_table(files, intervals=True, resamples=RESAMPLES)
        with_intervals = time.perf_counter() - start
    return plain, with_intervals


def one_cell() -> tuple[float, float, tuple[float, float], tuple[float, float]]:
    rng = np.random.default_rng(0)
    persons, queries = 135, 10_000
    codes = rng.integers(0, persons, queries)
    values = (rng.random(queries) < 0.5).astype(np.float64)
    counts = resample_counts(persons, RESAMPLES, np.random.default_rng(1))
    start = time.perf_counter()
    sums, sizes = cluster_sums(codes, values, persons)
    fast = weighted_replicates(resample_counts(persons, RESAMPLES, np.random.default_rng(1)), sums[None],
                               sizes[None], [1.0])
    fast_interval = percentile_interval(fast)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = naive_replicates([codes], [values], [1.0], persons, counts)
    slow_interval = percentile_interval(slow)
    slow_s = time.perf_counter() - start
    assert np.allclose(fast, slow, rtol=0, atol=1e-12)
    return fast_s, slow_s, fast_interval, slow_interval


def main() -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"numpy {np.__version__}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    plain, with_intervals = whole_table()
    print(f"(a) whole table, 6 runs x {len(SIZES)} benchmarks (real test-set sizes), {RESAMPLES} resamples: "
          f"build_table {plain:.2f} s, with intervals {with_intervals:.2f} s: "
          f"added {with_intervals - plain:.2f} s (target <= 10 s)")
    fast_s, slow_s, fast_interval, slow_interval = one_cell()
    print(f"(b) one cell, 10,000 queries of 135 persons, {RESAMPLES} resamples: vectorised {fast_s * 1000:.1f} ms "
          f"(target < 1 s), naive reference {slow_s:.2f} s ({slow_s / fast_s:.0f}x); the same replicates, "
          f"interval [{fast_interval[0]:.4f}, {fast_interval[1]:.4f}] = [{slow_interval[0]:.4f}, {slow_interval[1]:.4f}]")


if __name__ == "__main__":
    main()
