"""Person-cluster bootstrap of retrieval metrics: pure numpy functions.

R1 and mAP are means over queries, but the queries of one person are not independent
(same body, same clothes, often the same camera), so resampling queries understates how
much a number would move on another draw of test persons. A cluster bootstrap resamples
the PERSONS with replacement and keeps every query of each drawn person: a resample is a
vector of counts ``c_p`` (how often person ``p`` was drawn, summing to the number of
persons), and a mean over queries becomes the count-weighted mean
``sum_p c_p * S_p / sum_p c_p * N_p`` (``S_p``: the person's sum of the per-query metric,
``N_p``: its number of valid queries). With one query per person it is the ordinary
bootstrap of a proportion.

A table cell may average several units (protocols, trials): a cell replicate is the same
weighted average of the units' replicate means, every unit reweighted by the SAME person
draw (the scenarios of AT-USTC share their persons; the trials of a protocol share theirs
or draw from the same pool). The interval is the percentile interval of the replicates.
Replicates where a unit has no drawn query (its persons all missed) are undefined and left
out of the percentiles.

Everything is deterministic: the counts come from ``numpy.random.default_rng(seed)``.
:func:`naive_replicates` is the slow, obvious reference (one loop per resample over the
drawn persons) that the tests and ``benchmarks/bootstrap.py`` compare against.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000


def dense_codes(persons: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Position of each of ``persons`` in the sorted array ``universe`` (which holds them all)."""
    codes = np.searchsorted(universe, persons)
    if len(persons) and (codes.max() >= len(universe) or not np.array_equal(universe[codes], persons)):
        raise ValueError("a person is missing from the bootstrap's person list")
    return codes


def resample_counts(num_clusters: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(resamples, num_clusters)`` float64 counts: each row draws ``num_clusters`` clusters with replacement."""
    if num_clusters < 1 or resamples < 1:
        raise ValueError(f"need at least one cluster and one resample, got {num_clusters} and {resamples}")
    draws = rng.integers(0, num_clusters, size=(resamples, num_clusters))
    # One bincount over (row, cluster) pairs instead of a Python loop over rows.
    flat = draws + (np.arange(resamples) * num_clusters)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * num_clusters).reshape(resamples, num_clusters) \
        .astype(np.float64)


def cluster_sums(codes: np.ndarray, values: np.ndarray, num_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sum of ``values`` and number of entries (both float64, length ``num_clusters``)."""
    sums = np.bincount(codes, weights=np.asarray(values, dtype=np.float64), minlength=num_clusters)
    sizes = np.bincount(codes, minlength=num_clusters).astype(np.float64)
    return sums, sizes


def unit_replicates(counts: np.ndarray, sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``(resamples, units)`` count-weighted means; ``sums``/``sizes`` are ``(units, clusters)``.

    NaN where a resample drew no query of a unit.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ sums.T) / (counts @ sizes.T)


def weighted_replicates(counts: np.ndarray, sums: np.ndarray, sizes: np.ndarray, weights: Sequence[float]
                        ) -> np.ndarray:
    """``(resamples,)`` replicates of ``sum_u weights[u] * mean_u`` (the cell's units)."""
    return unit_replicates(counts, sums, sizes) @ np.asarray(weights, dtype=np.float64)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The ``level`` percentile interval of the defined (non-NaN) replicates; NaNs if none is."""
    defined = replicates[~np.isnan(replicates)]
    if len(defined) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(defined, [tail, 1.0 - tail])
    return float(lo), float(hi)


def seed_replicates(per_run: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resample runs too: ``per_run`` is ``(runs, resamples)``; each resample averages a draw
    of the runs with replacement (one run: that run's replicates unchanged)."""
    runs, resamples = per_run.shape
    if runs == 1:
        return per_run[0]
    pick = rng.integers(0, runs, size=(resamples, runs))
    return per_run[pick, np.arange(resamples)[:, None]].mean(axis=1)


def naive_replicates(codes: Sequence[np.ndarray], values: Sequence[np.ndarray], weights: Sequence[float],
                     num_clusters: int, counts: np.ndarray) -> np.ndarray:
    """Reference implementation: for each resample, gather every query of every drawn person
    (a person drawn twice: its queries twice) per unit and average; then weigh the units."""
    out = np.empty(len(counts))
    by_cluster = [[np.flatnonzero(unit_codes == c) for c in range(num_clusters)] for unit_codes in codes]
    for b, row in enumerate(counts):
        drawn = np.repeat(np.arange(num_clusters), row.astype(np.int64))
        total = 0.0
        for unit, weight in enumerate(weights):
            picked = [by_cluster[unit][c] for c in drawn]
            taken = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
            total = np.nan if len(taken) == 0 else total + weight * float(values[unit][taken].mean())
        out[b] = total
    return out
