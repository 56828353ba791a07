"""SAID, HDW, triplet and the criterion, pinned by hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atreid.errors import AtreidError
from atreid.losses import (UniATCriterion, batch_hard_triplet, hdw_loss, hdw_weights, head_masks,
                           identity_losses, mask_other_outfits)

# Person 0 owns outfits 0, 1; person 1 owns outfits 2, 3, 4.
OUTFIT_TO_PERSON = torch.tensor([0, 0, 1, 1, 1])


def test_mask_other_outfits_by_hand() -> None:
    logits = torch.arange(10, dtype=torch.float32).reshape(2, 5)  # [[0..4], [5..9]]
    outfit = torch.tensor([3, 0])
    masked = mask_other_outfits(logits, outfit, OUTFIT_TO_PERSON)
    # Sample 0 (outfit 3, person 1): outfits 2 and 4 of person 1 -> -10; own and person 0's kept.
    assert masked[0].tolist() == [0.0, 1.0, -10.0, 3.0, -10.0]
    # Sample 1 (outfit 0, person 0): outfit 1 -> -10.
    assert masked[1].tolist() == [5.0, -10.0, 7.0, 8.0, 9.0]
    assert logits[0, 2] == 2.0  # not in place


def test_head_masks() -> None:
    modality = torch.tensor([0, 1, 0])
    masks = head_masks(modality)
    assert masks.tolist() == [[True, False, True]] * 2 + [[False, True, False]] * 2 + [[True, True, True]] * 2


def _logits(batch: int, persons: int = 2, outfits: int = 5) -> list[torch.Tensor]:
    return [torch.zeros(batch, outfits if h % 2 == 0 else persons) for h in range(6)]


def test_said_losses_by_hand() -> None:
    # All-zero logits: CE = log(number of classes left competing).
    person, outfit, modality = torch.tensor([1, 0, 1]), torch.tensor([3, 0, 2]), torch.tensor([0, 1, 1])
    losses, mask, _ = identity_losses(_logits(3), person, outfit, modality, OUTFIT_TO_PERSON, said=True)
    # Short-term: outfit 3 and 2 -> the two other outfits of person 1 at -10, 3 classes at 0.
    st_p1 = math.log(3 + 2 * math.exp(-10))
    # outfit 0 -> outfit 1 at -10, 4 classes at 0.
    st_p0 = math.log(4 + math.exp(-10))
    lt = math.log(2)
    expected = torch.tensor([
        [st_p1, 0.0, 0.0],      # DT-ST: RGB sample 0 only
        [lt, 0.0, 0.0],         # DT-LT
        [0.0, st_p0, st_p1],    # NT-ST: IR samples 1, 2
        [0.0, lt, lt],          # NT-LT
        [st_p1, st_p0, st_p1],  # AD-ST: all
        [lt, lt, lt],           # AD-LT
    ])
    torch.testing.assert_close(losses, expected)
    assert mask.tolist() == [[True, False, False]] * 2 + [[False, True, True]] * 2 + [[True] * 3] * 2


def test_without_said_every_head_is_person_ce_on_all_samples() -> None:
    person, outfit, modality = torch.tensor([1, 0]), torch.tensor([3, 0]), torch.tensor([0, 0])
    logits = [torch.tensor([[0.0, 1.0], [2.0, 0.0]]) for _ in range(6)]
    losses, mask, correct = identity_losses(logits, person, outfit, modality, None, said=False)
    assert mask.all()
    expected = F.cross_entropy(logits[0], person, reduction="none")
    for h in range(6):
        torch.testing.assert_close(losses[h], expected)
    assert correct.all()


def test_criterion_said_sum_of_head_means_and_empty_subset() -> None:
    # Only RGB samples: the NT heads (2, 3) have an empty subset and contribute 0.
    person, outfit, modality = torch.tensor([1, 0]), torch.tensor([3, 0]), torch.tensor([0, 0])
    crit = UniATCriterion(said=True, hdw=False, triplet_margin=0.3, outfit_to_person=OUTFIT_TO_PERSON.tolist())
    loss, stats = crit(torch.zeros(2, 6, 4), _logits(2), person, outfit, modality)
    st = (math.log(3 + 2 * math.exp(-10)) + math.log(4 + math.exp(-10))) / 2
    lt = math.log(2)
    assert stats["loss_h0"] == pytest.approx(st) and stats["loss_h4"] == pytest.approx(st)
    assert stats["loss_h1"] == pytest.approx(lt) and stats["loss_h5"] == pytest.approx(lt)
    assert stats["loss_h2"] == 0.0 and stats["loss_h3"] == 0.0
    assert loss.item() == pytest.approx(2 * st + 2 * lt)
    assert all(stats[f"weight_h{h}"] == 1.0 for h in range(6))
    assert stats["loss_triplet"] == 0.0
    assert set(stats) == {f"{k}_h{h}" for k in ("loss", "weight", "acc") for h in range(6)} | {"loss_triplet"}
    assert all(isinstance(v, float) for v in stats.values())


def test_criterion_accuracy_uses_subset_and_target() -> None:
    person, outfit, modality = torch.tensor([1, 0, 1]), torch.tensor([3, 0, 2]), torch.tensor([0, 1, 1])
    logits = _logits(3)
    # NT-ST sees the IR samples 1 (top-1 = its outfit 0) and 2 (top-1 3, not its outfit 2).
    logits[2] = torch.tensor([[0, 0, 0, 9, 0], [9, 0, 0, 0, 0], [0, 0, 0, 9, 0.]])
    logits[1] = torch.tensor([[0, 9.], [9, 0], [9, 0]])  # DT-LT: RGB sample 0 right
    crit = UniATCriterion(said=True, hdw=False, outfit_to_person=OUTFIT_TO_PERSON)
    _, stats = crit(torch.zeros(3, 6, 4), logits, person, outfit, modality)
    assert stats["acc_h2"] == pytest.approx(0.5)
    assert stats["acc_h1"] == pytest.approx(1.0)


def test_hdw_weights_by_hand() -> None:
    # p = exp(-l) chosen per head (two samples each, every sample in every subset).
    p = torch.tensor([[0.2, 0.4], [0.6, 0.6], [0.9, 0.9], [0.9, 0.9], [0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    losses, mask = -p.log(), torch.ones(6, 2, dtype=torch.bool)
    # mean p: DT (0.2+0.4+0.6+0.6)/4 = 0.45, NT 0.9, AD 0.5 -> w = sqrt(.55), sqrt(.1), sqrt(.5)
    # ST (0.2+0.4+0.9+0.9+0.5+0.5)/6 = 3.4/6, LT 4.0/6 -> w = sqrt(2.6/6), sqrt(2/6)
    w_dt, w_nt, w_ad = math.sqrt(0.55), math.sqrt(0.1), math.sqrt(0.5)
    w_st, w_lt = math.sqrt(2.6 / 6), math.sqrt(2.0 / 6)
    t = [w_dt / w_dt, w_nt / w_dt, w_ad / w_dt]
    s = [w_st / w_st, w_lt / w_st]
    expected = [t[0] * s[0], t[0] * s[1], t[1] * s[0], t[1] * s[1], t[2] * s[0], t[2] * s[1]]
    # = [1, 0.877058, 0.426401, 0.373979, 0.953463, 0.836242]
    assert expected == pytest.approx([1.0, 0.877058, 0.426401, 0.373979, 0.953463, 0.836242], abs=1e-6)
    torch.testing.assert_close(hdw_weights(losses, mask), torch.tensor(expected, dtype=torch.float64))
    total, _ = hdw_loss(losses, mask)
    by_hand = sum(expected[h] * losses[h].sum().item() for h in range(6)) / 2
    assert total.item() == pytest.approx(by_hand)


def test_hdw_subsets_and_empty_group() -> None:
    # Both samples RGB: the NT group is empty -> weight 0, and only DT/AD enter the max.
    losses = -torch.tensor([[0.5, 0.7], [0.8, 0.8], [0.1, 0.1], [0.1, 0.1], [0.6, 0.6], [0.4, 0.4]]).log()
    mask = head_masks(torch.tensor([0, 0]))
    losses = torch.where(mask, losses, torch.zeros_like(losses))
    # DT mean p = (0.5+0.7+0.8+0.8)/4 = 0.7 -> sqrt(.3); AD mean (0.6+0.6+0.4+0.4)/4 = 0.5 -> sqrt(.5)
    # ST over DT-ST and AD-ST samples: (0.5+0.7+0.6+0.6)/4 = 0.6 -> sqrt(.4); LT (0.8+0.8+0.4+0.4)/4 = 0.6
    w = hdw_weights(losses, mask)
    t = [math.sqrt(0.3) / math.sqrt(0.5), 0.0, 1.0]
    expected = torch.tensor([t[0], t[0], 0.0, 0.0, t[2], t[2]])
    torch.testing.assert_close(w, expected)
    total, _ = hdw_loss(losses, mask)
    assert total.item() == pytest.approx(sum(expected[h].item() * losses[h].sum().item() for h in range(6)) / 2)


def test_hdw_gradient_flows_through_the_weights() -> None:
    losses = torch.tensor([[0.3, 1.2], [0.5, 0.1], [2.0, 0.7], [0.9, 0.4], [1.5, 0.2], [0.6, 0.8]],
                          dtype=torch.float64, requires_grad=True)
    mask = torch.ones(6, 2, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda l: hdw_loss(l, mask)[0], (losses,))
    total, weights = hdw_loss(losses, mask)
    (grad,) = torch.autograd.grad(total, losses)
    detached = weights.detach().unsqueeze(1).expand_as(losses) / 2
    assert not torch.allclose(grad, detached)


def test_hdw_all_zero_losses_stay_finite() -> None:
    losses = torch.zeros(6, 4, requires_grad=True)
    total, _ = hdw_loss(losses, torch.ones(6, 4, dtype=torch.bool))
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(losses.grad).all()


def test_criterion_hdw_weights_in_stats() -> None:
    person, outfit, modality = torch.tensor([1, 0, 1, 0]), torch.tensor([3, 0, 2, 1]), torch.tensor([0, 1, 0, 1])
    torch.manual_seed(0)
    logits = [torch.randn(4, 5 if h % 2 == 0 else 2) for h in range(6)]
    crit = UniATCriterion(said=True, hdw=True, outfit_to_person=OUTFIT_TO_PERSON)
    loss, stats = crit(torch.zeros(4, 6, 3), logits, person, outfit, modality)
    losses, mask, _ = identity_losses(logits, person, outfit, modality, OUTFIT_TO_PERSON, said=True)
    expected_total, weights = hdw_loss(losses, mask)
    assert loss.item() == pytest.approx(expected_total.item())
    assert [stats[f"weight_h{h}"] for h in range(6)] == pytest.approx(weights.tolist())
    assert max(stats[f"weight_h{h}"] for h in range(6)) == pytest.approx(1.0)


def test_batch_hard_triplet_by_hand() -> None:
    feats = torch.tensor([[0.0], [2.0], [2.5], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # Anchors: 0: pos 2, neg 2.5 -> 0; 1: pos 2, neg 0.5 -> 1.8; 2: pos 2.5, neg 0.5 -> 2.3; 3: pos 2.5, neg 3 -> 0
    assert batch_hard_triplet(feats, labels, margin=0.3).item() == pytest.approx(4.1 / 4, abs=1e-5)
    # Without sample 3, anchor 2 has only itself as positive: 0 - 0.5 + 0.3 < 0.
    mask = torch.tensor([True, True, True, False])
    assert batch_hard_triplet(feats, labels, mask, margin=0.3).item() == pytest.approx(1.8 / 3, abs=1e-5)
    # No negatives at all: 0, and finite gradients.
    f = feats.clone().requires_grad_(True)
    out = batch_hard_triplet(f, torch.zeros(4, dtype=torch.long))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(f.grad).all()


def test_criterion_triplet_switch() -> None:
    person, outfit, modality = torch.tensor([1, 0, 1, 0]), torch.tensor([3, 0, 2, 1]), torch.tensor([0, 0, 1, 1])
    tokens = torch.tensor([[0.0], [2.0], [2.5], [5.0]]).unsqueeze(1).expand(4, 6, 1)
    crit = UniATCriterion(said=False, hdw=False, triplet_margin=0.3)
    logits = [torch.zeros(4, 2) for _ in range(6)]
    off, stats_off = crit(tokens, logits, person, outfit, modality, use_triplet=False)
    on, stats_on = crit(tokens, logits, person, outfit, modality, use_triplet=True)
    expected = sum(batch_hard_triplet(tokens[:, h], person, m, 0.3) for h, m in enumerate(head_masks(modality)))
    assert stats_off["loss_triplet"] == 0.0
    assert stats_on["loss_triplet"] == pytest.approx(expected.item()) and expected.item() > 0
    assert on.item() == pytest.approx(off.item() + expected.item())


def test_criterion_checks_classifier_sizes() -> None:
    person, outfit, modality = torch.tensor([1]), torch.tensor([3]), torch.tensor([0])
    tokens = torch.zeros(1, 6, 2)
    outfit_sized, person_sized = _logits(1), [torch.zeros(1, 2)] * 6
    with pytest.raises(AtreidError, match="short-term heads must have 5 outfit classes with SAID"):
        UniATCriterion(said=True, hdw=False, outfit_to_person=OUTFIT_TO_PERSON)(
            tokens, person_sized, person, outfit, modality)
    with pytest.raises(AtreidError, match="outfit_to_person"):
        UniATCriterion(said=True, hdw=False)
    # Without SAID: outfit-sized short-term heads (the reference) or person-sized (by_loss).
    for sizing, logits in ((None, outfit_sized), (None, person_sized), ("reference", outfit_sized),
                           ("by_loss", person_sized)):
        crit = UniATCriterion(said=False, hdw=False, outfit_to_person=OUTFIT_TO_PERSON, classifier_sizing=sizing)
        crit(tokens, logits, person, outfit, modality)
    with pytest.raises(AtreidError, match=r"heads \[0, 2, 4\]\): reference sizing: short-term heads must have 5"):
        UniATCriterion(said=False, hdw=False, outfit_to_person=OUTFIT_TO_PERSON, classifier_sizing="reference")(
            tokens, person_sized, person, outfit, modality)
    with pytest.raises(AtreidError, match="by_loss sizing without SAID: short-term heads must have 2 person ids"):
        UniATCriterion(said=False, hdw=False, classifier_sizing="by_loss")(
            tokens, outfit_sized, person, outfit, modality)
    with pytest.raises(AtreidError, match=r"heads \[0, 2, 4\]"):  # 3 is neither 5 outfits nor 2 persons
        UniATCriterion(said=False, hdw=False, outfit_to_person=OUTFIT_TO_PERSON)(
            tokens, [torch.zeros(1, 3 if h % 2 == 0 else 2) for h in range(6)], person, outfit, modality)
    with pytest.raises(AtreidError, match=r"heads \[5\]"):  # long-term heads: one size (head 1's)
        UniATCriterion(said=False, hdw=False)(
            tokens, [torch.zeros(1, 3 if h == 5 else 2) for h in range(6)], person, outfit, modality)
    with pytest.raises(AtreidError, match="classifier_sizing must be one of"):
        UniATCriterion(said=False, hdw=False, classifier_sizing="loss")


def test_baseline_loss_at_zero_logits_has_reference_sizes() -> None:
    """Reference sizing, 71 outfits / 20 persons, no SAID, no HDW, zero logits: the short-term
    heads' person-id CE runs over 71 outputs, so loss = 3 ln 71 + 3 ln 20 = 21.78 (by_loss: 6 ln 20)."""
    from atreid.model import head_classes

    persons, outfits, batch = 20, 71, 4
    outfit_to_person = [min(o // 3, persons - 1) for o in range(outfits)]  # every person has outfits
    person = torch.tensor([0, 5, 19, 7])
    outfit = torch.tensor([0, 15, 70, 21])
    modality = torch.tensor([0, 1, 0, 1])
    expected = {"reference": 3 * math.log(71) + 3 * math.log(20), "by_loss": 6 * math.log(20)}
    assert expected["reference"] == pytest.approx(21.78, abs=5e-3)
    assert expected["by_loss"] == pytest.approx(17.97, abs=5e-3)
    for sizing in ("reference", "by_loss"):
        sizes = head_classes(False, persons, outfits, sizing)
        assert sizes == ([71, 20] * 3 if sizing == "reference" else [20] * 6)
        crit = UniATCriterion(said=False, hdw=False, outfit_to_person=outfit_to_person, classifier_sizing=sizing)
        loss, stats = crit(torch.zeros(batch, 6, 3), [torch.zeros(batch, c) for c in sizes], person, outfit,
                           modality)
        assert loss.item() == pytest.approx(expected[sizing], rel=1e-6)
        assert stats["loss_h0"] == pytest.approx(math.log(sizes[0]), rel=1e-6)
    # A person id target over the outfit-sized logits: the extra outputs act as negatives.
    logits = torch.zeros(1, 71)
    logits[0, 5] = 2.0
    losses, _, correct = identity_losses([logits, torch.zeros(1, 20)] * 3, torch.tensor([5]), torch.tensor([60]),
                                         torch.tensor([0]), None, said=False)
    assert losses[0, 0].item() == pytest.approx(-2.0 + math.log(math.exp(2.0) + 70), rel=1e-6)
    assert correct[0, 0] and not correct[1, 0]
