"""The Uni-AT training objective: identity losses (SAID or plain CE), HDW, optional triplet.

Switches only on flags (``said``, ``hdw``, ``use_triplet``), never on a variant name:

- identity: per-sample cross-entropy of each head (:mod:`atreid.losses.said`); without
  SAID the short-term heads keep their outfit-sized classifiers (the reference sizing)
  and take person ids as targets, the other outputs acting as extra negatives;
- without HDW: total = sum over heads of each head's mean loss over its subset;
- with HDW: total = sum of HDW-weighted per-sample losses / batch size
  (:mod:`atreid.losses.hdw`);
- triplet (when ``use_triplet``): sum over heads of the batch-hard triplet loss on the
  pre-BN tokens, heads 0/1 on RGB samples, 2/3 on IR, 4/5 on all.

Under DDP (``rank_sum`` and ``rank_gather`` set, :mod:`atreid.engine.distributed`)
every rank returns its share of the global batch's loss: the subset means and HDW's
group means divide by the global counts, and the triplet loss mines over the gathered
global batch (the same value on every rank), so the ranks' mean loss (what DDP's
gradient averaging differentiates) is the single-process loss.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from atreid.constants import CLASSIFIER_SIZINGS, LONG_TERM_HEADS, SCENARIOS, SHORT_TERM_HEADS
from atreid.errors import AtreidError
from atreid.losses.hdw import RankSum, hdw_loss
from atreid.losses.said import head_masks, identity_losses
from atreid.losses.triplet import batch_hard_triplet

NUM_HEADS = len(SCENARIOS)


class UniATCriterion(nn.Module):
    """Loss of the six heads.

    Args:
        said: scenario-aware identity loss (subsets, outfit classes with masking) instead
            of person-id cross-entropy on all samples for every head.
        hdw: hierarchical dynamic weighting of the per-sample losses.
        triplet_margin: margin of the batch-hard triplet loss (used only when
            ``forward(..., use_triplet=True)``).
        outfit_to_person: person label of every outfit class (``labels.json``); required
            with SAID. Without SAID it is optional and, when given, fixes the outfit
            count the short-term classifiers may have.
        classifier_sizing: the model's classifier sizing (``"reference"`` or
            ``"by_loss"``, :func:`atreid.model.head_classes`), checked against the
            logits; None accepts either.
        rank_sum: under DDP, a sum over ranks that gradients flow through (the trainer
            sets :func:`atreid.engine.distributed.autograd_all_reduce`); None for one
            process.
        rank_gather: under DDP, the ranks' tensors concatenated, differentiable
            (:func:`atreid.engine.distributed.autograd_all_gather`); None for one process.
    """

    def __init__(self, said: bool, hdw: bool, triplet_margin: float = 0.3,
                 outfit_to_person: Sequence[int] | torch.Tensor | None = None,
                 classifier_sizing: str | None = None, rank_sum: RankSum | None = None,
                 rank_gather: RankSum | None = None) -> None:
        super().__init__()
        self.rank_sum, self.rank_gather = rank_sum, rank_gather
        self.said, self.hdw, self.triplet_margin = bool(said), bool(hdw), float(triplet_margin)
        if classifier_sizing not in (None, *CLASSIFIER_SIZINGS):
            raise AtreidError(f"classifier_sizing must be one of {', '.join(CLASSIFIER_SIZINGS)}, "
                              f"got {classifier_sizing!r}")
        self.classifier_sizing = classifier_sizing
        if self.said and outfit_to_person is None:
            raise AtreidError("the SAID loss needs outfit_to_person (labels.json) to mask a person's other outfits")
        table = torch.as_tensor(outfit_to_person if outfit_to_person is not None else [], dtype=torch.long)
        # Not persistent: it comes from labels.json, not from training.
        self.register_buffer("outfit_to_person", table, persistent=False)

    def _check(self, logits: Sequence[torch.Tensor]) -> None:
        """Classifier sizes that fit the loss (and the classifier sizing, when given).

        Long-term heads classify person ids (P outputs). Short-term heads have one
        output per person-outfit class (C, the reference sizing, in every variant);
        with SAID they must, since their targets are outfit classes. Without SAID their
        targets are person ids, so C outputs (``reference``) and P outputs (the opt-in
        ``by_loss`` sizing) both fit; ``classifier_sizing`` picks one of them.
        """
        if len(logits) != NUM_HEADS:
            raise AtreidError(f"the criterion needs {NUM_HEADS} heads' logits, got {len(logits)}")
        sizes = [lg.shape[1] for lg in logits]
        persons = sizes[LONG_TERM_HEADS[0]]
        outfits = self.outfit_to_person.numel()
        bad = [h for h in LONG_TERM_HEADS if sizes[h] != persons]
        if self.said:
            allowed = {outfits}
            fix = f"short-term heads must have {outfits} outfit classes with SAID"
        elif self.classifier_sizing == "by_loss":
            allowed = {persons}
            fix = f"by_loss sizing without SAID: short-term heads must have {persons} person ids"
        elif self.classifier_sizing == "reference":
            allowed = {outfits} if outfits else None
            fix = f"reference sizing: short-term heads must have {outfits or 'C'} outfit classes"
        else:
            allowed = {persons, outfits} if outfits else None
            fix = (f"without SAID short-term heads must have {outfits or 'C'} outfit classes (classifier_sizing "
                   f"reference) or {persons} person ids (by_loss)")
        short = [sizes[h] for h in SHORT_TERM_HEADS]
        if allowed is None:  # outfit count unknown: equal sizes, room for the person-id targets
            allowed = {short[0]} if short[0] >= persons else set()
            fix += f" (the same number, >= the {persons} persons)"
        bad += [h for h in SHORT_TERM_HEADS if sizes[h] not in allowed]
        if bad:
            raise AtreidError(f"classifier sizes {sizes} do not fit the loss (heads {sorted(bad)}): {fix}")

    def forward(self, tokens: torch.Tensor, logits: Sequence[torch.Tensor], person: torch.Tensor,
                outfit: torch.Tensor, modality: torch.Tensor, use_triplet: bool = False
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and per-head statistics.

        Args:
            tokens: (B, 6, D) pre-BN CLS tokens.
            logits: six (B, C_h) logits.
            person: (B,) person labels.
            outfit: (B,) person-outfit labels.
            modality: (B,) 0 = RGB, 1 = IR.
            use_triplet: add the batch-hard triplet loss.

        Returns:
            ``(loss, stats)``; stats holds python floats ``loss_h{i}`` (mean identity loss
            over the head's subset, 0 if empty), ``weight_h{i}`` (HDW weight, 1 without
            HDW), ``acc_h{i}`` (top-1 accuracy on the subset, 0 if empty) and
            ``loss_triplet`` (0 when unused).
        """
        self._check(logits)
        logits = [lg.float() for lg in logits]
        losses, mask, correct = identity_losses(logits, person, outfit, modality, self.outfit_to_person, self.said)
        count = mask.sum(dim=1).clamp_min(1)
        if self.rank_sum is None:
            head_mean = losses.sum(dim=1) / count
        else:  # this rank's share of the global subset means: sum here * ranks / global count
            totals = self.rank_sum(torch.cat([mask.sum(dim=1).to(losses.dtype), losses.new_ones(1)]))
            head_mean = losses.sum(dim=1) * totals[-1] / totals[:-1].clamp_min(1)
        if self.hdw:
            total, weights = hdw_loss(losses, mask, self.rank_sum)
        else:
            total, weights = head_mean.sum(), torch.ones_like(head_mean)
        triplet = total.new_zeros(())
        if use_triplet:
            feats, ids, mods = tokens, person, modality
            if self.rank_gather is not None:  # DDP: mine over the global batch
                feats, ids, mods = (self.rank_gather(t) for t in (tokens, person, modality))
            subsets = head_masks(mods, NUM_HEADS)
            for h in range(NUM_HEADS):
                triplet = triplet + batch_hard_triplet(feats[:, h], ids, subsets[h], self.triplet_margin)
            total = total + triplet
        acc = correct.sum(dim=1) / count
        # One device-to-host copy for all statistics.
        values = torch.cat([head_mean.detach(), weights.detach(), acc.to(head_mean.dtype),
                            triplet.detach().reshape(1)]).tolist()
        stats = {f"loss_h{h}": values[h] for h in range(NUM_HEADS)}
        stats.update({f"weight_h{h}": values[NUM_HEADS + h] for h in range(NUM_HEADS)})
        stats.update({f"acc_h{h}": values[2 * NUM_HEADS + h] for h in range(NUM_HEADS)})
        stats["loss_triplet"] = values[3 * NUM_HEADS]
        return total, stats
