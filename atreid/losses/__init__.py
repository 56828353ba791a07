"""Uni-AT losses: SAID identity loss, HDW weighting, batch-hard triplet, and the criterion."""

from atreid.losses.criterion import UniATCriterion
from atreid.losses.hdw import hdw_loss, hdw_weights
from atreid.losses.said import head_masks, identity_losses, mask_other_outfits
from atreid.losses.triplet import batch_hard_triplet, euclidean_dist

__all__ = [
    "UniATCriterion",
    "batch_hard_triplet",
    "euclidean_dist",
    "hdw_loss",
    "hdw_weights",
    "head_masks",
    "identity_losses",
    "mask_other_outfits",
]
