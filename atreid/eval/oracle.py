"""Slow reference implementation of the retrieval metrics: one query at a time in numpy.

This is the oracle the tests (``tests/test_metrics.py``) and the speed benchmark
(``benchmarks/eval_speed.py``) compare :mod:`atreid.eval.metrics` against. It is
written the plain torchreid way (``eval_func``): for each query, build the removal mask
from the :class:`~atreid.eval.metrics.RemovalRule` fields directly, ``np.argsort`` the
distances with a stable sort (ties -> lower gallery index first), drop the removed
entries, and read CMC / AP / INP off the match vector. It shares no code with the fast
path beyond the rule and label records. Do not use it for real evaluations.
"""

from __future__ import annotations

import numpy as np
import torch

from atreid.data.protocols import RemovalRule
from atreid.eval.metrics import Labels, RetrievalResult


def oracle_distance(q_feat: np.ndarray | torch.Tensor, g_feat: np.ndarray | torch.Tensor) -> np.ndarray:
    """``1 - cosine`` of L2-normalised features in float64 numpy, shape ``(Q, G)``."""
    q = np.asarray(q_feat.detach().cpu() if isinstance(q_feat, torch.Tensor) else q_feat, dtype=np.float64)
    g = np.asarray(g_feat.detach().cpu() if isinstance(g_feat, torch.Tensor) else g_feat, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T


def removal_mask(i: int, q: Labels, g: Labels, rule: RemovalRule) -> np.ndarray:
    """Boolean ``(G,)`` mask of the gallery entries query ``i`` must not see."""
    same_person = g.person == q.person[i]
    remove = np.zeros(len(g), dtype=bool)
    if rule.same_camera:
        remove |= same_person & (g.camera == q.camera[i])
    if rule.modality == "same":
        remove |= g.modality != q.modality[i]
    elif rule.modality == "cross":
        remove |= g.modality == q.modality[i]
    if rule.same_person_modality == "same":
        remove |= same_person & (g.modality != q.modality[i])
    elif rule.same_person_modality == "cross":
        remove |= same_person & (g.modality == q.modality[i])
    if rule.same_person_removed_modality is not None:
        remove |= same_person & (g.modality == rule.same_person_removed_modality)
    if rule.clothes == "same":
        remove |= same_person & (g.clothes != q.clothes[i])
    elif rule.clothes == "changed":
        remove |= same_person & (g.clothes == q.clothes[i])
    for q_cam, g_cam in rule.excluded_camera_pairs:
        if q.camera[i] == q_cam:
            remove |= g.camera == g_cam
    return remove


def oracle_evaluate(distmat: np.ndarray | torch.Tensor, q: Labels, g: Labels, rule: RemovalRule, *,
                    max_rank: int = 20, queries: np.ndarray | None = None) -> RetrievalResult:
    """CMC / mAP / mINP from a ``(Q, G)`` distance matrix, looping over queries.

    Args:
        distmat: distances (smaller = more similar).
        q, g: query / gallery labels.
        rule: removal rule.
        max_rank: CMC length; a shorter gallery repeats its last CMC value.
        queries: optional subset of query positions to evaluate (the benchmark times
            the oracle on a seeded subset at full scale).
    """
    if isinstance(distmat, torch.Tensor):
        distmat = distmat.detach().cpu().numpy()
    queries = np.arange(len(q)) if queries is None else np.asarray(queries)
    all_cmc, all_ap, all_inp, chance_r1, chance_ap = [], [], [], [], []
    for i in queries:
        order = np.argsort(distmat[i], kind="stable")
        keep = ~removal_mask(int(i), q, g, rule)[order]
        matches = (g.person[order] == q.person[i])[keep].astype(np.int64)
        if not matches.any():
            continue  # no positive left after removal: the query is skipped
        cmc = matches.cumsum()
        cmc[cmc > 1] = 1
        if len(cmc) < max_rank:
            cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])
        all_cmc.append(cmc[:max_rank])
        num_rel = matches.sum()
        precision = matches.cumsum() / np.arange(1, len(matches) + 1)
        all_ap.append((precision * matches).sum() / num_rel)
        last = np.flatnonzero(matches)[-1]
        all_inp.append(num_rel / (last + 1.0))
        # A random ranking: rank r holds a positive with probability R / n, and then
        # (r - 1)(R - 1) / (n - 1) positives before it on average.
        n = len(matches)
        r = np.arange(1, n + 1)
        before = (r - 1) * (num_rel - 1) / (n - 1) if n > 1 else np.zeros(1)
        chance_r1.append(num_rel / n)
        chance_ap.append(float(np.sum((1 + before) / r)) / n)
    if not all_cmc:
        nan = float("nan")
        return RetrievalResult(np.full(max_rank, nan), nan, nan, 0, len(queries))
    return RetrievalResult(np.mean(np.asarray(all_cmc, dtype=np.float64), axis=0), float(np.mean(all_ap)),
                           float(np.mean(all_inp)), len(all_cmc), len(queries), float(np.mean(chance_r1)),
                           float(np.mean(chance_ap)))
