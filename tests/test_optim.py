"""Parameter groups (10x lr, no weight decay, frozen params) and the lr schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from atreid.engine.optim import build_optimizer, lr_factor, parameter_groups, set_epoch_lr

PAPER = {"optimizer": "sgd", "lr": 0.008, "momentum": 0.9, "weight_decay": 5e-4, "large_lr_factor": 10,
         "epochs": 120, "warmup_epochs": 10, "warmup_factor": 0.1, "min_lr_factor": 0.002}


class Toy(nn.Module):
    """ViT-like naming: pos_embed/cls_token, blocks.{i}, norm, necks with a frozen bias, classifiers."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.cls_token = nn.Parameter(torch.zeros(1, 2, 4))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)) for _ in range(3))
        self.norm = nn.LayerNorm(4)
        self.necks = nn.ModuleList(nn.BatchNorm1d(4) for _ in range(2))
        for neck in self.necks:
            neck.bias.requires_grad_(False)
        self.classifiers = nn.ModuleList(nn.Linear(4, 5, bias=False) for _ in range(2))

    def no_weight_decay(self) -> set[str]:
        names = {"pos_embed", "cls_token", "norm.weight", "norm.bias"}
        names |= {f"blocks.{i}.0.{p}" for i in range(3) for p in ("weight", "bias")}
        return names

    def large_lr_parameter_names(self) -> set[str]:
        names = {n for n, _ in self.named_parameters()
                 if n.startswith(("blocks.2.", "norm.", "necks.", "classifiers."))}
        return names


def group_of(groups, name):
    matches = [g for g in groups if name in g["names"]]
    assert len(matches) <= 1
    return matches[0] if matches else None


def test_parameter_groups():
    model = Toy()
    groups = parameter_groups(model, lr=0.008, weight_decay=5e-4, large_lr_factor=10)
    assert len(groups) == 4
    expect = {
        "pos_embed": (1, 0.0), "cls_token": (1, 0.0), "blocks.0.0.weight": (1, 0.0), "blocks.0.1.weight": (1, 5e-4),
        "blocks.1.1.bias": (1, 5e-4), "blocks.2.1.weight": (10, 5e-4), "blocks.2.0.bias": (10, 0.0),
        "norm.weight": (10, 0.0), "necks.0.weight": (10, 5e-4), "classifiers.1.weight": (10, 5e-4),
    }
    for name, (scale, wd) in expect.items():
        group = group_of(groups, name)
        assert group["lr_scale"] == scale and group["lr"] == pytest.approx(0.008 * scale), name
        assert group["weight_decay"] == wd, name
    # Frozen BN biases are in no group; every trainable parameter is in exactly one.
    assert group_of(groups, "necks.0.bias") is None and group_of(groups, "necks.1.bias") is None
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(n for g in groups for n in g["names"]) == sorted(trainable)


def test_build_optimizer_sgd_and_adamw():
    model = Toy()
    sgd = build_optimizer(model, PAPER)
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in sgd.param_groups)
    adamw = build_optimizer(model, {**PAPER, "optimizer": "adamw"})
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups) == 4


def test_unknown_names_are_an_error():
    model = Toy()
    model.no_weight_decay = lambda: {"nope"}
    with pytest.raises(ValueError, match="nope"):
        parameter_groups(model, lr=1.0, weight_decay=0.0, large_lr_factor=10)


def test_paper_schedule_all_120_epochs():
    model = Toy()
    optimizer = build_optimizer(model, PAPER)
    for epoch in range(1, 121):
        if epoch <= 10:
            expected = 0.1 + 0.9 * (epoch - 1) / 9
        else:
            expected = 0.998 * (1 + math.cos(math.pi * (epoch - 10) / 110)) / 2 + 0.002
        assert lr_factor(epoch, epochs=120, warmup_epochs=10, warmup_factor=0.1,
                         min_lr_factor=0.002) == pytest.approx(expected, abs=1e-12)
        base = set_epoch_lr(optimizer, epoch, PAPER)
        assert base == pytest.approx(0.008 * expected, abs=1e-15)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(0.008 * expected * group["lr_scale"], abs=1e-15)
    assert lr_factor(1, **{k: PAPER[k] for k in ("epochs", "warmup_epochs", "warmup_factor",
                                                 "min_lr_factor")}) == pytest.approx(0.1)
    assert lr_factor(10, epochs=120, warmup_epochs=10, warmup_factor=0.1, min_lr_factor=0.002) == 1.0
    assert lr_factor(120, epochs=120, warmup_epochs=10, warmup_factor=0.1,
                     min_lr_factor=0.002) == pytest.approx(0.002)


def test_schedule_edge_cases():
    kw = dict(warmup_factor=0.1, min_lr_factor=0.0)
    assert lr_factor(1, epochs=5, warmup_epochs=0, **kw) == pytest.approx((1 + math.cos(math.pi / 5)) / 2)
    assert lr_factor(1, epochs=5, warmup_epochs=1, **kw) == 1.0
    assert lr_factor(3, epochs=3, warmup_epochs=3, **kw) == 1.0
    with pytest.raises(ValueError):
        lr_factor(0, epochs=5, warmup_epochs=1, **kw)


def test_groups_of_the_uniat_model():
    from atreid.model import build_model

    model = build_model("vit_tiny_uniat", ncls=6, moae=True, num_persons=4, num_outfits=8, img_size=(64, 32))
    groups = parameter_groups(model, lr=0.008, weight_decay=5e-4, large_lr_factor=10)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    depth = len(model.base.blocks)
    for name in scale:
        large = name.startswith((f"base.blocks.{depth - 2}.", f"base.blocks.{depth - 1}.", "base.norm.",
                                 "bottleneck.", "classifier."))
        assert scale[name] == (10 if large else 1), name
    assert decay["base.pos_embed"] == decay["base.cls_token"] == decay["base.norm.weight"] == 0.0
    assert decay["base.blocks.0.norm1.bias"] == 0.0 and decay["base.blocks.0.attn.qkv.weight"] == 5e-4
    assert decay["classifier.0.weight"] == 5e-4
    assert not any(n.startswith("bottleneck.") and n.endswith(".bias") for n in scale)  # frozen


# ---- MoAE gates under weight decay (hard gate) ---------------------------------------------
def _train_gates(train: dict, epochs: int = 3, steps: int = 2):
    """Train a tiny hard-gate Uni-AT with the trainer's own step; return the gates before and
    after and the lr every step used, per group scale."""
    from atreid.engine.trainer import train_step
    from atreid.losses import UniATCriterion
    from atreid.model import build_model

    torch.manual_seed(0)
    model = build_model("vit_tiny_uniat", ncls=6, moae=True, num_persons=4, num_outfits=8, img_size=(64, 32),
                        drop_path_rate=0.0, gate="hard")
    optimizer = build_optimizer(model, train)
    outfit_to_person = [0, 0, 1, 1, 2, 2, 3, 3]
    criterion = UniATCriterion(said=True, hdw=True, outfit_to_person=outfit_to_person)
    gates = {i: model.base.blocks[i].mlp.gate for i in range(4)}
    before = {i: g.detach().clone() for i, g in gates.items()}
    lrs = {1.0: [], float(train["large_lr_factor"]): []}
    gen = torch.Generator().manual_seed(1)
    for epoch in range(1, epochs + 1):
        set_epoch_lr(optimizer, epoch, train)
        for _ in range(steps):
            images = torch.randn(8, 3, 64, 32, generator=gen)
            outfit = torch.randint(0, 8, (8,), generator=gen)
            person = torch.tensor(outfit_to_person)[outfit]
            modality = torch.tensor([0, 1] * 4)
            train_step(model, criterion, optimizer, images, person, outfit, modality, dev=torch.device("cpu"),
                       use_amp=False, use_triplet=False, clip=train.get("clip_grad_norm", 20.0))
            for group in optimizer.param_groups:
                if group["weight_decay"] > 0:
                    lrs[group["lr_scale"]].append(group["lr"])
            for g in gates.values():  # exact-zero gradients, present every step
                assert g.grad is not None and torch.count_nonzero(g.grad) == 0
    return before, {i: g.detach().clone() for i, g in gates.items()}, lrs, optimizer


def _standalone(optimizer_cls, start: torch.Tensor, lrs: list[float], **kwargs) -> torch.Tensor:
    """What torch.optim does to a lone tensor whose gradient is zero at every step."""
    p = start.clone().requires_grad_(True)
    opt = optimizer_cls([p], lr=lrs[0], **kwargs)
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.zeros_like(p)
        opt.step()
    return p.detach()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_hard_gate_weights_decay_like_the_reference_sgd(momentum: float) -> None:
    """Under the hard gate the gates' gradient is zero (the reference's: rounding noise), so
    the recipe's SGD shrinks them by weight decay alone: w * prod(1 - lr_t * wd) without
    momentum, and what torch.optim.SGD does to a zero-gradient tensor with Nesterov momentum.
    Block 0 has the base lr, block 3 (last two blocks of 4) the 10x lr."""
    train = {**PAPER, "momentum": momentum, "lr": 0.5, "epochs": 3, "warmup_epochs": 2, "clip_grad_norm": 20.0}
    before, after, lrs, optimizer = _train_gates(train)
    groups = {n: g for g in optimizer.param_groups for n in g["names"]}
    assert groups["base.blocks.0.mlp.gate"]["lr_scale"] == 1 and groups["base.blocks.3.mlp.gate"]["lr_scale"] == 10
    assert groups["base.blocks.0.mlp.gate"]["weight_decay"] == groups["base.blocks.3.mlp.gate"]["weight_decay"] == 5e-4
    assert len(lrs[1.0]) == len(lrs[10.0]) == 6 and lrs[10.0][0] == pytest.approx(10 * lrs[1.0][0])
    for block, scale in ((0, 1.0), (3, 10.0)):
        if momentum == 0:
            factor = math.prod(1 - lr * 5e-4 for lr in lrs[scale])
            torch.testing.assert_close(after[block], before[block] * factor, rtol=1e-6, atol=0)
        expected = _standalone(torch.optim.SGD, before[block], lrs[scale], momentum=momentum,
                               nesterov=momentum > 0, weight_decay=5e-4)
        assert torch.equal(after[block], expected), block
        assert (after[block].abs() < before[block].abs()).all()  # it did shrink
    shrink = [(after[b].norm() / before[b].norm()).item() for b in (0, 3)]
    assert shrink[1] < shrink[0] < 1  # 10x lr: 10x faster decay


def test_hard_gate_weights_decay_under_adamw() -> None:
    train = {**PAPER, "optimizer": "adamw", "lr": 0.5, "epochs": 2, "warmup_epochs": 1}
    before, after, lrs, _ = _train_gates(train, epochs=2)
    for block, scale in ((0, 1.0), (3, 10.0)):
        expected = _standalone(torch.optim.AdamW, before[block], lrs[scale], weight_decay=5e-4)
        assert torch.equal(after[block], expected), block
        torch.testing.assert_close(after[block], before[block] * math.prod(1 - lr * 5e-4 for lr in lrs[scale]))
