"""Retrieval metrics (CMC, mAP, mINP) as pure functions of distances and label arrays.

Like torchreid's ``evaluate_rank``, nothing here knows about datasets or models: the
caller passes query/gallery features (or a distance matrix), per-image label arrays
(:class:`Labels`) and a :class:`~atreid.data.protocols.RemovalRule` saying which gallery entries each query
must not see. :mod:`atreid.eval.scoring` turns a benchmark's protocol into these
calls; :mod:`atreid.eval.oracle` is the slow per-query reference the tests and
``benchmarks/eval_speed.py`` compare against.

Definitions (per query, after removal; the query's own image is never in its gallery):

* positives: remaining gallery entries of the query's person; a query with no positive
  left is skipped (it counts in ``num_queries``, not in ``num_valid``);
* ranking: ascending distance, ties broken by gallery index ascending (a stable sort on
  distance over the gallery in its given order);
* CMC@k: 1 if a positive is within the first k entries (cumulative hit clipped at 1),
  averaged over valid queries; a gallery shorter than ``max_rank`` keeps its last value;
* AP: mean over all positives of the precision at that positive's rank; mAP its mean;
* INP: ``num_positives / rank of the last positive`` (Ye et al., AGW); mINP its mean.
* chance: the R1 and mAP a uniformly random ranking would score in expectation, from
  each valid query's ``R`` positives among its ``n`` remaining entries: R1 ``R / n`` and
  AP ``H_n / n + (R - 1) / (n - 1) * (1 - H_n / n)`` (``H_n`` the harmonic number; a
  positive at rank r has ``(r - 1)(R - 1) / (n - 1)`` positives before it on average).
  This is the bar "above chance" means for the protocol, its gallery and its rules;
  ``1 / #identities`` is not (it ignores how many positives each query has).

How it is fast. Only the ranks of the positives are needed, and a positive's rank is
``1 + #{entries with a smaller distance} + #{entries with the same distance and a lower
index}``. Per chunk of queries we compute the distances, set removed entries to +inf,
sort the distance *values* (no arg-sort) and binary-search each positive's distance in
its sorted row. Exact ties, rare with real features, are resolved by counting the tied
entries with a lower index. On CPU the value sort uses numpy's SIMD sort (x86-simd-sort,
several times faster than ``torch.sort`` there); on other devices ``torch.sort``.
Rules that remove entries regardless of person (``modality``, ``excluded_camera_pairs``)
are applied by giving each group of queries only the gallery columns it may see, which
also skips the distance computations for those columns. Rules about same-person entries
touch only those few pairs. Memory per chunk is a few ``chunk_size x G`` arrays; sums
are accumulated in float64.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from atreid.data.protocols import RemovalRule
from atreid.eval.rerank import k_reciprocal_distances

ArrayLike = Union[np.ndarray, torch.Tensor, list, tuple]
# (query positions, allowed gallery positions or None) -> distances of that block.
_Block = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
# (hits per first-positive rank, AP sum, INP sum, valid count, chance R1 sum, chance AP sum,
#  per-query vectors of the chunk's valid queries: see QueryOutcomes)
_ChunkSums = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                   dict[str, torch.Tensor]]

# Rows of (ties x gallery) compared at once when resolving exact ties; bounds memory.
_TIE_BLOCK_ELEMENTS = 1 << 24
_NO_CAMERA = np.iinfo(np.int64).min


def _as_int_array(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"Labels.{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Labels.{name} must hold integers, got dtype {array.dtype}")
    return np.array(array, dtype=np.int64)  # an owned, writable copy (torch warns on read-only arrays)


@dataclass(frozen=True)
class Labels:
    """Per-image label arrays of a query or gallery list (converted to int64 numpy).

    Args:
        person: person id per image.
        camera: camera id per image.
        modality: modality code per image (``atreid.constants.RGB`` = 0, ``IR`` = 1).
        clothes: clothes id per image, or None when unknown (stored as -1; clothes
            rules then refuse to run). Clothes ids only matter between images of one
            person, so per-person ids are fine.
    """

    person: np.ndarray
    camera: np.ndarray
    modality: np.ndarray
    clothes: np.ndarray | None = None

    def __post_init__(self) -> None:
        person = _as_int_array(self.person, "person")
        arrays = {"person": person}
        for name in ("camera", "modality"):
            arrays[name] = _as_int_array(getattr(self, name), name)
        if self.clothes is None:
            arrays["clothes"] = np.full(len(person), -1, dtype=np.int64)
        else:
            arrays["clothes"] = _as_int_array(self.clothes, "clothes")
        for name, array in arrays.items():
            if len(array) != len(person):
                raise ValueError(f"Labels.{name} has {len(array)} entries, Labels.person has {len(person)}")
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return len(self.person)

    def take(self, index: ArrayLike) -> "Labels":
        """The labels of the images at ``index`` (integer positions or a boolean mask)."""
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        return Labels(self.person[index], self.camera[index], self.modality[index], self.clothes[index])


@dataclass(frozen=True)
class QueryOutcomes:
    """What each valid query contributes to the means of a :class:`RetrievalResult`.

    One entry per valid query, in query order. ``first_rank`` is the 1-based rank of the
    query's first positive, so its CMC@k hit is ``first_rank <= k``; ``ap``/``inp`` its
    AP/INP and ``chance_r1``/``chance_ap`` what a random ranking scores for it (fractions).
    Averaging any of them over the entries gives the result's number.
    """

    query: np.ndarray  # position in the query list (int64)
    person: np.ndarray  # the query's person id (int64)
    first_rank: np.ndarray  # int64
    ap: np.ndarray  # float64
    inp: np.ndarray  # float64
    chance_r1: np.ndarray  # float64
    chance_ap: np.ndarray  # float64


@dataclass(frozen=True)
class RetrievalResult:
    """Metrics as fractions in [0, 1]. With no valid query they are NaN.

    Attributes:
        cmc: ``(max_rank,)`` float64, ``cmc[k - 1]`` is CMC@k.
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty over valid queries.
        num_valid: queries with at least one positive after removal.
        num_queries: all queries evaluated.
        chance_R1, chance_mAP: what a uniformly random ranking scores in expectation
            over the same valid queries (NaN where not computed).
        outcomes: the per-query vectors these means average (None where the result was
            pooled from others, as :func:`atreid.eval.scoring.weighted_average` does).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_queries: int
    chance_R1: float = math.nan
    chance_mAP: float = math.nan
    outcomes: QueryOutcomes | None = field(default=None, repr=False, compare=False)


def chance_levels(num_positives: torch.Tensor, num_candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected R1 and AP of a uniformly random ranking, per query (float64).

    Args:
        num_positives: ``R`` >= 1 per query.
        num_candidates: ``n`` >= ``R`` gallery entries left per query.
    """
    r = num_positives.to(torch.float64)
    n = num_candidates.to(torch.float64)
    harmonic_share = (torch.special.digamma(n + 1) + 0.5772156649015329) / n  # H_n / n
    others = torch.where(n > 1, (r - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
    return r / n, harmonic_share + others * (1 - harmonic_share)


def cosine_distance(q_feat: torch.Tensor, g_feat: torch.Tensor) -> torch.Tensor:
    """``1 - cosine`` between every query and gallery feature, shape ``(Q, G)``.

    Features are L2-normalised first. Computed in float32 unless the features are
    float64. This is the distance :func:`evaluate_retrieval` uses per chunk.
    """
    q = _normalised(q_feat)
    g = _normalised(g_feat)
    return torch.mm(q, g.T).neg_().add_(1.0)


def _normalised(feat: torch.Tensor) -> torch.Tensor:
    feat = torch.as_tensor(feat)
    if feat.dtype != torch.float64:
        feat = feat.float()
    return F.normalize(feat, dim=1)


def evaluate_retrieval(q_feat: torch.Tensor | np.ndarray, g_feat: torch.Tensor | np.ndarray, q: Labels, g: Labels,
                       rule: RemovalRule, *, max_rank: int = 20, chunk_size: int = 1024,
                       device: torch.device | str | None = None) -> RetrievalResult:
    """CMC, mAP and mINP of ranking ``g_feat`` for each of ``q_feat`` by ``1 - cosine``.

    Ranking is by ascending distance with ties broken by gallery index ascending
    (equivalent to a stable sort of each query's distances). See the module docstring
    for the metric definitions.

    Args:
        q_feat: ``(Q, D)`` query features (any scale; L2-normalised here).
        g_feat: ``(G, D)`` gallery features.
        q: query labels, ``len(q) == Q``.
        g: gallery labels, ``len(g) == G``.
        rule: what each query must not see.
        max_rank: length of the CMC curve.
        chunk_size: queries per chunk; memory is a few ``chunk_size x G`` arrays.
        device: where to compute; None uses the query features' device (CPU for numpy).

    Returns:
        A :class:`RetrievalResult` with fractions (not percentages).
    """
    q_feat, g_feat, device = _feature_pair(q_feat, g_feat, q, g, device)
    q_norm = _normalised(q_feat.to(device))
    g_norm = _normalised(g_feat.to(device))
    # Normalised entries are bounded by 1, so a finite sum means every entry is finite
    # (a full isfinite pass costs as much as a tenth of the whole evaluation).
    if not (torch.isfinite(q_norm.sum()) and torch.isfinite(g_norm.sum())):
        raise ValueError("features contain NaN or inf")
    cached: dict[str, torch.Tensor | None] = {"cols": None, "gallery": g_norm}

    def block(q_idx: torch.Tensor, g_cols: torch.Tensor | None) -> torch.Tensor:
        if g_cols is not cached["cols"]:  # a new query group: gather its gallery once
            cached["cols"] = g_cols
            cached["gallery"] = g_norm if g_cols is None else g_norm.index_select(0, g_cols)
        return torch.mm(q_norm.index_select(0, q_idx), cached["gallery"].T).neg_().add_(1.0)

    return _evaluate(block, q, g, rule, max_rank=max_rank, chunk_size=chunk_size, device=device)


def evaluate_distmat(distmat: torch.Tensor | np.ndarray, q: Labels, g: Labels, rule: RemovalRule, *,
                     max_rank: int = 20, chunk_size: int = 1024,
                     device: torch.device | str | None = None) -> RetrievalResult:
    """Same as :func:`evaluate_retrieval` from a precomputed ``(Q, G)`` distance matrix.

    Distances must be finite; float64 matrices are ranked in float64, others in float32.
    Only ``chunk_size`` rows are moved to ``device`` at a time (None: the matrix's device,
    CPU for numpy), so a numpy memmap works too.
    """
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be (Q, G), got shape {tuple(distmat.shape)}")
    _check_sizes(distmat.shape[0], distmat.shape[1], q, g)
    if device is None:
        device = distmat.device if isinstance(distmat, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)

    def block(q_idx: torch.Tensor, g_cols: torch.Tensor | None) -> torch.Tensor:
        if isinstance(distmat, torch.Tensor):
            rows = distmat.index_select(0, q_idx.to(distmat.device))
            if g_cols is not None:
                rows = rows.index_select(1, g_cols.to(distmat.device))
        else:
            rows = distmat[q_idx.cpu().numpy()]
            if g_cols is not None:
                rows = rows[:, g_cols.cpu().numpy()]
            rows = torch.from_numpy(np.ascontiguousarray(rows))
        rows = rows.to(device)
        rows = rows if rows.dtype == torch.float64 else rows.float()
        # min/max propagate NaN and expose +-inf in one cheap pass (isfinite is slower).
        if rows.numel() and not all(torch.isfinite(v) for v in torch.aminmax(rows)):
            raise ValueError("distmat contains NaN or inf; distances must be finite")
        return rows.contiguous()

    return _evaluate(block, q, g, rule, max_rank=max_rank, chunk_size=chunk_size, device=device)


def evaluate_reranked(q_feat: torch.Tensor | np.ndarray, g_feat: torch.Tensor | np.ndarray, q: Labels, g: Labels,
                      rule: RemovalRule, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                      max_rank: int = 20, chunk_size: int = 1024,
                      device: torch.device | str | None = None) -> RetrievalResult:
    """:func:`evaluate_retrieval` with k-reciprocal re-ranked distances instead of ``1 - cosine``.

    The features are L2-normalised as for the plain ranking, re-ranked over this query
    list and gallery (:func:`atreid.eval.rerank.k_reciprocal_distances`, chunked by
    ``chunk_size``), and the ``(Q, G)`` result is scored by :func:`evaluate_distmat` with
    the same ``rule``: every entry the plain ranking removes is removed here too (the
    re-ranking's neighbour sets see the whole lists, as in the published method).
    With ``lambda_value`` 1 the distance is the row-scaled original one, so the ranking
    (and every metric) is the plain one.
    """
    q_feat, g_feat, device = _feature_pair(q_feat, g_feat, q, g, device)
    if len(q_feat) == 0 or len(g_feat) == 0:  # nothing to re-rank: score the empty case as the plain path does
        return evaluate_retrieval(q_feat, g_feat, q, g, rule, max_rank=max_rank, chunk_size=chunk_size, device=device)
    distmat = k_reciprocal_distances(_normalised(q_feat.to(device)), _normalised(g_feat.to(device)), k1=k1, k2=k2,
                                     lambda_value=lambda_value, chunk_size=chunk_size)
    return evaluate_distmat(distmat, q, g, rule, max_rank=max_rank, chunk_size=chunk_size, device=device)


def _feature_pair(q_feat: torch.Tensor | np.ndarray, g_feat: torch.Tensor | np.ndarray, q: Labels, g: Labels,
                  device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Query and gallery features as tensors, checked against each other and the labels,
    and the device to compute on (None: the query features')."""
    q_feat = torch.as_tensor(q_feat)
    g_feat = torch.as_tensor(g_feat)
    if q_feat.ndim != 2 or g_feat.ndim != 2 or q_feat.shape[1] != g_feat.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D), got {tuple(q_feat.shape)} and {tuple(g_feat.shape)}")
    _check_sizes(len(q_feat), len(g_feat), q, g)
    return q_feat, g_feat, torch.device(device) if device is not None else q_feat.device


def _check_sizes(num_q: int, num_g: int, q: Labels, g: Labels) -> None:
    if len(q) != num_q:
        raise ValueError(f"{num_q} queries but {len(q)} query labels")
    if len(g) != num_g:
        raise ValueError(f"{num_g} gallery entries but {len(g)} gallery labels")


def _query_groups(rule: RemovalRule, q: Labels, g: Labels) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Split queries into groups that see the same gallery columns under the all-person rules.

    Yields ``(query positions, allowed gallery positions or None for all)``. Columns stay
    in ascending order, so ranking inside a group keeps the gallery-index tie order.
    """
    num_q = len(q)
    keys = []
    if rule.modality != "any":
        keys.append(q.modality)
    excluded: dict[int, list[int]] = {}
    for q_cam, g_cam in rule.excluded_camera_pairs:
        excluded.setdefault(q_cam, []).append(g_cam)
    if excluded:
        # Queries from cameras without exclusions share one key that is no camera id.
        keys.append(np.where(np.isin(q.camera, list(excluded)), q.camera, _NO_CAMERA))
    if not keys:
        yield np.arange(num_q), None
        return
    uniq, inverse = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for k, key in enumerate(uniq):
        allowed = np.ones(len(g), dtype=bool)
        column = 0
        if rule.modality != "any":
            same = g.modality == key[column]
            allowed &= same if rule.modality == "same" else ~same
            column += 1
        if excluded and key[column] != _NO_CAMERA:
            allowed &= ~np.isin(g.camera, excluded[int(key[column])])
        yield order[bounds[k]:bounds[k + 1]], np.flatnonzero(allowed)


def _sort_rows(dist: torch.Tensor, pool: ThreadPoolExecutor | None, workers: int) -> torch.Tensor:
    """Row-wise sorted copy of ``dist`` (values only)."""
    if dist.device.type != "cpu":
        return torch.sort(dist, dim=1).values
    # numpy's sort dispatches to x86-simd-sort / highway (several times faster than
    # torch.sort on CPU) and releases the GIL, so row blocks sort in parallel threads.
    out = dist.clone()
    array = out.numpy()
    if pool is None or len(array) < 64:
        array.sort(axis=1)
    else:
        bounds = np.linspace(0, len(array), workers + 1).astype(int)
        futures = [pool.submit(array[a:b].sort, 1) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        for future in futures:
            future.result()
    return out


def _evaluate(block: _Block, q: Labels, g: Labels, rule: RemovalRule, *, max_rank: int, chunk_size: int,
              device: torch.device) -> RetrievalResult:
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if rule.clothes != "any" and ((q.clothes < 0).any() or (g.clothes < 0).any()):
        raise ValueError(f"RemovalRule.clothes={rule.clothes!r} needs clothes ids for every query and gallery image")

    # Person ids -> dense codes shared by queries and gallery, for per-person lookups.
    persons = np.unique(np.concatenate([q.person, g.person]))
    q_code = torch.as_tensor(np.searchsorted(persons, q.person), device=device)
    g_code_all = np.searchsorted(persons, g.person)
    q_lab = {name: torch.as_tensor(getattr(q, name), device=device) for name in ("camera", "modality", "clothes")}

    hits = torch.zeros(max_rank + 1, dtype=torch.float64, device=device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=device)
    inp_sum = torch.zeros((), dtype=torch.float64, device=device)
    num_valid = torch.zeros((), dtype=torch.int64, device=device)
    chance_r1_sum = torch.zeros((), dtype=torch.float64, device=device)
    chance_ap_sum = torch.zeros((), dtype=torch.float64, device=device)
    per_query: list[dict[str, torch.Tensor]] = []
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(threads) if device.type == "cpu" and threads > 1 else None
    try:
        for q_pos, g_cols in _query_groups(rule, q, g):
            if len(q_pos) == 0:
                continue
            cols = np.arange(len(g)) if g_cols is None else g_cols
            if len(cols) == 0:
                continue  # nothing visible: every query of the group is invalid
            # Gallery positions of each person (within this group's columns), in index
            # order, so a query's same-person entries are one contiguous slice.
            g_code = g_code_all[cols]
            by_person = np.argsort(g_code, kind="stable")
            starts = np.searchsorted(g_code[by_person], np.arange(len(persons)))
            counts = np.bincount(g_code, minlength=len(persons))
            group = _GroupGallery(
                by_person=torch.as_tensor(by_person, device=device),
                starts=torch.as_tensor(starts, device=device),
                counts=torch.as_tensor(counts, device=device),
                labels={name: torch.as_tensor(getattr(g, name)[cols], device=device)
                        for name in ("camera", "modality", "clothes")},
            )
            cols_t = None if g_cols is None else torch.as_tensor(g_cols, device=device)
            q_pos_t = torch.as_tensor(q_pos, device=device)
            for start in range(0, len(q_pos), chunk_size):
                q_idx = q_pos_t[start:start + chunk_size]
                dist = block(q_idx, cols_t)
                stats = _chunk_metrics(dist, q_idx, q_code, q_lab, group, rule, max_rank, pool, threads)
                if stats is not None:
                    chunk_hits, chunk_ap, chunk_inp, chunk_valid, chunk_r1, chunk_chance_ap, chunk_queries = stats
                    hits += chunk_hits
                    ap_sum += chunk_ap
                    inp_sum += chunk_inp
                    num_valid += chunk_valid
                    chance_r1_sum += chunk_r1
                    chance_ap_sum += chunk_chance_ap
                    per_query.append(chunk_queries)
    finally:
        if pool is not None:
            pool.shutdown()

    valid = int(num_valid.item())
    outcomes = _query_outcomes(per_query, q)
    if valid == 0:
        nan = math.nan
        return RetrievalResult(np.full(max_rank, nan), nan, nan, 0, len(q), outcomes=outcomes)
    cmc = np.cumsum(hits[:max_rank].cpu().numpy()) / valid
    return RetrievalResult(cmc, float(ap_sum.item()) / valid, float(inp_sum.item()) / valid, valid, len(q),
                           float(chance_r1_sum.item()) / valid, float(chance_ap_sum.item()) / valid, outcomes)


def _query_outcomes(chunks: list[dict[str, torch.Tensor]], q: Labels) -> QueryOutcomes:
    """The chunks' per-query vectors joined and put in query order (groups may interleave)."""
    names = ("query", "first_rank", "ap", "inp", "chance_r1", "chance_ap")
    dtypes = (np.int64, np.int64, np.float64, np.float64, np.float64, np.float64)
    joined = {name: np.concatenate([c[name].cpu().numpy() for c in chunks]).astype(dtype, copy=False)
              if chunks else np.zeros(0, dtype=dtype) for name, dtype in zip(names, dtypes)}
    order = np.argsort(joined["query"], kind="stable")
    joined = {name: values[order] for name, values in joined.items()}
    return QueryOutcomes(person=q.person[joined["query"]], **joined)


@dataclass
class _GroupGallery:
    by_person: torch.Tensor  # group gallery positions sorted by (person code, position)
    starts: torch.Tensor  # first slot of each person code in by_person
    counts: torch.Tensor  # entries per person code
    labels: dict[str, torch.Tensor]  # camera / modality / clothes of the group gallery


def _chunk_metrics(dist: torch.Tensor, q_idx: torch.Tensor, q_code: torch.Tensor, q_lab: dict[str, torch.Tensor],
                   group: _GroupGallery, rule: RemovalRule, max_rank: int, pool: ThreadPoolExecutor | None,
                   workers: int) -> _ChunkSums | None:
    """Metric sums of one chunk (see :data:`_ChunkSums`)."""
    device = dist.device
    num_b, num_g = dist.shape
    # Same-person pairs (row in chunk, column in group gallery), by row then column.
    code = q_code[q_idx]
    per_row = group.counts[code]
    total = int(per_row.sum().item())
    if total == 0:
        return None
    rows = torch.repeat_interleave(torch.arange(num_b, device=device), per_row)
    row_start = torch.cumsum(per_row, 0) - per_row
    offset = torch.arange(total, device=device) - row_start[rows]
    cols = group.by_person[group.starts[code][rows] + offset]

    # Same-person rules; every other entry of the row stays (as a negative).
    q_cam, q_mod, q_clo = (q_lab[name][q_idx][rows] for name in ("camera", "modality", "clothes"))
    g_cam, g_mod, g_clo = (group.labels[name][cols] for name in ("camera", "modality", "clothes"))
    remove = torch.zeros(total, dtype=torch.bool, device=device)
    if rule.same_camera:
        remove |= g_cam == q_cam
    if rule.same_person_modality == "same":
        remove |= g_mod != q_mod
    elif rule.same_person_modality == "cross":
        remove |= g_mod == q_mod
    if rule.same_person_removed_modality is not None:
        remove |= g_mod == rule.same_person_removed_modality
    if rule.clothes == "same":
        remove |= g_clo != q_clo
    elif rule.clothes == "changed":
        remove |= g_clo == q_clo
    dist[rows[remove], cols[remove]] = math.inf  # +inf sorts after every finite distance
    keep = ~remove
    p_rows, p_cols = rows[keep], cols[keep]
    if len(p_rows) == 0:
        return None
    p_dist = dist[p_rows, p_cols]

    # Positives into a padded (B, P) table; slots within a row follow gallery order.
    # p_rows is sorted, so per-row counts come from a search (deterministic on CUDA,
    # unlike bincount, which torch.use_deterministic_algorithms would reject).
    npos = torch.diff(torch.searchsorted(p_rows, torch.arange(num_b + 1, device=device)))
    width = int(npos.max().item())
    slot = torch.arange(len(p_rows), device=device) - (torch.cumsum(npos, 0) - npos)[p_rows]
    table_dist = torch.full((num_b, width), math.inf, dtype=dist.dtype, device=device)
    table_dist[p_rows, slot] = p_dist

    # Entries ranked before a positive: strictly closer ones (binary search in the
    # sorted row) plus exact ties with a lower gallery index (resolved only where the
    # tie block holds more than the positive itself).
    sorted_dist = _sort_rows(dist, pool, workers)
    before = torch.searchsorted(sorted_dist, table_dist, right=False)
    tie_size = torch.searchsorted(sorted_dist, table_dist, right=True) - before
    before = before[p_rows, slot]
    tied = (tie_size[p_rows, slot] > 1).nonzero().flatten()
    if len(tied):
        before[tied] += _count_lower_index_ties(dist, p_rows[tied], p_cols[tied], p_dist[tied])
    ranks = torch.full((num_b, width), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
    ranks[p_rows, slot] = before + 1
    ranks = torch.sort(ranks, dim=1).values

    valid = npos > 0
    # Entries left per row: the group gallery less this row's removed same-person ones
    # (rows[remove] is sorted, so the per-row counts come from a search, as for npos).
    removed = torch.diff(torch.searchsorted(rows[remove], torch.arange(num_b + 1, device=device)))
    chance_r1, chance_ap = chance_levels(npos[valid], (num_g - removed)[valid])
    ranks = ranks[valid]
    npos = npos[valid].to(torch.float64)
    k = torch.arange(1, width + 1, dtype=torch.float64, device=device)
    filled = k[None, :] <= npos[:, None]
    precision = torch.where(filled, k[None, :] / ranks.to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                                      device=device))
    ap = precision.sum(1) / npos
    last = ranks.gather(1, (npos.long() - 1)[:, None]).squeeze(1)
    inp = npos / last.to(torch.float64)
    first = ranks[:, 0].clamp(max=max_rank + 1) - 1  # index max_rank = "beyond the curve"
    chunk_hits = (first[:, None] == torch.arange(max_rank + 1, device=device)).sum(0).to(torch.float64)
    queries = {"query": q_idx[valid], "first_rank": ranks[:, 0], "ap": ap, "inp": inp, "chance_r1": chance_r1,
               "chance_ap": chance_ap}
    return chunk_hits, ap.sum(), inp.sum(), valid.sum(), chance_r1.sum(), chance_ap.sum(), queries


def _count_lower_index_ties(dist: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                            values: torch.Tensor) -> torch.Tensor:
    """For each (row, col, value): entries of ``dist[row]`` equal to value at a column < col."""
    num_g = dist.shape[1]
    position = torch.arange(num_g, device=dist.device)
    step = max(1, _TIE_BLOCK_ELEMENTS // max(num_g, 1))
    out = []
    for s in range(0, len(rows), step):
        r, c, v = rows[s:s + step], cols[s:s + step], values[s:s + step]
        equal = (dist.index_select(0, r) == v[:, None]) & (position[None, :] < c[:, None])
        out.append(equal.sum(1))
    return torch.cat(out)
