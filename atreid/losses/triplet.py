"""Batch-hard triplet loss (Euclidean, margin 0.3) on the heads' pre-BN tokens.

Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification" (2017).
Each head uses its modality subset (heads 0/1 RGB samples, 2/3 IR, 4/5 all). Subsets
are masks over the whole batch, so no boolean indexing (and no host sync) is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def euclidean_dist(x: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances (B, B); clamped before the sqrt so the gradient at 0 is finite."""
    sq = x.pow(2).sum(dim=1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * x @ x.t()
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(feats: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                       margin: float = 0.3) -> torch.Tensor:
    """Mean over anchors of ``relu(max d(a, p) - min d(a, n) + margin)`` within ``mask``.

    Args:
        feats: (B, D) features.
        labels: (B,) identity labels.
        mask: (B,) samples that take part (all when None).
        margin: triplet margin.

    Returns:
        A scalar; 0 when no anchor in the subset has a negative.
    """
    batch = feats.shape[0]
    if mask is None:
        mask = torch.ones(batch, dtype=torch.bool, device=feats.device)
    dist = euclidean_dist(feats.float())
    pair = mask.unsqueeze(0) & mask.unsqueeze(1)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    pos, neg = pair & same, pair & ~same
    hardest_pos = torch.where(pos, dist, torch.full_like(dist, float("-inf"))).amax(dim=1)
    hardest_neg = torch.where(neg, dist, torch.full_like(dist, float("inf"))).amin(dim=1)
    anchors = mask & neg.any(dim=1)
    gap = torch.where(anchors, hardest_pos - hardest_neg, torch.zeros_like(hardest_pos))
    loss = torch.where(anchors, F.relu(gap + margin), torch.zeros_like(gap))
    return loss.sum() / anchors.sum().clamp_min(1)
