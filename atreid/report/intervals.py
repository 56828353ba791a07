"""Bootstrap replicates of table cells from the per-query outcomes files.

The glue between :mod:`atreid.eval.outcomes` (what each query scored) and the pure
functions of :mod:`atreid.eval.bootstrap`: for one benchmark, every run of every variant
is reweighted by the SAME person draws (one counts matrix per benchmark, seeded from
``seed`` and the benchmark's name), so the replicates of two variants are paired.

A trial-based protocol (SYSU-MM01, LLCM and the like: 10 seeded gallery draws; RegDB: 10
fixed splits) keeps its design: the trials stay as they are and every trial's mean is
reweighted by the same person draw, then the trials are averaged as for the point value.
So the interval is about which persons were tested, given the fixed gallery draws or
splits; the spread over the draws themselves is not in it (it is part of the estimator).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from atreid.eval.bootstrap import RESAMPLES, dense_codes, resample_counts
from atreid.eval.outcomes import METRICS, Outcomes, read_outcomes, outcomes_path, summary_key
from atreid.provenance import describe_source

SEED = 0
# What the intervals read of an outcomes file (the rest is for recomputing other numbers).
BOOTSTRAP_COLUMNS = ("unit", "person", "first_rank", "ap")


@dataclass(frozen=True)
class RunOutcomes:
    """One run's outcomes on one benchmark and where its metrics file says they come from."""
    variant: str
    run: str
    outcomes: Outcomes
    data_source: str


def load_run_outcomes(metrics_path: str | Path, metrics: dict[str, Any], run: str) -> RunOutcomes:
    """The outcomes file beside ``metrics_path`` (a one-line error when missing)."""
    data = (metrics.get("provenance") or {}).get("data")
    return RunOutcomes(metrics["variant"], run, read_outcomes(outcomes_path(metrics_path), BOOTSTRAP_COLUMNS),
                       describe_source(data) if data else "unrecorded")


def benchmark_counts(runs: Iterable[RunOutcomes], benchmark: str, *, resamples: int = RESAMPLES,
                     seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The persons of every run (sorted) and the shared ``(resamples, persons)`` counts."""
    persons = np.unique(np.concatenate([r.outcomes.arrays["person"] for r in runs]))
    rng = np.random.default_rng([seed, zlib.crc32(benchmark.encode())])
    return persons, resample_counts(len(persons), resamples, rng)


def cell_replicates(outcomes: Outcomes, persons: np.ndarray, counts: np.ndarray
                    ) -> dict[str, tuple[float | None, np.ndarray]]:
    """Summary key -> (point value, ``(resamples,)`` replicates), in percent, for every cell,
    metric and ranking of ``outcomes``."""
    codes = dense_codes(outcomes.arrays["person"], persons)
    num_persons = len(persons)
    # Only the units some cell uses (SYSU-MM01 records 6 protocols x 10 trials, its cell uses 10).
    cells = {(cell, ranking): outcomes.cell_units(cell, ranking)
             for ranking in outcomes.rankings for cell in outcomes.cells}
    used = sorted({unit for units in cells.values() for unit, _ in units})
    column = np.full(len(outcomes.meta["units"]), -1)
    column[used] = np.arange(len(used))
    slot = column[outcomes.arrays["unit"]]
    keep = slot >= 0
    # (unit, person) sums in one bincount over a combined index, no per-unit masks.
    flat = slot[keep].astype(np.int64) * num_persons + codes[keep]
    sizes = np.bincount(flat, minlength=len(used) * num_persons).reshape(len(used), num_persons).astype(np.float64)
    sums = [np.bincount(flat, weights=outcomes.values(metric)[keep], minlength=len(used) * num_persons)
            .reshape(len(used), num_persons) for metric in METRICS]
    # One product for the sizes and every metric's sums: (resamples, units) blocks.
    weighted = counts @ np.concatenate([sizes, *sums]).T
    plain = np.concatenate([sizes, *sums]).sum(axis=1)  # every person once: the plain means
    out: dict[str, tuple[float | None, np.ndarray]] = {}
    width = len(used)
    for m, metric in enumerate(METRICS, start=1):
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates = weighted[:, m * width:(m + 1) * width] / weighted[:, :width]
            points = plain[m * width:(m + 1) * width] / plain[:width]
        for (cell, ranking), units in cells.items():
            index = np.array([column[unit] for unit, _ in units])
            weights = np.array([weight for _, weight in units])
            point = float(points[index] @ weights) * 100.0
            out[summary_key(cell, metric, ranking)] = (None if np.isnan(point) else point,
                                                      100.0 * (replicates[:, index] @ weights))
    return out


def variant_replicates(entries: Iterable[tuple[Path, dict[str, Any], str]], *, resamples: int = RESAMPLES,
                       seed: int = SEED) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    """variant -> (benchmark, summary key) -> replicates of the variant's table value.

    ``entries``: (metrics file, its content, run key) of every run. A variant's value is
    the mean over its runs (runs without a value in a cell left out, as in the table), so
    its replicate is the mean of the runs' replicates under the same person draw: the
    interval is about the test persons, for the variant's seeds as they are (their spread
    is the table's ``:std``).
    """
    by_benchmark: dict[str, list[RunOutcomes]] = {}
    for path, metrics, run in entries:
        by_benchmark.setdefault(metrics["benchmark"], []).append(load_run_outcomes(path, metrics, run))
    out: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for benchmark, runs in by_benchmark.items():
        persons, counts = benchmark_counts(runs, benchmark, resamples=resamples, seed=seed)
        gathered: dict[str, dict[str, list[np.ndarray]]] = {}
        for run in runs:
            for key, (point, replicates) in cell_replicates(run.outcomes, persons, counts).items():
                if point is not None:
                    gathered.setdefault(run.variant, {}).setdefault(key, []).append(replicates)
        for variant, keys in gathered.items():
            for key, replicates in keys.items():
                out.setdefault(variant, {})[(benchmark, key)] = np.mean(replicates, axis=0)
    return out
