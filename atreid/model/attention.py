"""What each scenario token looks at: attention rollout of the CLS tokens over the image.

Uni-AT's six CLS tokens (one per scenario: DT-ST ... AD-LT) share every block and differ
only in what they attend to. :func:`block_attentions` records each block's attention
probabilities (softmax(q k^T / sqrt(d)), averaged over heads) without changing the model:
a forward hook on each timm ``Attention`` recomputes them from the block's own input with
its own ``qkv`` projection and q/k norms (the fused SDPA kernel the model runs never
materialises them).

:func:`rollout` is attention rollout (Abnar & Zuidema, ACL 2020): per block ``0.5 A + 0.5 I``
(the residual stream carries half of each token through unchanged), rows renormalised,
multiplied from the first block to the last. Row ``i`` of the product says how much each
input token (CLS tokens and patches) contributes to token ``i`` at the end, through every
block. We draw rollout rather than the last block's CLS attention because in a pre-norm ViT
the last block attends to tokens that are already mixtures of the whole image: its CLS row
says which MIXTURES the token reads, not which image regions, and it often puts most of
its mass on the CLS tokens themselves (so little is left for the patches). Rollout follows
the mixing back to the input patches. ``method="last"`` draws the last block's row instead,
for comparison.

:func:`token_maps` returns, per CLS token, its row restricted to the patch tokens and
reshaped to the patch grid (its sum is the share of the token that comes from the image;
the rest comes from the CLS tokens' own embeddings).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Method = Literal["rollout", "last"]
METHODS = ("rollout", "last")


def _backbone(model: nn.Module) -> nn.Module:
    """The :class:`~atreid.model.vit.MultiTokenViT` of a UniAT model (or the backbone itself)."""
    return getattr(model, "base", model)


@torch.no_grad()
def block_attentions(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per block, the head-averaged attention probabilities ``(B, T, T)`` (float32) for ``images``."""
    backbone = _backbone(model)
    recorded: list[torch.Tensor] = []

    def hook(attn: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0]
        batch, tokens, _ = x.shape
        qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        logits = (q.float() * attn.scale) @ k.float().transpose(-2, -1)
        recorded.append(logits.softmax(dim=-1).mean(dim=1))

    handles = [block.attn.register_forward_hook(hook) for block in backbone.blocks]
    try:
        was_training = model.training
        model.eval()
        backbone.forward_features(images)
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return recorded


def rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout ``(B, T, T)`` of per-block ``(B, T, T)`` attentions; rows sum to one."""
    if not attentions:
        raise ValueError("no attention to roll out (a model without blocks?)")
    batch, tokens, _ = attentions[0].shape
    eye = torch.eye(tokens, dtype=torch.float64, device=attentions[0].device).expand(batch, -1, -1)
    result = eye.clone()
    for attention in attentions:
        mixed = (1.0 - residual) * attention.double() + residual * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed @ result  # later blocks act on what the earlier ones produced
    return result.float()


@torch.no_grad()
def token_maps(model: nn.Module, images: torch.Tensor, method: Method = "rollout") -> torch.Tensor:
    """``(B, ncls, grid_h, grid_w)``: each CLS token's attention over the patch grid."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; valid: {', '.join(METHODS)}")
    backbone = _backbone(model)
    attentions = block_attentions(model, images)
    mixed = rollout(attentions) if method == "rollout" else attentions[-1]
    ncls = backbone.ncls
    grid_h, grid_w = backbone.grid_size
    return mixed[:, :ncls, ncls:].reshape(len(images), ncls, grid_h, grid_w)
