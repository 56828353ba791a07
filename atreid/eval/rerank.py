"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), chunked so memory stays bounded.

The published algorithm, over the joint set of ``N = Q + G`` query and gallery features:

1. original distance ``d(i, j)``: squared Euclidean distance of the features as given,
   each row divided by its maximum (as in the authors' released code, so every row lies
   in ``[0, 1]`` and the ``exp(-d)`` weights below do not depend on the feature scale);
2. ``N(i, k)``: the first ``k + 1`` entries of row ``i`` ranked by ascending distance
   (``i`` itself included); ``R(i, k)``: the ``j`` in ``N(i, k)`` with ``i`` in
   ``N(j, k)`` (k-reciprocal neighbours);
3. expansion: ``R*(i) = R(i, k1)`` united with every ``R(c, round(k1 / 2))`` of a
   candidate ``c`` in ``R(i, k1)`` that shares more than 2/3 of its members with
   ``R(i, k1)`` (``3 |R(c, k1/2) ∩ R(i, k1)| > 2 |R(c, k1/2)|``, the strict form of the
   released code; ``round`` rounds half to even, also as there: k1 = 5 -> 2, 7 -> 4);
4. ``V[i, j] = exp(-d(i, j))`` for ``j`` in ``R*(i)``, 0 elsewhere, each row normalised
   to sum 1;
5. local query expansion: row ``i`` of ``V`` becomes the mean of the rows of its first
   ``k2`` neighbours ``N(i, k2 - 1)`` (``k2 = 1``: no expansion);
6. Jaccard distance ``1 - sum_k min(V[i,k], V[j,k]) / sum_k max(V[i,k], V[j,k])``; rows
   sum to 1, so the denominator is ``2 - sum min`` and only the sparse min-sum is
   needed (it runs over the entries both rows have);
7. result ``(1 - lambda) * Jaccard + lambda * d`` for query rows and gallery columns.

Why squared Euclidean: it is the paper's distance, and for the pipeline's L2-normalised
features it equals ``2 * (1 - cosine)``. After the row normalisation the factor 2
cancels, so on normalised features the original-distance term, and every ranking, is
the same as with the ``1 - cosine`` distance :mod:`atreid.eval.metrics` uses. The module
does not normalise the features itself: pass what you rank with.

Ties and determinism. Rows are ranked by ascending distance, ties broken by the lower
index in ``concat(query, gallery)`` (a stable sort), except that a row always ranks
itself first, also ahead of exact duplicates with a lower index. (With a plain stable
sort, a feature repeated more than ``k1 + 1`` times would not be in its own neighbour
list; its reciprocal set could then be empty, its ``V`` row all zero, and ``2 - min-sum``
no longer the max-sum.) Exactly equal features always get exactly equal distances
(distances are computed between the distinct feature vectors and gathered, and a
vector's distance to itself is exactly 0), so duplicated images tie exactly and are
ordered by index. On CPU the result is bitwise reproducible for fixed inputs and
``chunk_size``; another chunk size changes the distance GEMM's shapes, which may move
the last float bit (and a ranking only where two distances are that close). The query
expansion and the min-sums are accumulated in float64; on CUDA their summation order is
not fixed, which stays far below float32 resolution.

Memory. Dense work arrays are at most a few ``chunk_size x N`` (distances of one row
chunk, the min-sums of one query chunk, whose sparse expansion is cut into pieces of at
most ``chunk_size x N / 8`` terms); everything else is ``O(N x k)``: neighbour lists, the
half-neighbourhood reciprocal sets, ``V`` as sparse rows (``|R*(i)|`` entries per row,
at most ``(k1 + 1)(round(k1 / 2) + 2)``) and per-chunk tables of that width. The
returned ``Q x G`` matrix is the only larger allocation.
"""

from __future__ import annotations

import numpy as np
import torch

from atreid.errors import AtreidError

__all__ = ["k_reciprocal_distances", "rerank_options", "RERANK_SUFFIX"]

# The option's parsing lives in a torch-free module (the workflow reads it at parse time).
from atreid.eval.rerank_options import RERANK_SUFFIX, rerank_options  # noqa: E402


def k_reciprocal_distances(query_features: torch.Tensor | np.ndarray, gallery_features: torch.Tensor | np.ndarray,
                           *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                           chunk_size: int = 1024) -> torch.Tensor:
    """Re-ranked ``(Q, G)`` distances between queries and gallery (see the module docstring).

    Args:
        query_features: ``(Q, D)`` features, ``Q >= 1``.
        gallery_features: ``(G, D)`` features, ``G >= 1``, same ``D`` and device.
        k1: neighbourhood size of the k-reciprocal sets (paper default 20).
        k2: neighbours averaged in the local query expansion (paper default 6; 1 = none).
        lambda_value: weight of the original distance, in ``[0, 1]`` (paper default 0.3).
        chunk_size: rows handled at once; dense work memory is a few ``chunk_size x N``.

    Returns:
        float32 ``(Q, G)`` tensor on the features' device (float64 for float64 inputs).

    Raises:
        AtreidError: bad shapes, empty inputs, non-finite features or bad parameters.
    """
    feats, num_q = _check_inputs(query_features, gallery_features, k1, k2, lambda_value, chunk_size)
    num = len(feats)
    num_g = num - num_q
    device = feats.device
    dist = _Distances(feats)

    # Neighbour lists (N x K), row maxima and the original query x gallery distances.
    width = min(num, max(k1 + 1, k2))
    neighbours = torch.empty(num, width, dtype=torch.long, device=device)
    row_max = torch.empty(num, dtype=feats.dtype, device=device)
    out = torch.empty(num_q, num_g, dtype=feats.dtype, device=device)
    for start in range(0, num, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, num), device=device)
        block = dist.rows(rows)
        peak = block.max(dim=1).values
        row_max[rows] = peak
        block /= torch.where(peak > 0, peak, torch.ones_like(peak))[:, None]
        # Each row ranks itself first, also ahead of exact duplicates with a lower index.
        diagonal = (torch.arange(len(rows), device=device), rows)
        block[diagonal] = -1.0
        neighbours[rows] = _smallest(block, width)
        block[diagonal] = 0.0
        if start < num_q:
            query_rows = rows[rows < num_q]
            out[query_rows] = block[:len(query_rows), num_q:]
        del block
    row_max = torch.where(row_max > 0, row_max, torch.ones_like(row_max))

    # k-reciprocal sets as padded index tables (-1 = no member).
    k1_width = min(num, k1 + 1)
    half_width = min(num, int(round(k1 / 2)) + 1)
    half_sets = torch.cat([_reciprocal(neighbours, torch.arange(s, min(s + chunk_size, num), device=device),
                                       half_width) for s in range(0, num, chunk_size)])

    # V rows (CSR: pointer, column, value), built chunk by chunk.
    v_ptr, v_col, v_val = _csr_from_chunks(
        _weights_chunk(dist, row_max, neighbours, half_sets, torch.arange(s, min(s + chunk_size, num), device=device),
                       k1_width) for s in range(0, num, chunk_size))

    # Local query expansion: mean of the V rows of the first k2 neighbours.
    k2_width = min(num, k2)
    if k2 != 1:
        v_ptr, v_col, v_val = _csr_from_chunks(
            _expand_chunk(v_ptr, v_col, v_val, neighbours[s:min(s + chunk_size, num), :k2_width], s, num)
            for s in range(0, num, chunk_size))

    # Jaccard distance of query rows to gallery rows from the sparse min-sums.
    g_ptr, g_row, g_val = _gallery_columns(v_ptr, v_col, v_val, num_q, num)
    budget = max(chunk_size * num // 8, 1 << 16)  # terms; each carries ~5 int64/float64 temporaries
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        min_sum = _min_sums(v_ptr, v_col, v_val, g_ptr, g_row, g_val, start, stop, num_g, budget)
        jaccard = 1.0 - min_sum / (2.0 - min_sum)
        out[start:stop] = (out[start:stop] * lambda_value
                           + jaccard.to(out.dtype).view(stop - start, num_g) * (1.0 - lambda_value))
    return out


def _check_inputs(query_features, gallery_features, k1, k2, lambda_value, chunk_size) -> tuple[torch.Tensor, int]:
    tensors = []
    for name, value in (("query_features", query_features), ("gallery_features", gallery_features)):
        tensor = torch.as_tensor(value)
        if tensor.ndim != 2:
            raise AtreidError(f"re-ranking: {name} must be (N, D), got shape {tuple(tensor.shape)}")
        if len(tensor) == 0:
            raise AtreidError(f"re-ranking: {name} is empty; need at least one query and one gallery feature")
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise AtreidError(f"re-ranking: {name} must hold real numbers, got dtype {tensor.dtype}")
        tensors.append(tensor)
    query, gallery = tensors
    if query.shape[1] != gallery.shape[1]:
        raise AtreidError(f"re-ranking: query features have dimension {query.shape[1]}, "
                          f"gallery features {gallery.shape[1]}; they must match")
    if query.device != gallery.device:
        raise AtreidError(f"re-ranking: query features are on {query.device}, gallery features on "
                          f"{gallery.device}; move both to one device")
    for name, value in (("k1", k1), ("k2", k2), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise AtreidError(f"re-ranking: {name} must be an integer >= 1, got {value!r}")
    if isinstance(lambda_value, bool) or not isinstance(lambda_value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(lambda_value) <= 1.0:
        raise AtreidError(f"re-ranking: lambda_value must be in [0, 1], got {lambda_value!r}")
    dtype = torch.float64 if torch.float64 in (query.dtype, gallery.dtype) else torch.float32
    feats = torch.cat([query.to(dtype), gallery.to(dtype)])
    if not bool(torch.isfinite(feats).all()):
        raise AtreidError("re-ranking: features contain NaN or inf; they must be finite")
    return feats, len(query)


class _Distances:
    """Squared Euclidean distances, computed between the distinct feature vectors only.

    Equal features share one vector, so their distances are bitwise equal (exact ties)
    and a feature's distance to itself is exactly 0.
    """

    def __init__(self, feats: torch.Tensor) -> None:
        uniq, inverse = torch.unique(feats, dim=0, return_inverse=True)
        self.has_duplicates = len(uniq) < len(feats)
        self.base = uniq if self.has_duplicates else feats
        self.which = inverse if self.has_duplicates else torch.arange(len(feats), device=feats.device)
        self.sq = (self.base * self.base).sum(dim=1)

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``(len(rows), N)`` distances of these rows to every feature."""
        which = self.which[rows]
        block = torch.addmm(self.sq[None, :], self.base[which], self.base.T, beta=1.0, alpha=-2.0)
        block += self.sq[which][:, None]
        block.clamp_(min=0.0)
        block[torch.arange(len(rows), device=rows.device), which] = 0.0
        return block[:, self.which] if self.has_duplicates else block

    def row_pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Distances of row ``rows[b]`` to the features ``cols[b, :]`` (``(B, W)``), in bounded slices."""
        out = torch.empty(cols.shape, dtype=self.base.dtype, device=self.base.device)
        step = max(1, (1 << 22) // max(1, cols.shape[1] * self.base.shape[1]))
        for s in range(0, len(rows), step):
            a, b = self.which[rows[s:s + step]], self.which[cols[s:s + step]]
            gathered = self.base.index_select(0, b.flatten()).view(*b.shape, -1)
            dot = torch.einsum("bwd,bd->bw", gathered, self.base.index_select(0, a))
            value = (self.sq[a][:, None] + self.sq[b] - 2.0 * dot).clamp_(min=0.0)
            out[s:s + step] = torch.where(a[:, None] == b, torch.zeros_like(value), value)
        return out


def _smallest(block: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the k smallest entries per row, by (value, index) ascending."""
    extra = min(k + 1, block.shape[1])
    values, index = torch.topk(block, extra, dim=1, largest=False, sorted=True)
    index = index[:, :k].sort(dim=1).values  # topk's order among equal values is unspecified
    order = torch.sort(block.gather(1, index), dim=1, stable=True).indices
    index = index.gather(1, order)
    if extra > k:
        # A tie across the k-th value (the (k+1)-th equals it): topk may have kept a
        # higher index than the stable order would; sort those rows fully.
        crowded = (values[:, k] == values[:, k - 1]).nonzero().flatten()
        if len(crowded):
            index[crowded] = torch.sort(block[crowded], dim=1, stable=True).indices[:, :k]
    return index


def _reciprocal(neighbours: torch.Tensor, rows: torch.Tensor, k_width: int) -> torch.Tensor:
    """``R(i, k)`` of these rows as ``(len(rows), k + 1)`` indices, -1 where not reciprocal."""
    forward = neighbours[rows, :k_width]
    backward = neighbours[forward, :k_width]
    mutual = (backward == rows[:, None, None]).any(dim=2)
    return torch.where(mutual, forward, torch.full_like(forward, -1))


def _weights_chunk(dist: _Distances, row_max: torch.Tensor, neighbours: torch.Tensor, half_sets: torch.Tensor,
                   rows: torch.Tensor, k1_width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of V for these rows: (members per row, columns, values), columns ascending."""
    num = len(neighbours)
    own = _reciprocal(neighbours, rows, k1_width)  # R(i, k1), (B, k1+1)
    valid = own >= 0
    cand = half_sets[own.clamp(min=0)]  # R(c, k1/2) of each candidate, (B, k1+1, k/2+1)
    in_cand = cand >= 0
    # |R(c, k1/2) ∩ R(i, k1)|: look each member of R(c, k1/2) up in the sorted R(i, k1).
    own_sorted = own.sort(dim=1).values
    flat = cand.flatten(1)
    found = own_sorted.gather(1, torch.searchsorted(own_sorted, flat).clamp_(max=own.shape[1] - 1)) == flat
    shared = (found.view(cand.shape) & in_cand).sum(dim=2)
    accept = valid & (3 * shared > 2 * in_cand.sum(dim=2))
    added = torch.where(accept[..., None] & in_cand, cand, torch.full_like(cand, -1))
    members = torch.cat([own, added.flatten(1)], dim=1)
    members = torch.where(members >= 0, members, torch.full_like(members, num)).sort(dim=1).values
    keep = members < num
    keep[:, 1:] &= members[:, 1:] != members[:, :-1]
    # Members to the front (stable, so columns stay ascending), padding trimmed.
    order = torch.sort(keep.to(torch.int8), dim=1, descending=True, stable=True).indices
    counts = keep.sum(dim=1)
    width = max(1, int(counts.max()))
    members, keep = members.gather(1, order[:, :width]), keep.gather(1, order[:, :width])
    members = torch.where(keep, members, torch.zeros_like(members))
    weight = torch.exp(-(dist.row_pairs(rows, members) / row_max[rows][:, None]))
    weight = torch.where(keep, weight, torch.zeros_like(weight))
    weight /= weight.sum(dim=1, keepdim=True)
    return counts, members[keep], weight[keep]


def _csr_from_chunks(chunks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    counts, cols, vals = zip(*chunks)
    counts = torch.cat(counts)
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long, device=counts.device)
    ptr[1:] = torch.cumsum(counts, dim=0)
    return ptr, torch.cat(cols), torch.cat(vals)


def _gather_segments(ptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the CSR entries of ``rows`` (in order) and, per position, the slot in ``rows``."""
    counts = ptr[rows + 1] - ptr[rows]
    slot = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    first = torch.cumsum(counts, dim=0) - counts
    return ptr[rows][slot] + torch.arange(len(slot), device=rows.device) - first[slot], slot


def _expand_chunk(ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, sources: torch.Tensor, start: int,
                  num: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query-expanded V rows ``start .. start + len(sources)``: mean of the source rows."""
    batch, k = sources.shape
    pos, slot = _gather_segments(ptr, sources.flatten())
    key = (slot // k) * num + col[pos]
    # Stable sort keeps each key's terms in neighbour order, so the sum order is fixed.
    key, order = torch.sort(key, stable=True)
    uniq, segment = torch.unique_consecutive(key, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64, device=val.device)
    sums.index_add_(0, segment, val[pos][order].double())
    counts = torch.bincount(uniq // num, minlength=batch)
    return counts, uniq % num, (sums / k).to(val.dtype)


def _gallery_columns(ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, num_q: int,
                     num: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gallery rows of V by column: (column pointer, gallery index, value), gallery index ascending."""
    first = int(ptr[num_q])
    counts = ptr[num_q + 1:] - ptr[num_q:-1]
    g_row = torch.repeat_interleave(torch.arange(len(counts), device=ptr.device), counts)
    g_col = col[first:]
    order = torch.sort(g_col, stable=True).indices  # rows were ascending, so they stay so per column
    col_ptr = torch.zeros(num + 1, dtype=torch.long, device=ptr.device)
    col_ptr[1:] = torch.cumsum(torch.bincount(g_col, minlength=num), dim=0)
    return col_ptr, g_row[order], val[first:][order]


def _min_sums(ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor, g_ptr: torch.Tensor, g_row: torch.Tensor,
              g_val: torch.Tensor, start: int, stop: int, num_g: int, budget: int) -> torch.Tensor:
    """``sum_k min(V[q, k], V[g, k])`` for queries ``start..stop`` and every gallery row, flat float64."""
    device = val.device
    out = torch.zeros((stop - start) * num_g, dtype=torch.float64, device=device)
    lo, hi = int(ptr[start]), int(ptr[stop])
    q_slot = torch.repeat_interleave(torch.arange(stop - start, device=device),
                                     ptr[start + 1:stop + 1] - ptr[start:stop])
    q_col, q_val = col[lo:hi], val[lo:hi].double()
    pairs = torch.cumsum(g_ptr[q_col + 1] - g_ptr[q_col], dim=0)
    # Entries of the query side in pieces whose expansion stays within the budget.
    s = 0
    while s < len(q_col):
        base = int(pairs[s - 1]) if s else 0
        e = max(s + 1, int(torch.searchsorted(pairs, base + budget, right=True)))
        e = min(e, len(q_col))
        pos, slot = _gather_segments(g_ptr, q_col[s:e])
        contrib = torch.minimum(q_val[s:e][slot], g_val[pos].double())
        out.index_add_(0, q_slot[s:e][slot] * num_g + g_row[pos], contrib)
        s = e
    return out
