"""ImageNet ViT weights (via timm) converted into a Uni-AT backbone.

The published model starts from the original Google JAX ImageNet-21k -> 1k ViT-B/16
(file ``jx_vit_base_p16_224-80ecf9dd.pth``, timm ``vit_base_patch16_224.orig_in21k_ft_in1k``).
timm builds its ViT and loads the weights (hub download or a local file through
``pretrained_cfg_overlay=dict(file=...)``); :func:`convert_timm_vit` then maps that
state_dict onto our backbone:

- the classifier head is dropped (timm already omits it with ``num_classes=0``);
- the single CLS token and its position-embedding row are copied to all ``ncls`` tokens;
- the patch grid of the position embedding is resized bicubically (align_corners False,
  no antialiasing -- plain ``F.interpolate``, as the reference does) to our grid;
- ``fc1``/``fc2`` go into the shared FFN and into all five MoAE in/out atoms;
- the MoAE gates keep their random init; the heads are not part of the backbone.

Every key must be accounted for: a missing, unexpected or mis-shaped tensor raises
:class:`AtreidError` listing the keys, never a silent partial load. The model itself
never downloads anything; the random-init case (``pretrained: none``) loads nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models import load_state_dict
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from atreid.errors import AtreidError
from atreid.model.moae import MoAE

DEFAULT_TIMM_NAME = "vit_base_patch16_224.orig_in21k_ft_in1k"
PRETRAINED_FILE = "jx_vit_base_p16_224-80ecf9dd.pth"
PRETRAINED_URL = ("https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
                  + PRETRAINED_FILE)
_WHERE = (f"download {PRETRAINED_FILE} ({PRETRAINED_URL}, or the hub weights of timm "
          f"'{DEFAULT_TIMM_NAME}') and set model.pretrained to its path, or use 'hub' / 'none'")
# MoAE atom <- shared FFN tensor; atom weights are stored input-major (x @ w), so transposed.
_ATOM_SOURCES = {"in_w": ("fc1.weight", True), "in_b": ("fc1.bias", False), "out_w": ("fc2.weight", True),
                 "out_b": ("fc2.bias", False)}


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _create_timm_vit(name: str, kwargs: dict[str, Any], **create: Any) -> nn.Module:

    try:
        model = timm.create_model(name, num_classes=0, **create, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise AtreidError(f"unknown timm model {name!r} for the pretrained weights") from None
        raise
    if not isinstance(model, VisionTransformer) or model.num_prefix_tokens != 1 or not model.has_class_token:
        raise AtreidError(f"timm model {name!r} is not a ViT with exactly one CLS token; use e.g. {DEFAULT_TIMM_NAME}")
    return model


def _check_file(path: Path, name: str, kwargs: dict[str, Any]) -> None:
    """Strict key/shape check of a weights file against timm's ``name`` model.

    timm loads non-strictly when the head is dropped (``num_classes=0``), so a file with
    missing blocks would otherwise load silently.
    """
    # On the meta device: only names and shapes are needed, not a (slow) random init.
    reference = _create_timm_vit(name, kwargs, pretrained=False, device="meta")
    try:
        raw = load_state_dict(str(path))
    except Exception as exc:  # any unreadable/unpicklable file is the user's to fix
        raise AtreidError(f"{path}: not a readable PyTorch/safetensors weights file ({type(exc).__name__}: "
                          f"{exc}); {_WHERE}") from None
    state = {k: v for k, v in checkpoint_filter_fn(raw, reference).items() if not k.startswith("head.")}
    expected = reference.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = [f"missing keys: {_listing(missing)}" if missing else "",
                f"unexpected keys: {_listing(unexpected)}" if unexpected else "",
                f"shape mismatches (file vs {name}): {_listing(shapes)}" if shapes else ""]
    problems = [p for p in problems if p]
    if problems:
        raise AtreidError(f"{path}: weights do not fit timm {name!r}: {'; '.join(problems)}")


def timm_vit_weights(source: str, timm_name: str = DEFAULT_TIMM_NAME,
                     timm_kwargs: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
    """Load ``timm_name`` with pretrained weights from ``source``; return (state_dict, patch grid).

    Args:
        source: ``"hub"`` (timm's own download) or the path of a weights file.
        timm_name: timm model name (with pretrained tag).
        timm_kwargs: extra ``timm.create_model`` arguments (e.g. ``depth`` for small tests).
    """
    kwargs = dict(timm_kwargs or {})
    if source == "hub":
        try:
            model = _create_timm_vit(timm_name, kwargs, pretrained=True)
        except AtreidError:
            raise
        except Exception as exc:  # network, hub and cache errors all mean the same to the user
            raise AtreidError(f"could not fetch the pretrained weights of timm {timm_name!r} from the hub "
                              f"({type(exc).__name__}: {exc}); {_WHERE}") from None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise AtreidError(f"{path}: pretrained weights file not found; {_WHERE}")
        _check_file(path, timm_name, kwargs)
        model = _create_timm_vit(timm_name, kwargs, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path)))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    return state, tuple(model.patch_embed.grid_size)


def convert_timm_vit(state: dict[str, torch.Tensor], backbone: nn.Module,
                     source_grid: tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a timm ViT state_dict (head dropped) onto ``backbone`` (a :class:`MultiTokenViT`).

    Returns:
        ``(converted, info)``: a state_dict with every backbone key except the MoAE gates,
        and counts for the report.

    Raises:
        AtreidError: missing, unexpected or mis-shaped keys (all listed).
    """
    target = backbone.state_dict()
    ncls, grid = backbone.ncls, tuple(backbone.grid_size)
    out: dict[str, torch.Tensor] = {}
    shapes: list[str] = []
    unexpected: list[str] = []

    def put(key: str, value: torch.Tensor, source_key: str) -> None:
        if tuple(value.shape) != tuple(target[key].shape):
            shapes.append(f"{source_key} {tuple(value.shape)} -> {key} {tuple(target[key].shape)}")
        else:
            out[key] = value.to(target[key].dtype)

    for key, value in state.items():
        if key == "cls_token":
            put(key, value[:, :1].expand(-1, ncls, -1), key)
        elif key == "pos_embed":
            rows = 1 + source_grid[0] * source_grid[1]
            if value.shape[1] != rows:
                shapes.append(f"pos_embed {tuple(value.shape)} vs 1 + {source_grid[0]}x{source_grid[1]} rows")
                continue
            patches = resample_abs_pos_embed(value[:, 1:], new_size=list(grid), old_size=list(source_grid),
                                             num_prefix_tokens=0, interpolation="bicubic", antialias=False)
            put(key, torch.cat([value[:, :1].expand(-1, ncls, -1), patches], dim=1), key)
        elif key in target:
            put(key, value, key)
        else:
            unexpected.append(key)

    atoms = 0
    for name, module in backbone.named_modules():
        if isinstance(module, MoAE) and module.moae:
            for atom, (source, transpose) in _ATOM_SOURCES.items():
                key, source_key = f"{name}.{atom}", f"{name}.{source}"
                if key in target and source_key in out:
                    value = out[source_key].t() if transpose else out[source_key]
                    put(key, value.unsqueeze(0).expand_as(target[key]), source_key)
                    atoms += 1
    gates = {k for k in target if k.endswith(".mlp.gate")}
    missing = sorted(set(target) - set(out) - gates)
    problems = [f"missing keys: {_listing(missing)}" if missing else "",
                f"unexpected keys: {_listing(sorted(unexpected))}" if unexpected else "",
                f"shape mismatches: {_listing(sorted(shapes))}" if shapes else ""]
    problems = [p for p in problems if p]
    if problems:
        raise AtreidError(f"pretrained ViT does not fit the model backbone: {'; '.join(problems)}")
    info = {"tensors_loaded": len(state), "source_grid": list(source_grid), "target_grid": list(grid),
            "cls_tokens_copied": ncls, "moae_atom_tensors_from_ffn": atoms, "gates_left_at_init": len(gates)}
    return out, info


def load_pretrained(model: nn.Module, source: str, *, timm_name: str = DEFAULT_TIMM_NAME,
                    timm_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load ImageNet ViT weights into ``model.base`` (a :class:`UniAT`'s backbone) in place.

    Args:
        model: a :class:`atreid.model.UniAT` (or anything with a ``base`` backbone).
        source: ``"hub"``, a local weights file, or ``"none"`` (nothing loaded).
        timm_name: the timm model whose weights are loaded (default: the published ViT-B/16).
        timm_kwargs: extra ``timm.create_model`` arguments (e.g. ``depth=4`` in tests).

    Returns:
        A JSON-able report: source, timm model, tensors and parameters loaded, source and
        target patch grids, CLS copies, atom tensors initialised from the FFN, gates left
        at init.

    Raises:
        AtreidError: missing file, hub failure, or weights that do not fit (keys listed).
    """
    if source == "none":
        return {"source": "none", "tensors_loaded": 0, "parameters_loaded": 0}
    state, source_grid = timm_vit_weights(source, timm_name, timm_kwargs)
    backbone = model.base
    converted, info = convert_timm_vit(state, backbone, source_grid)
    result = backbone.load_state_dict(converted, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith(".mlp.gate")]
    if leftover or result.unexpected_keys:  # convert_timm_vit already guarantees this; belt and braces
        raise AtreidError(f"pretrained weights left keys unloaded: {_listing(leftover + result.unexpected_keys)}")
    return {"source": str(source), "timm_model": timm_name, **info,
            "parameters_loaded": int(sum(v.numel() for v in converted.values()))}
