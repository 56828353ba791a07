"""Vision Transformer backbone of Uni-AT: several CLS tokens, strided patches, MoAE FFNs.

Paper: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(AT-ReID, IJCAI 2025, arXiv 2509.16635); ViT: Dosovitskiy et al., "An Image is Worth
16x16 Words" (ICLR 2021).

Built from timm's blocks (``Block`` with its ``Attention`` -- fused SDPA when available --,
``DropPath``, ``LayerNorm``); only the patch embedding is our own because timm's has no
stride option (overlapping patches need stride < patch size). Parameter names follow
timm's ViT (``patch_embed.proj``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.mlp.fc1``,
``norm``) so timm and reference checkpoints map onto them key by key.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from timm.layers import LayerNorm, to_2tuple, trunc_normal_
from timm.models.vision_transformer import Block

from atreid.model.moae import MoAE


class PatchEmbed(nn.Module):
    """Image to patch tokens with a strided convolution (kernel = patch, stride = patch stride).

    Args:
        img_size: input (height, width); the grid is fixed by it because the position
            embedding is.
        patch_size: square patch (conv kernel) size.
        stride: step between patches; ``stride < patch_size`` gives overlapping patches.
        in_chans: image channels.
        embed_dim: token width.
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int = 16, stride: int = 16, in_chans: int = 3,
                 embed_dim: int = 768) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size, self.stride = patch_size, stride
        self.grid_size = tuple((s - patch_size) // stride + 1 for s in self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} != model image size {self.img_size}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, gh, gw) -> (B, gh*gw, C), row-major


class MultiTokenViT(nn.Module):
    """ViT with ``ncls`` prepended CLS tokens and MoAE feed-forward layers.

    Args:
        img_size: input (height, width).
        patch_size: patch (conv kernel) size.
        patch_stride: patch stride; grid = floor((H - p) / s) + 1 by floor((W - p) / s) + 1.
        in_chans: image channels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_hidden: FFN hidden width.
        ncls: CLS tokens (position embedding has ``ncls + num_patches`` rows).
        moae: attribute experts for the CLS tokens (needs ``ncls == 6``).
        gate: MoAE gate, ``"hard"`` or ``"soft"`` (see :class:`MoAE`).
        drop_path_rate: stochastic depth of the last block; linear from 0 at the first.
        qkv_bias: bias in the fused q, k, v projection (ViT-B/16 has one).
    """

    def __init__(
            self,
            img_size: tuple[int, int] = (256, 128),
            patch_size: int = 16,
            patch_stride: int = 16,
            in_chans: int = 3,
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            mlp_hidden: int = 3072,
            ncls: int = 1,
            moae: bool = False,
            gate: str = "hard",
            drop_path_rate: float = 0.,
            qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim, self.depth, self.ncls = embed_dim, depth, ncls
        norm_layer = partial(LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size, patch_size, patch_stride, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, ncls, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, ncls + self.patch_embed.num_patches, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        mlp_layer = partial(MoAE, ncls=ncls, moae=moae, gate=gate)
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_hidden / embed_dim, qkv_bias=qkv_bias, drop_path=rate,
                  act_layer=nn.GELU, norm_layer=norm_layer, mlp_layer=mlp_layer)
            for rate in rates])
        if self.blocks[0].mlp.hidden_features != mlp_hidden:
            raise ValueError(f"mlp_hidden {mlp_hidden} is not a width timm's Block can express for dim {embed_dim}")
        self.norm = norm_layer(embed_dim)
        self.moae = self.blocks[0].mlp.moae
        self.init_weights()

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.patch_embed.grid_size

    @torch.no_grad()
    def init_weights(self) -> None:
        """The released code's random init (what ``pretrained: none`` trains from).

        - CLS tokens: zeros (never re-initialised); position embedding: truncated
          normal, std 0.02;
        - every Linear (qkv, attention proj, fc1/fc2, each MoAE atom and gate, drawn
          independently): truncated normal, std 0.02, bias 0; LayerNorm: weight 1,
          bias 0; the patch convolution keeps PyTorch's default init;
        - then :meth:`rescale_output_layers`.

        Loading pretrained weights overwrites all of it (the gates excepted).
        """
        nn.init.zeros_(self.cls_token)
        trunc_normal_(self.pos_embed, std=.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, MoAE):
                module.reset_expert_parameters()
        self.rescale_output_layers()

    @torch.no_grad()
    def rescale_output_layers(self) -> None:
        """Divide block ``l``'s (1-based) output layers by ``sqrt(2 l)``, as the released code does.

        The attention projection once; the FFN output layer of every expert in the
        block's expert list once per expert (:meth:`MoAE.rescale_output_layers`: the
        shared ``fc2`` once, each out-atom five times).
        """
        for layer_id, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            block.mlp.rescale_output_layers(layer_id)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.blocks(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> all tokens (B, ncls + num_patches, D) after the final norm."""
        return self.norm(self._blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the CLS tokens (B, ncls, D) after the final norm."""
        # LayerNorm is per token: normalising only the CLS tokens gives the same values.
        return self.norm(self._blocks(x)[:, :self.ncls])
