"""Optimiser parameter groups and the per-epoch learning-rate schedule of the recipe.

Groups: ``large_lr_factor`` x lr for the parameters named by
``model.large_lr_parameter_names()`` (last two blocks, final norm, BN necks,
classifiers) and no weight decay for ``model.no_weight_decay()`` (position embedding,
CLS tokens, LayerNorms) -- four groups (base/large x decay/no-decay), empty ones
dropped. Frozen parameters (``requires_grad=False``, e.g. the BN necks' bias) are left
out. Each group stores its multiplier as ``lr_scale`` so the schedule can set
``lr = base_lr * lr_scale * factor(epoch)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from atreid.errors import AtreidError


def _name_set(model: nn.Module, method: str) -> set[str]:
    getter = getattr(model, method, None)
    return set(getter()) if callable(getter) else set()


def parameter_groups(model: nn.Module, *, lr: float, weight_decay: float,
                     large_lr_factor: float) -> list[dict[str, Any]]:
    """The (up to) four parameter groups of the recipe, each with ``names`` and ``lr_scale``."""
    no_decay = _name_set(model, "no_weight_decay")
    large = _name_set(model, "large_lr_parameter_names")
    names = {name for name, _ in model.named_parameters()}
    unknown = (no_decay | large) - names
    if unknown:
        raise ValueError(f"optimiser group names not in the model: {sorted(unknown)[:5]}")
    buckets: dict[tuple[bool, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (name in large, name in no_decay)
        if key not in buckets:
            scale = large_lr_factor if key[0] else 1.0
            buckets[key] = {"params": [], "names": [], "lr_scale": float(scale), "lr": lr * scale,
                            "weight_decay": 0.0 if key[1] else float(weight_decay)}
        buckets[key]["params"].append(param)
        buckets[key]["names"].append(name)
    # Fixed group order (base/decay, base/no-decay, large/decay, large/no-decay): the
    # optimiser state of a checkpoint maps onto the same groups when resumed.
    return [buckets[k] for k in sorted(buckets)]


def build_optimizer(model: nn.Module, train: dict[str, Any], *, fused: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW over :func:`parameter_groups` of ``model``.

    Args:
        model: the unwrapped model (names as in ``model.named_parameters()``).
        train: the ``train`` section of the resolved variant settings.
        fused: use the fused CUDA kernels (CUDA only).
    """
    groups = parameter_groups(model, lr=train["lr"], weight_decay=train["weight_decay"],
                              large_lr_factor=train["large_lr_factor"])
    if not groups:
        raise AtreidError("the model has no trainable parameters")
    kwargs: dict[str, Any] = {"fused": True} if fused else {}
    name = train["optimizer"]
    if name == "sgd":
        momentum = float(train.get("momentum", 0.9))
        return torch.optim.SGD(groups, lr=train["lr"], momentum=momentum, nesterov=momentum > 0, **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=train["lr"], **kwargs)
    raise AtreidError(f"unknown train.optimizer {name!r}; valid: adamw, sgd")


def lr_factor(epoch: int, *, epochs: int, warmup_epochs: int, warmup_factor: float, min_lr_factor: float) -> float:
    """Multiplier of the base lr in (1-based) ``epoch``; set once per epoch.

    With f = warmup_factor, W = warmup_epochs, E = epochs, m = min_lr_factor:

    - warm-up, 1 <= e <= W: ``f + (1 - f) * (e - 1) / (W - 1)`` -- epoch 1 trains at
      f x lr and epoch W at exactly 1 x lr (the reference's formula; W = 1 gives 1 x);
    - afterwards: ``(1 - m) * (1 + cos(pi * (e - W) / (E - W))) / 2 + m`` -- continuous
      with the warm-up (1 at e = W) and reaching m at the last epoch e = E.

    The recipe (E=120, W=10, f=0.1, m=0.002) gives 0.1, 0.2, ..., 1.0 for epochs 1-10,
    then ``0.998 * (1 + cos(pi * (e - 10) / 110)) / 2 + 0.002``.
    """
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}")
    if epoch <= warmup_epochs:
        if warmup_epochs == 1:
            return 1.0
        return warmup_factor + (1.0 - warmup_factor) * ((epoch - 1) / (warmup_epochs - 1))
    if epochs <= warmup_epochs:
        return 1.0
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return (1.0 - min_lr_factor) * (1.0 + math.cos(math.pi * progress)) / 2.0 + min_lr_factor


def set_epoch_lr(optimizer: torch.optim.Optimizer, epoch: int, train: dict[str, Any]) -> float:
    """Set every group's lr for ``epoch``; returns the base (1x) lr."""
    lr = train["lr"] * lr_factor(epoch, epochs=train["epochs"], warmup_epochs=train["warmup_epochs"],
                                 warmup_factor=train["warmup_factor"], min_lr_factor=train["min_lr_factor"])
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
