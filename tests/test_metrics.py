"""Retrieval metrics: equality with the per-query oracle, and hand-built cases per rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atreid.eval.metrics import (
    Labels,
    RemovalRule,
    RetrievalResult,
    cosine_distance,
    evaluate_distmat,
    evaluate_retrieval,
)
from atreid.eval.oracle import oracle_distance, oracle_evaluate

TOL = 1e-6


def assert_same(ours: RetrievalResult, ref: RetrievalResult, tol: float = TOL) -> None:
    assert ours.num_queries == ref.num_queries
    assert ours.num_valid == ref.num_valid
    assert ours.cmc.shape == ref.cmc.shape
    if ref.num_valid == 0:
        assert np.isnan(ours.cmc).all() and math.isnan(ours.mAP) and math.isnan(ours.mINP)
        return
    np.testing.assert_allclose(ours.cmc, ref.cmc, rtol=0, atol=tol)
    assert ours.mAP == pytest.approx(ref.mAP, abs=tol)
    assert ours.mINP == pytest.approx(ref.mINP, abs=tol)
    assert ours.chance_R1 == pytest.approx(ref.chance_R1, abs=tol)
    assert ours.chance_mAP == pytest.approx(ref.chance_mAP, abs=tol)


def random_labels(rng: np.random.Generator, n: int, persons: int, cameras: int = 4) -> Labels:
    return Labels(rng.integers(0, persons, n), rng.integers(1, cameras + 1, n), rng.integers(0, 2, n),
                  rng.integers(0, 3, n))


def random_rule(rng: np.random.Generator) -> RemovalRule:
    pairs = ()
    if rng.random() < 0.4:
        pairs = tuple((int(a), int(b)) for a, b in rng.integers(1, 5, (int(rng.integers(1, 3)), 2)))
    return RemovalRule(same_camera=bool(rng.integers(2)), modality=str(rng.choice(["any", "same", "cross"])),
                       same_person_modality=str(rng.choice(["any", "same", "cross"])),
                       clothes=str(rng.choice(["any", "same", "changed"])), excluded_camera_pairs=pairs)


def exact_features(rng: np.random.Generator, n: int, distinct: int) -> np.ndarray:
    """Unit-norm features whose dot products are exact in float32 (dyadic values).

    Rows are drawn from a few distinct vectors (duplicates -> exact distance ties) and
    scaled by powers of two, so normalisation is exact too; any summation order gives
    the same distances, so the oracle and the chunked matmul see identical values.
    """
    signs = rng.choice([-0.25, 0.25], size=(distinct, 16))
    sparse = np.zeros((distinct, 16))
    for row in sparse:
        row[rng.choice(16, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    pool = np.where(rng.random((distinct, 1)) < 0.5, signs, sparse)
    rows = pool[rng.integers(0, distinct, n)] * (2.0 ** rng.integers(-2, 3, (n, 1)))
    return rows.astype(np.float32)


# ---------------------------------------------------------------- randomised oracle equality

@pytest.mark.parametrize("seed", range(120))
def test_distmat_matches_oracle_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(1, 40)), int(rng.integers(1, 70))  # often shorter than 20
    q, g = random_labels(rng, num_q, 6), random_labels(rng, num_g, 6)
    rule = random_rule(rng)
    # Quantised distances: many exact ties, so the tie order is exercised.
    levels = int(rng.choice([2, 5, 50, 10_000]))
    distmat = rng.integers(0, levels, (num_q, num_g)) / levels
    if seed % 2:
        distmat = distmat.astype(np.float32)
    chunk = int(rng.choice([1, 3, 7, num_q, num_q + 5]))
    ours = evaluate_distmat(distmat, q, g, rule, chunk_size=chunk)
    assert_same(ours, oracle_evaluate(distmat, q, g, rule))
    # A torch matrix gives the same result as the numpy one.
    assert_same(evaluate_distmat(torch.from_numpy(distmat), q, g, rule, chunk_size=chunk), ours, tol=0)


@pytest.mark.parametrize("seed", range(60))
def test_features_match_oracle_exact_ties(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    num_q, num_g = int(rng.integers(1, 50)), int(rng.integers(1, 90))
    q, g = random_labels(rng, num_q, 5), random_labels(rng, num_g, 5)
    rule = random_rule(rng)
    distinct = int(rng.integers(1, 12))
    q_feat, g_feat = exact_features(rng, num_q, distinct), exact_features(rng, num_g, distinct)
    chunk = int(rng.choice([1, 2, 5, 13, 4096]))
    ours = evaluate_retrieval(torch.from_numpy(q_feat), torch.from_numpy(g_feat), q, g, rule, chunk_size=chunk)
    assert_same(ours, oracle_evaluate(oracle_distance(q_feat, g_feat), q, g, rule))


@pytest.mark.parametrize("seed", range(20))
def test_features_match_oracle_continuous(seed: int) -> None:
    """float64 features: distances agree far below any gap, so rankings are the oracle's."""
    rng = np.random.default_rng(2000 + seed)
    num_q, num_g, persons = int(rng.integers(20, 200)), int(rng.integers(30, 400)), 12
    q, g = random_labels(rng, num_q, persons), random_labels(rng, num_g, persons)
    centres = rng.normal(size=(persons, 32))
    q_feat = centres[q.person] + rng.normal(scale=1.5, size=(num_q, 32))
    g_feat = centres[g.person] + rng.normal(scale=1.5, size=(num_g, 32))
    rule = random_rule(rng)
    ref = oracle_evaluate(oracle_distance(q_feat, g_feat), q, g, rule)
    for chunk in (1, 17, 1024):
        assert_same(evaluate_retrieval(q_feat, g_feat, q, g, rule, chunk_size=chunk), ref)


def test_float32_features_equal_cosine_distance_oracle() -> None:
    """The feature path ranks by exactly what ``cosine_distance`` returns."""
    rng = np.random.default_rng(7)
    q, g = random_labels(rng, 300, 20), random_labels(rng, 500, 20)
    q_feat = torch.from_numpy(rng.normal(size=(300, 64)).astype(np.float32))
    g_feat = torch.from_numpy(rng.normal(size=(500, 64)).astype(np.float32))
    rule = RemovalRule(clothes="same")
    ours = evaluate_retrieval(q_feat, g_feat, q, g, rule, chunk_size=128)
    assert_same(ours, oracle_evaluate(cosine_distance(q_feat, g_feat), q, g, rule))
    assert_same(evaluate_distmat(cosine_distance(q_feat, g_feat), q, g, rule, chunk_size=300), ours)


def test_max_rank_and_other_lengths() -> None:
    rng = np.random.default_rng(3)
    q, g = random_labels(rng, 30, 4), random_labels(rng, 8, 4)
    distmat = rng.random((30, 8))
    for max_rank in (1, 5, 20, 50):
        ours = evaluate_distmat(distmat, q, g, RemovalRule(), max_rank=max_rank)
        assert ours.cmc.shape == (max_rank,)
        assert_same(ours, oracle_evaluate(distmat, q, g, RemovalRule(), max_rank=max_rank))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:  # pragma: no cover - runs where a GPU exists
    rng = np.random.default_rng(11)
    q, g = random_labels(rng, 500, 30), random_labels(rng, 900, 30)
    q_feat, g_feat = exact_features(rng, 500, 40), exact_features(rng, 900, 40)
    rule = RemovalRule(modality="cross", clothes="changed", excluded_camera_pairs=((1, 2),))
    cpu = evaluate_retrieval(q_feat, g_feat, q, g, rule, chunk_size=64)
    assert_same(evaluate_retrieval(torch.from_numpy(q_feat).cuda(), g_feat, q, g, rule, chunk_size=64), cpu)
    assert_same(evaluate_retrieval(q_feat, g_feat, q, g, rule, chunk_size=64, device="cuda"), cpu)


# ---------------------------------------------------------------- hand-built cases

def one_query(person=1, camera=1, modality=0, clothes=1) -> Labels:
    return Labels([person], [camera], [modality], [clothes])


def gallery(*rows: tuple[int, int, int, int]) -> Labels:
    person, camera, modality, clothes = zip(*rows)
    return Labels(person, camera, modality, clothes)


def run(distances, q: Labels, g: Labels, rule: RemovalRule = RemovalRule(), max_rank: int = 5) -> RetrievalResult:
    distmat = np.asarray([distances], dtype=np.float64)
    ours = evaluate_distmat(distmat, q, g, rule, max_rank=max_rank)
    assert_same(ours, oracle_evaluate(distmat, q, g, rule, max_rank=max_rank))
    return ours


def test_equal_distances_rank_lower_gallery_index_first() -> None:
    q = one_query()
    # index 0: other person, index 1: positive, both at 0.5; index 2: positive at 0.1.
    g = gallery((2, 2, 0, 1), (1, 2, 0, 1), (1, 3, 0, 1))
    res = run([0.5, 0.5, 0.1], q, g)
    # Ranks of the positives: 1 (index 2) and 3 (index 1 after index 0).
    assert res.mAP == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert res.mINP == pytest.approx(2 / 3)
    np.testing.assert_allclose(res.cmc, [1, 1, 1, 1, 1])
    # Swap which index holds the tied negative: the positive now comes first.
    g = gallery((1, 2, 0, 1), (2, 2, 0, 1), (1, 3, 0, 1))
    res = run([0.5, 0.5, 0.1], q, g)
    assert res.mAP == pytest.approx(1.0)
    assert res.mINP == pytest.approx(1.0)


def test_cmc_is_cumulative_and_extends_a_short_gallery() -> None:
    g = gallery((2, 2, 0, 1), (3, 2, 0, 1), (1, 2, 0, 1))  # positive ranked third, 3 entries
    res = run([0.1, 0.2, 0.3], one_query(), g, max_rank=6)
    np.testing.assert_allclose(res.cmc, [0, 0, 1, 1, 1, 1])
    assert res.mAP == pytest.approx(1 / 3)
    assert res.mINP == pytest.approx(1 / 3)


def test_same_camera_rule() -> None:
    g = gallery((1, 1, 0, 1), (2, 1, 0, 1), (1, 2, 0, 1))  # same-camera positive is closest
    on = run([0.1, 0.2, 0.3], one_query(), g)
    # The same-camera positive is gone; the other person's same-camera image stays.
    assert on.mAP == pytest.approx(1 / 2)
    np.testing.assert_allclose(on.cmc, [0, 1, 1, 1, 1])
    off = run([0.1, 0.2, 0.3], one_query(), g, RemovalRule(same_camera=False))
    assert off.mAP == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_modality_rules_apply_to_every_person() -> None:
    q = one_query(modality=0)
    # rgb negative, ir negative, rgb positive, ir positive
    g = gallery((2, 2, 0, 1), (3, 2, 1, 1), (1, 2, 0, 1), (1, 3, 1, 1))
    d = [0.1, 0.2, 0.3, 0.4]
    assert run(d, q, g).mAP == pytest.approx((1 / 3 + 2 / 4) / 2)
    same = run(d, q, g, RemovalRule(modality="same"))  # keeps indices 0, 2
    assert same.mAP == pytest.approx(1 / 2)
    cross = run(d, q, g, RemovalRule(modality="cross"))  # keeps indices 1, 3
    assert cross.mAP == pytest.approx(1 / 2)


def test_same_person_modality_rules_leave_other_persons() -> None:
    q = one_query(modality=0)
    g = gallery((2, 2, 1, 1), (1, 2, 1, 1), (1, 3, 0, 1), (3, 2, 0, 1))
    d = [0.1, 0.2, 0.3, 0.4]
    same = run(d, q, g, RemovalRule(same_person_modality="same"))  # drops index 1 only
    assert same.mAP == pytest.approx(1 / 2)  # positive at rank 2 (after the ir negative)
    cross = run(d, q, g, RemovalRule(same_person_modality="cross"))  # drops index 2 only
    assert cross.mAP == pytest.approx(1 / 2)
    assert cross.mINP == pytest.approx(1 / 2)


def test_clothes_rules() -> None:
    q = one_query(clothes=1)
    g = gallery((1, 2, 0, 2), (2, 2, 0, 1), (1, 3, 0, 1))
    d = [0.1, 0.2, 0.3]
    same = run(d, q, g, RemovalRule(clothes="same"))  # drops the other-clothes positive
    assert same.mAP == pytest.approx(1 / 2)
    changed = run(d, q, g, RemovalRule(clothes="changed"))  # drops the same-clothes positive
    assert changed.mAP == pytest.approx(1.0)
    # Clothes ids only count within a person: other persons in clothes 1 stay.
    assert same.num_valid == changed.num_valid == 1


def test_excluded_camera_pairs_remove_every_person() -> None:
    q = Labels([1, 1], [3, 1], [1, 1], [1, 1])
    g = gallery((2, 2, 0, 1), (1, 2, 0, 1), (1, 4, 0, 1))
    distmat = np.asarray([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    rule = RemovalRule(excluded_camera_pairs=[(3, 2)])
    assert rule.excluded_camera_pairs == ((3, 2),)
    res = evaluate_distmat(distmat, q, g, rule)
    assert_same(res, oracle_evaluate(distmat, q, g, rule))
    # Query 0 (camera 3) sees only index 2 (rank 1, AP 1); query 1 keeps everything.
    assert res.mAP == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2) / 2)


def test_queries_without_positive_are_skipped() -> None:
    q = Labels([1, 9, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1])
    g = gallery((1, 1, 0, 1), (1, 2, 0, 1), (2, 2, 0, 1))
    distmat = np.asarray([[0.1, 0.9, 0.2]] * 3)
    res = evaluate_distmat(distmat, q, g, RemovalRule())
    assert (res.num_valid, res.num_queries) == (2, 3)
    assert res.mAP == pytest.approx(1 / 2)  # person 9 has no image: not averaged in
    empty = evaluate_distmat(distmat[:1, :1], q.take([0]), g.take([0]), RemovalRule())
    assert (empty.num_valid, empty.num_queries) == (0, 1)
    assert math.isnan(empty.mAP) and np.isnan(empty.cmc).all()


def test_cosine_distance_ranks_like_negative_cosine() -> None:
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(4, 8)) * 3, rng.normal(size=(6, 8))
    d = cosine_distance(torch.from_numpy(q), torch.from_numpy(g)).numpy()
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    np.testing.assert_allclose(d, 1 - cos, atol=1e-12)
    np.testing.assert_array_equal(np.argsort(d, axis=1, kind="stable"), np.argsort(-cos, axis=1, kind="stable"))


# ---------------------------------------------------------------- validation

def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="modality"):
        RemovalRule(modality="rgb")
    with pytest.raises(ValueError, match="clothes"):
        RemovalRule(clothes="different")
    with pytest.raises(ValueError, match="entries"):
        Labels([1, 2], [1], [0, 0])
    no_clothes = Labels([1], [1], [0])
    assert no_clothes.clothes.tolist() == [-1]
    with pytest.raises(ValueError, match="clothes ids"):
        evaluate_distmat(np.zeros((1, 1)), no_clothes, no_clothes, RemovalRule(clothes="same"))
    with pytest.raises(ValueError, match="finite"):
        evaluate_distmat(np.full((1, 1), np.nan), no_clothes, no_clothes, RemovalRule())
    with pytest.raises(ValueError, match="finite"):
        evaluate_distmat(torch.full((1, 1), -math.inf), no_clothes, no_clothes, RemovalRule())
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(np.full((1, 2), np.inf), np.ones((1, 2)), no_clothes, no_clothes, RemovalRule())
    with pytest.raises(ValueError, match="query labels"):
        evaluate_distmat(np.zeros((2, 1)), no_clothes, no_clothes, RemovalRule())


def test_empty_lists_and_torch_labels() -> None:
    empty, one = Labels([], [], []), Labels(torch.tensor([1]), torch.tensor([1]), torch.tensor([0]))
    assert one.person.dtype == np.int64
    res = evaluate_retrieval(np.zeros((0, 4), np.float32), np.ones((1, 4), np.float32), empty, one,
                             RemovalRule(modality="cross"))
    assert (res.num_valid, res.num_queries) == (0, 0)
    res = evaluate_distmat(np.zeros((1, 0)), one, empty, RemovalRule(excluded_camera_pairs=((1, 1),)))
    assert (res.num_valid, res.num_queries) == (0, 1) and math.isnan(res.mAP)


@pytest.mark.parametrize("seed", range(10))
def test_torch_sort_branch_matches_oracle(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``torch.sort`` branch (used off-CPU) ranks like the numpy one, ties included."""
    import atreid.eval.metrics as metrics

    monkeypatch.setattr(metrics, "_sort_rows", lambda dist, pool, workers: torch.sort(dist, dim=1).values)
    rng = np.random.default_rng(3000 + seed)
    q, g = random_labels(rng, 40, 5), random_labels(rng, 60, 5)
    distmat = rng.integers(0, 6, (40, 60)) / 6
    rule = random_rule(rng)
    assert_same(evaluate_distmat(distmat, q, g, rule, chunk_size=9), oracle_evaluate(distmat, q, g, rule))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_chance_levels_equal_the_mean_over_every_ranking(n: int) -> None:
    """The closed forms equal R1 and AP averaged over all n! rankings of R positives."""
    import itertools

    from atreid.eval.metrics import chance_levels

    for r in range(1, n + 1):
        r1, ap = [], []
        for order in itertools.permutations(range(n)):
            matches = np.array([i < r for i in order])  # items 0..r-1 are the positives
            hits = np.cumsum(matches)
            r1.append(float(matches[0]))
            ap.append(float(np.sum(hits[matches] / (np.flatnonzero(matches) + 1))) / r)
        want_r1, want_ap = chance_levels(torch.tensor([r]), torch.tensor([n]))
        assert want_r1.item() == pytest.approx(np.mean(r1), abs=1e-12)
        assert want_ap.item() == pytest.approx(np.mean(ap), abs=1e-12)


def test_chance_counts_only_the_entries_left_after_removal() -> None:
    # Query person 1, camera 1: the same-camera positive is removed; 1 positive of 3 left.
    g = gallery((1, 1, 0, 1), (2, 2, 0, 1), (1, 2, 0, 1), (3, 2, 0, 1))
    res = run([0.1, 0.2, 0.3, 0.4], one_query(), g)
    assert res.chance_R1 == pytest.approx(1 / 3)
    assert res.chance_mAP == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)  # H_3 / 3 with one positive
