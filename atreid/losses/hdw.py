"""HDW: hierarchical dynamic weighting of the six heads' per-sample losses.

With ``p = exp(-l)`` per sample and head (no detach: the weights are part of the graph,
as in the reference):

- modality level: ``w_DT = sqrt(1 - mean p)`` over the samples of heads DT-ST and DT-LT,
  likewise ``w_NT`` (heads 2, 3) and ``w_AD`` (heads 4, 5);
- clothes level: ``w_ST`` over heads DT-ST, NT-ST, AD-ST, ``w_LT`` over the LT heads;
- head (T, S) weight = ``(w_T / max(w_DT, w_NT, w_AD)) * (w_S / max(w_ST, w_LT))``, each
  max clamped to >= 1e-6;
- total = sum of all weighted per-sample losses / batch size.

Harder groups (lower mean probability of the true class) get larger weights.

Under DDP every rank holds part of the batch: ``rank_sum`` (a sum over ranks that
gradients flow through, :func:`atreid.engine.distributed.autograd_all_reduce`) makes the
group means those of the global batch, as in one process.
"""

from __future__ import annotations

from typing import Callable

import torch

from atreid.constants import LONG_TERM_HEADS, SHORT_TERM_HEADS

MODALITY_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1), (2, 3), (4, 5))  # DT, NT, AD
CLOTHES_GROUPS: tuple[tuple[int, ...], ...] = (SHORT_TERM_HEADS, LONG_TERM_HEADS)  # ST, LT
MAX_CLAMP = 1e-6
# 1 - mean p is exactly 0 only when every loss underflows to 0; sqrt's derivative is
# infinite there, so the argument is clamped (the value changes only in that case).
_SQRT_FLOOR = 1e-12

RankSum = Callable[[torch.Tensor], torch.Tensor]


def group_weights(p: torch.Tensor, mask: torch.Tensor, groups: tuple[tuple[int, ...], ...],
                  rank_sum: RankSum | None = None) -> torch.Tensor:
    """``sqrt(1 - mean p)`` over the masked samples of each head group; 0 for an empty group.

    ``rank_sum`` (DDP): sums and counts over all ranks, so the means are the global batch's.
    """
    sums, counts = [], []
    for heads in groups:
        sel = mask[list(heads)]
        counts.append(sel.sum())
        sums.append(torch.where(sel, p[list(heads)], torch.zeros_like(p[0, 0])).sum())
    sums, counts = torch.stack(sums), torch.stack(counts)
    if rank_sum is not None:
        reduced = rank_sum(torch.cat([sums, counts.to(sums.dtype)]))
        sums, counts = reduced[:len(groups)], reduced[len(groups):]
    w = (1 - sums / counts.clamp_min(1)).clamp_min(_SQRT_FLOOR).sqrt()
    # A group without samples (e.g. no IR image in the batch) has no weight and
    # must not take part in the max normalisation.
    return torch.where(counts > 0, w, torch.zeros_like(w))


def _group_of_head(groups: tuple[tuple[int, ...], ...], num_heads: int) -> list[int]:
    return [next(i for i, g in enumerate(groups) if h in g) for h in range(num_heads)]


def hdw_weights(losses: torch.Tensor, mask: torch.Tensor, rank_sum: RankSum | None = None) -> torch.Tensor:
    """Per-head HDW weights (6,) from per-sample losses and subset masks, both (6, B)."""
    p = torch.exp(-losses)
    w_t = group_weights(p, mask, MODALITY_GROUPS, rank_sum)
    w_s = group_weights(p, mask, CLOTHES_GROUPS, rank_sum)
    w_t = w_t / w_t.max().clamp_min(MAX_CLAMP)
    w_s = w_s / w_s.max().clamp_min(MAX_CLAMP)
    num_heads = losses.shape[0]
    return w_t[_group_of_head(MODALITY_GROUPS, num_heads)] * w_s[_group_of_head(CLOTHES_GROUPS, num_heads)]


def hdw_loss(losses: torch.Tensor, mask: torch.Tensor,
             rank_sum: RankSum | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Total HDW loss (sum of weighted per-sample losses / B) and the (6,) head weights.

    Under DDP (``rank_sum``) B is this rank's batch: the mean of the ranks' totals is the
    global batch's total when the ranks' batches are of one size.
    """
    weights = hdw_weights(losses, mask, rank_sum)
    weighted = torch.where(mask, losses * weights.unsqueeze(1), torch.zeros_like(losses))
    return weighted.sum() / losses.shape[1], weights
