"""Uni-AT: the multi-token ViT with MoAE plus six BN-neck heads, and the registry of archs.

Paper: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(AT-ReID, IJCAI 2025, arXiv 2509.16635).

Head ``h`` serves scenario ``SCENARIOS[h]`` (DT-ST, DT-LT, NT-ST, NT-LT, AD-ST, AD-LT):
a BatchNorm1d neck (frozen zero bias) and a bias-free linear classifier. Module names
(``base``, ``bottleneck.{h}``, ``classifier.{h}``) are the reference checkpoint's, so its
keys map onto ours with only the MoAE atoms and gates restacked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atreid.constants import CLASSIFIER_SIZINGS, SCENARIOS, SHORT_TERM_HEADS
from atreid.errors import AtreidError
from atreid.model.moae import GATES
from atreid.model.vit import MultiTokenViT

NUM_HEADS = len(SCENARIOS)


@dataclass(frozen=True)
class ArchConfig:
    """Backbone hyper-parameters of a registered arch.

    Image size and patch stride are chosen per run; ``default_img_size`` is the input the
    arch is meant for (256x128 for ViT-B/16 as published, 128x64 for the CPU demo).
    """

    depth: int
    embed_dim: int
    num_heads: int
    mlp_hidden: int
    patch_size: int
    default_img_size: tuple[int, int]
    # The timm model whose weights file ``model.pretrained`` names, and the arguments that
    # give it this arch's shape where timm's defaults for that name differ (pairs).
    timm_name: str = "vit_base_patch16_224.orig_in21k_ft_in1k"
    timm_overrides: tuple[tuple[str, object], ...] = ()

    def timm_kwargs(self, image_size: tuple[int, int] | None = None) -> dict:
        """``timm.create_model`` arguments for this arch's weights file.

        ``image_size=None``: a published file, at timm's own input size (ViT-B/16 at
        224x224; the position embedding is resized to our grid on conversion). A size: a
        file of the pipeline's pretraining stage, made and read at the run's image size,
        so nothing is resampled.
        """
        kwargs = dict(self.timm_overrides)
        if image_size is not None:
            kwargs["img_size"] = (int(image_size[0]), int(image_size[1]))
        return kwargs


_ARCHS: dict[str, ArchConfig] = {}


def register_arch(name: str, config: ArchConfig) -> None:
    """Add a named backbone configuration to the registry."""
    if name in _ARCHS:
        raise ValueError(f"arch {name!r} is already registered")
    _ARCHS[name] = config


def list_archs() -> list[str]:
    """Registered arch names, sorted."""
    return sorted(_ARCHS)


def get_arch(name: str) -> ArchConfig:
    """The configuration of ``name``; unknown names raise an error listing the valid ones."""
    if name not in _ARCHS:
        raise AtreidError(f"unknown model arch {name!r}; valid archs: {', '.join(list_archs())}")
    return _ARCHS[name]


def head_classes(said: bool, num_persons: int, num_outfits: int, sizing: str = "reference") -> list[int]:
    """Classifier sizes of the six heads.

    ``"reference"`` (the released code, which produced the published numbers): the
    short-term heads (0, 2, 4) always have one output per person-outfit class and the
    long-term heads one per person id, whatever the loss. Without SAID (baseline,
    ncls1) the short-term heads are then trained with person-id targets (0..P-1) over
    their outfit-sized logits; the other outputs only act as extra negatives.

    ``"by_loss"`` (an opt-in deviation): the sizes follow the loss -- as above with
    SAID, but every head classifies person ids without it.
    """
    if sizing not in CLASSIFIER_SIZINGS:
        raise AtreidError(f"model classifier_sizing must be one of {', '.join(CLASSIFIER_SIZINGS)}, got {sizing!r}")
    if sizing == "by_loss" and not said:
        return [num_persons] * NUM_HEADS
    return [num_outfits if h in SHORT_TERM_HEADS else num_persons for h in range(NUM_HEADS)]


class UniAT(nn.Module):
    """Backbone + six heads.

    ``forward`` in training mode returns ``(tokens, logits)``: the pre-BN CLS tokens
    (B, 6, D) (with ``ncls == 1`` the single token repeated for the six heads) and a list of
    six (B, classes_h) logits. In eval mode it returns the post-BN features (B, 6, D).

    Args:
        arch: registered arch name (recorded, and used for messages).
        config: its backbone configuration.
        ncls: CLS tokens, 1 or 6.
        moae: attribute experts (only effective with ``ncls == 6``; ``self.moae`` says
            whether they are built).
        classes: classifier size of each of the six heads (see :func:`head_classes`).
        num_persons: person ids in training.
        num_outfits: person-outfit classes in training.
        img_size: input (height, width).
        patch_stride: patch stride (16 = non-overlapping for patch 16).
        drop_path_rate: stochastic depth of the last block (linear from 0).
        gate: MoAE gate, ``"hard"`` (published) or ``"soft"``.
        classifier_sizing: how ``classes`` was chosen (recorded; see :func:`head_classes`).
    """

    def __init__(self, arch: str, config: ArchConfig, *, ncls: int, moae: bool, classes: list[int],
                 num_persons: int, num_outfits: int, img_size: tuple[int, int], patch_stride: int,
                 drop_path_rate: float, gate: str, classifier_sizing: str = "reference") -> None:
        super().__init__()
        self.arch, self.ncls, self.gate = arch, ncls, gate
        self.classifier_sizing = classifier_sizing
        self.embed_dim = config.embed_dim
        self.num_persons, self.num_outfits = num_persons, num_outfits
        self.head_classes = list(classes)
        self.base = MultiTokenViT(
            img_size=img_size, patch_size=config.patch_size, patch_stride=patch_stride,
            embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
            mlp_hidden=config.mlp_hidden, ncls=ncls, moae=moae, gate=gate, drop_path_rate=drop_path_rate)
        self.moae = self.base.moae
        self.bottleneck = nn.ModuleList(nn.BatchNorm1d(config.embed_dim) for _ in range(NUM_HEADS))
        self.classifier = nn.ModuleList(nn.Linear(config.embed_dim, c, bias=False) for c in self.head_classes)
        self.init_heads()

    @torch.no_grad()
    def init_heads(self) -> None:
        """BNNeck init: weight ~ N(1, 0.01), bias 0 and frozen; classifier weight ~ N(0, 0.001)."""
        for bn in self.bottleneck:
            nn.init.normal_(bn.weight, 1.0, 0.01)
            nn.init.zeros_(bn.bias)
            # BNNeck: no learned shift, so the features stay centred for the cosine distance.
            bn.bias.requires_grad_(False)
        for fc in self.classifier:
            nn.init.normal_(fc.weight, 0.0, 0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        tokens = self.base(x)
        if self.ncls == 1:
            tokens = tokens.expand(-1, NUM_HEADS, -1)
        feats = [bn(tokens[:, h]) for h, bn in enumerate(self.bottleneck)]
        if not self.training:
            return torch.stack(feats, dim=1)
        return tokens, [fc(f) for fc, f in zip(self.classifier, feats)]

    def no_weight_decay(self) -> set[str]:
        """Position embedding, CLS tokens and every LayerNorm parameter (the recipe's no-decay set)."""
        names = {"base.pos_embed", "base.cls_token"}
        for module_name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                names.update(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
        return names

    def large_lr_parameter_names(self) -> set[str]:
        """The last two blocks, the final norm, the BN necks and the classifiers (10x lr in the recipe)."""
        depth = self.base.depth
        prefixes = tuple(f"base.blocks.{i}." for i in range(max(depth - 2, 0), depth))
        prefixes += ("base.norm.", "bottleneck.", "classifier.")
        return {name for name, _ in self.named_parameters() if name.startswith(prefixes)}

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, ncls={self.ncls}, moae={self.moae}, gate={self.gate!r}, "
                f"head_classes={self.head_classes}, classifier_sizing={self.classifier_sizing!r}")


def build_model(arch: str, *, ncls: int, moae: bool, num_persons: int, num_outfits: int,
                img_size: tuple[int, int] = (256, 128), patch_stride: int = 16, drop_path_rate: float = 0.1,
                gate: str = "hard", said: bool = True, classifier_sizing: str = "reference") -> UniAT:
    """Build an (untrained, randomly initialised) Uni-AT model.

    Args:
        arch: a registered name (:func:`list_archs`): ``vit_base_uniat``, ``vit_tiny_uniat``.
        ncls: CLS tokens: 6 (one per scenario) or 1 (unified embedding).
        moae: attribute experts in every block (used only with ``ncls == 6``; with
            ``ncls == 1`` the model is a plain ViT and ``model.moae`` is False).
        num_persons: person ids in training (long-term heads' classes).
        num_outfits: person-outfit classes in training (short-term heads' classes).
        img_size: input (height, width).
        patch_stride: patch stride, 1 .. patch size.
        drop_path_rate: stochastic depth, linear 0 -> rate over the blocks.
        gate: ``"hard"`` (top-1, published) or ``"soft"``.
        said: the loss switch; it sizes the classifiers only with
            ``classifier_sizing="by_loss"`` (then all six heads classify ``num_persons``
            without SAID).
        classifier_sizing: ``"reference"`` (default, the released code: heads 0, 2, 4
            always classify ``num_outfits`` classes, heads 1, 3, 5 ``num_persons``) or
            ``"by_loss"`` (see :func:`head_classes`).

    Raises:
        AtreidError: unknown arch or an invalid option.
    """
    config = get_arch(arch)
    img_size = tuple(int(s) for s in img_size)
    if ncls not in (1, NUM_HEADS):
        raise AtreidError(f"ncls must be 1 or {NUM_HEADS}, got {ncls}")
    if gate not in GATES:
        raise AtreidError(f"model gate must be one of {', '.join(GATES)}, got {gate!r}")
    if num_persons < 1 or num_outfits < 1:
        raise AtreidError(f"need at least one person and one outfit class, got {num_persons} and {num_outfits}")
    if len(img_size) != 2 or min(img_size) < config.patch_size:
        raise AtreidError(f"image size {img_size} must be (height, width), each >= the patch size "
                          f"{config.patch_size} of {arch}")
    if not 1 <= patch_stride <= config.patch_size:
        raise AtreidError(f"patch_stride must be in 1..{config.patch_size} for {arch}, got {patch_stride}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise AtreidError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    classes = head_classes(said, num_persons, num_outfits, classifier_sizing)
    if num_outfits < num_persons and not (classifier_sizing == "by_loss" and not said):
        # Short-term heads take person ids 0..P-1 as targets without SAID (and every
        # person owns at least one outfit), so they need at least P outputs.
        raise AtreidError(f"{num_outfits} outfit classes for {num_persons} persons: every person has at least one "
                          "outfit; check the label maps")
    return UniAT(arch, config, ncls=ncls, moae=moae, classes=classes, num_persons=num_persons,
                 num_outfits=num_outfits, img_size=img_size, patch_stride=patch_stride,
                 drop_path_rate=drop_path_rate, gate=gate, classifier_sizing=classifier_sizing)


# ---- registry ------------------------------------------------------------------------------
# ViT-B/16 as in the paper (input 256x128 -> 16x8 patches at stride 16).
register_arch("vit_base_uniat", ArchConfig(depth=12, embed_dim=768, num_heads=12, mlp_hidden=3072, patch_size=16,
                                           default_img_size=(256, 128)))
# A 4-block ViT-Tiny width for the CPU demo (128x64 images -> 8x4 patches).
# Its weights come from the pipeline's own pretraining stage (atreid.engine.pretrain), in
# the layout of timm's ViT-Tiny cut to 4 blocks.
register_arch("vit_tiny_uniat", ArchConfig(depth=4, embed_dim=192, num_heads=3, mlp_hidden=768, patch_size=16,
                                           default_img_size=(128, 64), timm_name="vit_tiny_patch16_224",
                                           timm_overrides=(("depth", 4),)))
