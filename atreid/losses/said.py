"""SAID: the scenario-aware identity loss (the paper's L^s_id).

Per head ``h`` (scenario order DT-ST, DT-LT, NT-ST, NT-LT, AD-ST, AD-LT):

- sample subset: DT heads see only RGB samples, NT heads only IR samples, AD heads all;
- long-term heads: cross-entropy on the person id;
- short-term heads: cross-entropy on the person-outfit class, with the logits of the
  SAME person's OTHER outfits set to -10, so a person's other clothes are not pushed
  away as negatives (they are the same identity).

Without SAID (the baseline) every head uses person-id cross-entropy on all samples. The
short-term classifiers keep one output per person-outfit class even then (the reference
sizing, :func:`atreid.model.head_classes`): person ids 0..P-1 are the targets and the
other outputs only act as extra negatives.
Losses are returned per sample as dense (6, B) tensors with a (6, B) subset mask, so the
caller reduces them without boolean indexing (no host sync on GPU).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from atreid.constants import IR, RGB, SCENARIOS, SHORT_TERM_HEADS

# The modality each head trains on (None = both): DT = visible, NT = infrared, AD = cross.
HEAD_MODALITY: tuple[int | None, ...] = tuple({"DT": RGB, "NT": IR, "AD": None}[s[:2]] for s in SCENARIOS)
# Value the reference writes into the logits of a person's other outfits.
OTHER_OUTFIT_LOGIT = -10.0


def head_masks(modality: torch.Tensor, num_heads: int = len(SCENARIOS)) -> torch.Tensor:
    """(num_heads, B) bool: which samples each head's SAID subset holds."""
    rows = [torch.ones_like(modality, dtype=torch.bool) if m is None else modality == m
            for m in HEAD_MODALITY[:num_heads]]
    return torch.stack(rows)


def mask_other_outfits(logits: torch.Tensor, outfit: torch.Tensor, outfit_to_person: torch.Tensor,
                       value: float = OTHER_OUTFIT_LOGIT) -> torch.Tensor:
    """Set the logits of each sample's person's OTHER outfit classes to ``value``.

    Args:
        logits: (B, C) person-outfit logits.
        outfit: (B,) the samples' outfit classes.
        outfit_to_person: (C,) person label of every outfit class.
        value: the replacement logit (-10 in the reference).
    """
    person = outfit_to_person[outfit]
    same_person = outfit_to_person.unsqueeze(0) == person.unsqueeze(1)
    own = torch.arange(logits.shape[1], device=logits.device).unsqueeze(0) == outfit.unsqueeze(1)
    return logits.masked_fill(same_person & ~own, value)


def identity_losses(logits: Sequence[torch.Tensor], person: torch.Tensor, outfit: torch.Tensor,
                    modality: torch.Tensor, outfit_to_person: torch.Tensor | None, said: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample identity losses of the six heads.

    Args:
        logits: six (B, C_h) logit tensors.
        person: (B,) person labels.
        outfit: (B,) person-outfit labels.
        modality: (B,) 0 = RGB, 1 = IR.
        outfit_to_person: (C,) person label of each outfit class (needed with SAID).
        said: SAID subsets and targets; otherwise person-id CE on all samples (over each
            head's logits, whatever their number, as long as it is >= the person count).

    Returns:
        ``(losses, mask, correct)``, each (6, B): per-sample cross-entropy (0 outside the
        subset), the subset mask, and whether the head's top-1 class is the target
        (computed on the unmasked logits).
    """
    num_heads = len(logits)
    if said:
        mask = head_masks(modality, num_heads)
    else:
        mask = torch.ones(num_heads, person.shape[0], dtype=torch.bool, device=person.device)
    losses, correct = [], []
    for h, lg in enumerate(logits):
        short_term = said and h in SHORT_TERM_HEADS
        target = outfit if short_term else person
        used = mask_other_outfits(lg, outfit, outfit_to_person) if short_term else lg
        loss = F.cross_entropy(used, target, reduction="none")
        losses.append(torch.where(mask[h], loss, torch.zeros_like(loss)))
        correct.append(lg.argmax(dim=1) == target)
    return torch.stack(losses), mask, torch.stack(correct) & mask
