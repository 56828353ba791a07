"""Per-query outcomes and the person-cluster bootstrap: outcomes equal the oracle's per
query and average to the metrics; the fast bootstrap equals the naive one; intervals agree
with scipy.stats.bootstrap, the binomial interval and an exact enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from atreid.eval.bootstrap import (
    cluster_sums,
    naive_replicates,
    percentile_interval,
    resample_counts,
    seed_replicates,
    weighted_replicates,
)
from atreid.data.protocols import RemovalRule
from atreid.eval.metrics import Labels, evaluate_distmat
from atreid.eval.oracle import oracle_evaluate
from atreid.eval.outcomes import (
    OutcomeRecorder,
    check_summary,
    read_outcomes,
    summary_from_outcomes,
    write_outcomes,
)


def _labels(rng: np.random.Generator, n: int, persons: int) -> Labels:
    return Labels(rng.integers(0, persons, n), rng.integers(1, 4, n), rng.integers(0, 2, n), rng.integers(0, 3, n))


@pytest.mark.parametrize("rule", [RemovalRule(), RemovalRule(modality="cross", clothes="changed"),
                                  RemovalRule(excluded_camera_pairs=((1, 2),), clothes="same")])
def test_outcomes_equal_the_oracle_per_query_and_average_to_the_means(rule):
    rng = np.random.default_rng(3)
    q, g = _labels(rng, 60, 8), _labels(rng, 120, 8)
    distmat = rng.integers(0, 6, (60, 120)).astype(np.float64)  # many exact ties
    result = evaluate_distmat(distmat, q, g, rule, chunk_size=7)
    out = result.outcomes
    assert len(out.query) == result.num_valid and np.all(np.diff(out.query) > 0)
    np.testing.assert_array_equal(out.person, q.person[out.query])
    for i, query in enumerate(out.query):
        one = oracle_evaluate(distmat, q, g, rule, queries=np.array([query]))
        assert one.num_valid == 1
        assert out.ap[i] == pytest.approx(one.mAP, abs=1e-12)
        assert out.inp[i] == pytest.approx(one.mINP, abs=1e-12)
        assert (out.first_rank[i] <= 1) == bool(one.cmc[0]) and (out.first_rank[i] <= 5) == bool(one.cmc[4])
        assert out.chance_ap[i] == pytest.approx(one.chance_mAP, abs=1e-12)
    for k in (1, 5, 10):
        assert np.mean(out.first_rank <= k) == pytest.approx(result.cmc[k - 1], abs=1e-12)
    assert out.ap.mean() == pytest.approx(result.mAP, abs=1e-12)
    assert out.inp.mean() == pytest.approx(result.mINP, abs=1e-12)
    assert out.chance_r1.mean() == pytest.approx(result.chance_R1, abs=1e-12)


def _recorded(seed: int = 0):
    """Two protocols, the second with three trials, and a combination cell of both."""
    from atreid.eval.scoring import result_to_dict

    rng = np.random.default_rng(seed)
    recorder, dicts = OutcomeRecorder(), {}
    for protocol, trials in (("a", 1), ("b", 3)):
        for trial in range(trials):
            q, g = _labels(rng, 40, 10), _labels(rng, 80, 10)
            result = evaluate_distmat(rng.random((40, 80)), q, g, RemovalRule())
            recorder.add(protocol, result, trial=trial)
            dicts.setdefault(protocol, []).append(result_to_dict(result))
    return recorder.table("bench", {"": ["a", "b"], "a_": ["a"]}), dicts


def test_summary_recomputed_from_outcomes_and_file_roundtrip(tmp_path):
    outcomes, dicts = _recorded()
    mean_b = {m: np.mean([d[m] for d in dicts["b"]]) for m in ("R1", "mAP")}
    metrics = {"summary": {m: (dicts["a"][0][m] + mean_b[m]) / 2 for m in ("R1", "mAP")}}
    metrics["summary"].update({f"a_{m}": dicts["a"][0][m] for m in ("R1", "mAP")})
    assert check_summary(metrics, outcomes) == []
    metrics["summary"]["R1"] += 0.01
    assert check_summary(metrics, outcomes) == ["summary.R1"]
    path = tmp_path / "bench.outcomes.npz"
    write_outcomes(path, outcomes)
    first = path.read_bytes()
    write_outcomes(path, outcomes)
    assert path.read_bytes() == first  # no time stamp: byte-for-byte the same file
    back = read_outcomes(path)
    assert back.meta == outcomes.meta
    assert summary_from_outcomes(back) == summary_from_outcomes(outcomes)
    chance_b = np.mean([d["chance"]["R1"] for d in dicts["b"]])
    assert summary_from_outcomes(back, chance=True)["R1"] == pytest.approx((dicts["a"][0]["chance"]["R1"] + chance_b) / 2,
                                                                          abs=1e-9)


def test_missing_outcomes_file_is_one_line(tmp_path):
    from atreid.errors import AtreidError

    with pytest.raises(AtreidError, match=r"missing\.outcomes\.npz.*re-run its evaluation") as info:
        read_outcomes(tmp_path / "missing.outcomes.npz")
    assert "\n" not in str(info.value)


def test_fast_replicates_equal_the_naive_reference():
    rng = np.random.default_rng(1)
    persons = 30
    codes = [rng.integers(0, persons, 200), rng.integers(0, persons - 5, 90)]
    values = [rng.random(200), (rng.random(90) < 0.4).astype(float)]
    weights = [0.25, 0.75]
    counts = resample_counts(persons, 200, np.random.default_rng(5))
    assert np.all(counts.sum(axis=1) == persons)
    sums = np.stack([cluster_sums(c, v, persons)[0] for c, v in zip(codes, values)])
    sizes = np.stack([cluster_sums(c, v, persons)[1] for c, v in zip(codes, values)])
    fast = weighted_replicates(counts, sums, sizes, weights)
    slow = naive_replicates(codes, values, weights, persons, counts)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12, equal_nan=True)
    again = weighted_replicates(resample_counts(persons, 200, np.random.default_rng(5)), sums, sizes, weights)
    np.testing.assert_array_equal(fast, again)  # seeded: the same replicates every time


def _one_query_per_person(n: int, p: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hits = np.zeros(n)
    hits[rng.permutation(n)[:round(p * n)]] = 1.0
    return hits


def test_one_query_per_person_matches_scipy_and_the_binomial_interval():
    from scipy import stats

    n = 400
    hits = _one_query_per_person(n, 0.6)
    counts = resample_counts(n, 4000, np.random.default_rng(0))
    sums, sizes = cluster_sums(np.arange(n), hits, n)
    lo, hi = percentile_interval(weighted_replicates(counts, sums[None], sizes[None], [1.0]))
    scipy_ci = stats.bootstrap((hits,), np.mean, n_resamples=4000, method="percentile", confidence_level=0.95,
                               random_state=np.random.default_rng(0)).confidence_interval
    assert lo == pytest.approx(scipy_ci.low, abs=0.01) and hi == pytest.approx(scipy_ci.high, abs=0.01)
    half = 1.959963984540054 * math.sqrt(0.6 * 0.4 / n)  # Wald interval of a proportion
    assert lo == pytest.approx(0.6 - half, abs=0.01) and hi == pytest.approx(0.6 + half, abs=0.01)


def test_clusters_match_an_exact_enumeration():
    """Three persons with 1, 2 and 4 queries: every one of the 27 equally likely draws by hand."""
    codes = np.array([0, 1, 1, 2, 2, 2, 2])
    values = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    exact = []
    for draw in itertools.product(range(3), repeat=3):
        picked = np.concatenate([values[codes == c] for c in draw])
        exact.append(picked.mean())
    exact = np.array(exact)
    counts = resample_counts(3, 60000, np.random.default_rng(2))
    sums, sizes = cluster_sums(codes, values, 3)
    ours = weighted_replicates(counts, sums[None], sizes[None], [1.0])
    assert ours.mean() == pytest.approx(exact.mean(), abs=0.005)
    assert ours.std() == pytest.approx(exact.std(), abs=0.005)
    for value in np.unique(exact):  # the whole distribution, not just two moments
        assert np.mean(np.isclose(ours, value)) == pytest.approx(np.mean(np.isclose(exact, value)), abs=0.01)


def test_intervals_are_wider_for_clustered_queries():
    """Ten queries per person that all hit or all miss: the person-level interval, not the
    one ten times as many independent queries would give."""
    persons = 100
    person_hit = _one_query_per_person(persons, 0.5)
    codes = np.repeat(np.arange(persons), 10)
    counts = resample_counts(persons, 2000, np.random.default_rng(0))
    sums, sizes = cluster_sums(codes, person_hit[codes], persons)
    lo, hi = percentile_interval(weighted_replicates(counts, sums[None], sizes[None], [1.0]))
    half = 1.959963984540054 * math.sqrt(0.25 / persons)
    assert hi - lo == pytest.approx(2 * half, abs=0.03)
    assert hi - lo > 2 * 1.959963984540054 * math.sqrt(0.25 / 1000) * 2.5


def test_seed_replicates_and_undefined_resamples():
    rng = np.random.default_rng(0)
    per_run = np.array([np.zeros(500), np.ones(500)])
    mixed = seed_replicates(per_run, rng)
    assert set(np.unique(mixed)) == {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(seed_replicates(per_run[:1], rng), per_run[0])
    assert percentile_interval(np.array([np.nan, 1.0, 1.0])) == (1.0, 1.0)
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan])))


def test_atustc_outcomes_give_every_summary_number_plain_and_reranked():
    from atreid.constants import SCENARIOS
    from atreid.data.benchmarks.atustc import PROTOCOLS
    from atreid.eval.outcomes import scenario_cells
    from atreid.eval.scoring import evaluate_scenarios
    from tests.test_protocols import identity_features, tiny_index

    index = tiny_index(seed=2, persons=5)
    recorder = OutcomeRecorder()
    out = evaluate_scenarios(identity_features(index), index, PROTOCOLS, chunk_size=5, recorder=recorder,
                          rerank={"k1": 4, "k2": 2, "lambda": 0.3})
    outcomes = recorder.table("atustc", scenario_cells(SCENARIOS))
    assert outcomes.rankings == ["plain", "rerank"]
    metrics = {"summary": {}, "chance_summary": {}}
    for name in ("Any-Time", *SCENARIOS):
        for metric in ("R1", "mAP"):
            metrics["summary"][f"{name}_{metric}"] = out[name][metric]
            metrics["summary"][f"{name}_{metric}@rr"] = out[name]["rerank"][metric]
            metrics["chance_summary"][f"{name}_{metric}"] = out[name]["chance"][metric]
    assert check_summary(metrics, outcomes) == []
    recomputed = summary_from_outcomes(outcomes)
    assert set(recomputed) == set(metrics["summary"])
