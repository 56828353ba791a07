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

from atreid.eval.bootstrap import RESAMPLES, cluster_sums, dense_codes, resample_counts, unit_replicates
from atreid.eval.outcomes import METRICS, Outcomes, read_outcomes, outcomes_path, summary_key

SEED = 0


@dataclass(frozen=True)
class RunOutcomes:
    """One run's outcomes on one benchmark and where its metrics file says they come from."""

    variant: str
    run: str
    outcomes: Outcomes
    data_source: str


def load_run_outcomes(metrics_path: str | Path, metrics: dict[str, Any], run: str) -> RunOutcomes:
    """The outcomes file beside ``metrics_path`` (a one-line error when missing)."""
    from atreid.provenance import describe_source

    data = (metrics.get("provenance") or {}).get("data")
    return RunOutcomes(metrics["variant"], run, read_outcomes(outcomes_path(metrics_path)),
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
    unit_of = outcomes.arrays["unit"]
    num_units = len(outcomes.meta["units"])
    ones = np.ones((1, len(persons)))
    out: dict[str, tuple[float | None, np.ndarray]] = {}
    for metric in METRICS:
        values = outcomes.values(metric)
        sums = np.zeros((num_units, len(persons)))
        sizes = np.zeros((num_units, len(persons)))
        for unit in range(num_units):
            mine = unit_of == unit
            sums[unit], sizes[unit] = cluster_sums(codes[mine], values[mine], len(persons))
        replicates = unit_replicates(counts, sums, sizes)  # (resamples, units)
        points = unit_replicates(ones, sums, sizes)[0]  # every person once: the plain means
        for ranking in outcomes.rankings:
            for cell in outcomes.meta["cells"]:
                weights = np.zeros(num_units)
                for unit, weight in outcomes.cell_units(cell, ranking):
                    weights[unit] = weight
                used = weights > 0
                point = float(points[used] @ weights[used]) * 100.0
                out[summary_key(cell, metric, ranking)] = (None if np.isnan(point) else point,
                                                          100.0 * (replicates[:, used] @ weights[used]))
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
