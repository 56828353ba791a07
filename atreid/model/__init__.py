"""Uni-AT model: multi-token ViT backbone, MoAE, six BN-neck heads, pretrained-weight loading."""

from atreid.model.moae import ATOMS, SCENARIO_ATOMS, MoAE
from atreid.model.uniat import ArchConfig, UniAT, build_model, get_arch, head_classes, list_archs, register_arch
from atreid.model.vit import MultiTokenViT, PatchEmbed

__all__ = [
    "ATOMS",
    "SCENARIO_ATOMS",
    "ArchConfig",
    "MoAE",
    "MultiTokenViT",
    "PatchEmbed",
    "UniAT",
    "build_model",
    "get_arch",
    "head_classes",
    "list_archs",
    "register_arch",
]
