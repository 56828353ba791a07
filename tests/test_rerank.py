"""k-reciprocal re-ranking: the chunked module against a plain dense transcription."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atreid.errors import AtreidError
from atreid.eval import rerank
from atreid.eval.rerank import k_reciprocal_distances

TOL = 1e-5


def reference_rerank(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
                     lambda_value: float = 0.3) -> np.ndarray:
    """Zhong et al. (CVPR 2017), step by step, dense N x N, in float64 (slow; small N only).

    Conventions of the authors' released code: each row of the squared Euclidean
    distance is divided by its maximum, V rows are normalised to sum 1, the half
    neighbourhood is round(k1 / 2), the 2/3 rule is strict, k2 = 1 means no query
    expansion. Ties rank by the lower index (stable sort), except that each row ranks
    itself first.
    """
    feats = np.concatenate([query, gallery]).astype(np.float64)
    num_q, num = len(query), len(query) + len(gallery)
    dist = np.stack([((feats - feats[i]) ** 2).sum(axis=1) for i in range(num)])
    row_max = dist.max(axis=1)
    row_max[row_max == 0] = 1.0
    dist = dist / row_max[:, None]
    ranking = dist.copy()
    np.fill_diagonal(ranking, -1.0)  # self first, even before equal features of lower index
    rank = np.argsort(ranking, axis=1, kind="stable")

    def neighbours(i: int, k: int) -> list[int]:  # N(i, k): the first k + 1 entries
        return list(rank[i, :k + 1])

    def reciprocal(i: int, k: int) -> list[int]:  # R(i, k)
        return [j for j in neighbours(i, k) if i in neighbours(j, k)]

    half = int(round(k1 / 2))
    V = np.zeros((num, num))
    for i in range(num):
        r_i = reciprocal(i, k1)
        expanded = set(r_i)
        for c in r_i:
            r_c = reciprocal(c, half)
            if len(set(r_c) & set(r_i)) > 2 / 3 * len(r_c):
                expanded |= set(r_c)
        members = sorted(expanded)
        weight = np.exp(-dist[i, members])
        V[i, members] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(num)])
    out = np.zeros((num_q, num - num_q))
    for i in range(num_q):  # every gallery row j at once
        jaccard = 1.0 - np.minimum(V[i], V[num_q:]).sum(axis=1) / np.maximum(V[i], V[num_q:]).sum(axis=1)
        out[i] = (1.0 - lambda_value) * jaccard + lambda_value * dist[i, num_q:]
    return out


def assert_matches(ours: torch.Tensor, ref: np.ndarray, atol: float = TOL) -> None:
    assert np.isfinite(ref).all() and bool(torch.isfinite(ours).all())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=atol)


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int, centres: int) -> np.ndarray:
    """Features around a few centres, so neighbourhoods overlap as with real persons."""
    means = rng.normal(size=(centres, dim))
    return normalised(means[rng.integers(0, centres, n)] + 0.4 * rng.normal(size=(n, dim)))


CASES = [  # (num_q, num_g, dim, k1, k2, lambda, seed)
    (6, 30, 8, 20, 6, 0.3, 0),     # defaults, k1 + 1 < N
    (3, 4, 5, 20, 6, 0.3, 1),      # tiny gallery: k1 and k2 exceed N
    (2, 1, 3, 20, 6, 0.5, 2),      # one gallery feature
    (15, 60, 16, 7, 1, 0.0, 3),    # odd k1 (round(3.5) = 4), no query expansion, Jaccard only
    (10, 45, 4, 3, 10, 0.9, 4),    # k2 > k1 + 1
    (20, 80, 32, 1, 2, 0.3, 5),    # k1 = 1 (half neighbourhood of 0: the row itself)
    (25, 100, 12, 20, 6, 0.3, 6),
]


@pytest.mark.parametrize("num_q,num_g,dim,k1,k2,lam,seed", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference(num_q, num_g, dim, k1, k2, lam, seed, dtype):
    rng = np.random.default_rng(seed)
    feats = clustered(rng, num_q + num_g, dim, centres=max(2, (num_q + num_g) // 8)).astype(dtype)
    query, gallery = feats[:num_q], feats[num_q:]
    ours = k_reciprocal_distances(torch.from_numpy(query), torch.from_numpy(gallery), k1=k1, k2=k2,
                                  lambda_value=lam, chunk_size=7)
    assert ours.shape == (num_q, num_g)
    assert ours.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
    assert_matches(ours, reference_rerank(query, gallery, k1, k2, lam))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duplicates_and_exact_ties(seed):
    """Repeated features (exact ties everywhere) and integer features (ties between distinct ones).

    About 8 copies of each prototype with k1 = 5: more copies than a neighbour list holds,
    so only the self-first rule keeps every row in its own reciprocal set (no 0 / 0).
    """
    rng = np.random.default_rng(seed)
    protos = normalised(rng.normal(size=(6, 10))).astype(np.float32)
    feats = protos[rng.integers(0, 6, 50)]
    ours = k_reciprocal_distances(feats[:12], feats[12:], k1=5, k2=3, chunk_size=5)
    assert_matches(ours, reference_rerank(feats[:12], feats[12:], 5, 3, 0.3))

    grid = rng.integers(0, 3, size=(60, 4)).astype(np.float32)  # many equal distances
    ours = k_reciprocal_distances(grid[:10], grid[10:], k1=6, k2=4, lambda_value=0.2, chunk_size=9)
    assert_matches(ours, reference_rerank(grid[:10], grid[10:], 6, 4, 0.2))


def test_all_features_equal():
    feats = np.ones((9, 4), dtype=np.float32)
    ours = k_reciprocal_distances(feats[:3], feats[3:], k1=4, k2=2)
    assert_matches(ours, reference_rerank(feats[:3], feats[3:], 4, 2, 0.3))


def test_lambda_one_is_the_original_distance():
    rng = np.random.default_rng(7)
    feats = clustered(rng, 70, 12, 6).astype(np.float32)
    ours = k_reciprocal_distances(feats[:20], feats[20:], lambda_value=1.0).numpy()
    sq = ((feats[:20, None, :].astype(np.float64) - feats[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(ours, sq[:, 20:] / sq.max(axis=1, keepdims=True), rtol=0, atol=1e-6)
    # On L2-normalised features that is 1 - cosine over its row maximum (same ranking as metrics.py).
    cos = 1.0 - feats[:20].astype(np.float64) @ feats.T.astype(np.float64)
    np.testing.assert_allclose(ours, cos[:, 20:] / cos.max(axis=1, keepdims=True), rtol=0, atol=1e-6)


def test_chunk_size_does_not_change_the_result():
    rng = np.random.default_rng(8)
    feats = torch.from_numpy(clustered(rng, 90, 16, 9).astype(np.float32))
    query, gallery = feats[:30], feats[30:]
    full = k_reciprocal_distances(query, gallery, chunk_size=1000)
    for chunk in (1, 4, 29, 64):
        np.testing.assert_allclose(k_reciprocal_distances(query, gallery, chunk_size=chunk).numpy(), full.numpy(),
                                   rtol=0, atol=1e-6)
    again = k_reciprocal_distances(query, gallery, chunk_size=29)
    assert torch.equal(again, k_reciprocal_distances(query, gallery, chunk_size=29))  # bitwise reproducible


def test_dense_work_stays_within_chunk_rows(monkeypatch):
    """Structural memory bound: every dense distance block and min-sum array is chunk x N at most."""
    rng = np.random.default_rng(9)
    feats = torch.from_numpy(clustered(rng, 120, 8, 10).astype(np.float32))
    num_q, num, chunk = 40, 120, 16
    seen = []
    rows, min_sums = rerank._Distances.rows, rerank._min_sums

    def spy_rows(self, index):
        block = rows(self, index)
        seen.append(block.numel())
        return block

    def spy_min_sums(*args):
        out = min_sums(*args)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(rerank._Distances, "rows", spy_rows)
    monkeypatch.setattr(rerank, "_min_sums", spy_min_sums)
    ours = k_reciprocal_distances(feats[:num_q], feats[num_q:], chunk_size=chunk)
    assert len(seen) == -(-num // chunk) + -(-num_q // chunk)
    assert max(seen) <= chunk * num
    assert_matches(ours, reference_rerank(feats[:num_q].numpy(), feats[num_q:].numpy()))


def test_min_sum_budget_splits_the_expansion():
    """A budget smaller than one query's expansion still gives the same min-sums."""
    rng = np.random.default_rng(10)
    feats = torch.from_numpy(clustered(rng, 60, 8, 5).astype(np.float64))
    full = k_reciprocal_distances(feats[:10], feats[10:])
    original = rerank._min_sums

    def tiny_budget(*args):
        return original(*args[:-1], 3)

    rerank._min_sums = tiny_budget
    try:
        split = k_reciprocal_distances(feats[:10], feats[10:])
    finally:
        rerank._min_sums = original
    np.testing.assert_allclose(split.numpy(), full.numpy(), rtol=0, atol=1e-12)


def test_numpy_inputs_and_ints():
    rng = np.random.default_rng(11)
    feats = rng.integers(-3, 4, size=(30, 5))
    ours = k_reciprocal_distances(feats[:5], feats[5:], k1=4, k2=2)
    assert ours.dtype == torch.float32
    assert_matches(ours, reference_rerank(feats[:5], feats[5:], 4, 2, 0.3))


@pytest.mark.parametrize("query,gallery,kwargs,match", [
    (np.ones((3, 4)), np.ones((5, 6)), {}, "dimension 4"),
    (np.ones((0, 4)), np.ones((5, 4)), {}, "query_features is empty"),
    (np.ones((3, 4)), np.ones((0, 4)), {}, "gallery_features is empty"),
    (np.ones(4), np.ones((5, 4)), {}, "must be"),
    (np.ones((3, 4)), np.ones((5, 4)), {"k1": 0}, "k1 must be an integer >= 1"),
    (np.ones((3, 4)), np.ones((5, 4)), {"k2": 0}, "k2 must be an integer >= 1"),
    (np.ones((3, 4)), np.ones((5, 4)), {"k1": 2.5}, "k1 must be"),
    (np.ones((3, 4)), np.ones((5, 4)), {"chunk_size": 0}, "chunk_size"),
    (np.ones((3, 4)), np.ones((5, 4)), {"lambda_value": 1.5}, "lambda_value"),
    (np.ones((3, 4)), np.ones((5, 4)), {"lambda_value": "0.3"}, "lambda_value"),
    (np.ones((3, 4), dtype=bool), np.ones((5, 4)), {}, "real numbers"),
    (np.full((3, 4), np.nan), np.ones((5, 4)), {}, "NaN"),
])
def test_bad_input_is_one_line_error(query, gallery, kwargs, match):
    with pytest.raises(AtreidError, match=match) as info:
        k_reciprocal_distances(query, gallery, **kwargs)
    assert "\n" not in str(info.value)
