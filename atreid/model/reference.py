"""Converters between the authors' reference checkpoints and the Uni-AT model of atreid.

Paper: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(AT-ReID, IJCAI 2025, arXiv 2509.16635). The released training code saves
``{'model': state_dict, 'epoch': N}`` (``epoch_best.t``); its layout is documented in
``shared/reference/reference_checkpoint.md`` and summarised here:

- ``base.*`` (ViT), ``bottleneck.{h}`` (BN necks) and ``classifier.{h}`` share our names,
  except the FFN: ``base.blocks.{i}.mlp.ffn.0.{0,2}`` is our shared ``mlp.fc1`` / ``mlp.fc2``.
- With MoAE, expert ``j = 1 + 5a + b`` (atoms vm, im, cm, sc, cc = 0..4) is in-atom ``a``
  -> GELU -> out-atom ``b``, for all 25 pairs. Atoms are shared modules, so the
  state_dict repeats them: ``ffn.{1+5a+b}.0`` is in-atom ``a`` for every ``b`` and
  ``ffn.{1+5a+b}.2`` is out-atom ``b`` for every ``a``. We store each atom once, stacked
  and input-major: ``mlp.in_w[a] = ffn.{1+5a}.0.weight.T`` (``atreid.model.moae``).
- ``mlp.gate.{t}.weight`` (2, dim) is CLS token ``t``'s bias-free gate; output column 0
  scores ``a -> b``, column 1 ``b -> a``, which is also our convention:
  ``mlp.gate[t] = gate.{t}.weight``.
- Without MoAE only ``ffn.0`` exists and each CLS token still has a 1-column gate that
  the reference never uses; our model has no gate then, so the import keeps those
  tensors aside (:func:`unused_reference_keys`) and the export writes them back (zeros
  when there are none), which keeps a round trip bit-identical.

Nothing is cast, resampled or re-initialised: every tensor is copied bit for bit, and
any missing, unexpected or mis-shaped key, or repeated expert copies that differ, raise
:class:`AtreidError` listing the keys. The shapes give the architecture (ncls, MoAE,
patch stride, classifier sizes); the loss switches (SAID, HDW) are not in the weights
and come from the caller's variant: the reference sizes the short-term classifiers by
the outfit classes in every variant (:func:`atreid.model.head_classes`), so the sizes
say nothing about SAID. The image size comes from the caller when ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import torch
from torch import nn

from atreid.constants import CLASSIFIER_SIZINGS, LONG_TERM_HEADS, SCENARIOS, SHORT_TERM_HEADS
from atreid.errors import AtreidError
from atreid.model.moae import ATOMS
from atreid.model.uniat import get_arch, list_archs

NUM_HEADS = len(SCENARIOS)
NUM_ATOMS = len(ATOMS)
# The released code sizes the classifiers this way (atreid.model.head_classes).
DEFAULT_SIZING = "reference"
IN_CHANS = 3
DDP_PREFIX = "module."
# (reference suffix, our suffix) of the tensors whose names differ only in the FFN.
_SHARED_FFN = (("ffn.0.0.weight", "fc1.weight"), ("ffn.0.0.bias", "fc1.bias"),
               ("ffn.0.2.weight", "fc2.weight"), ("ffn.0.2.bias", "fc2.bias"))
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_EXPERT_KEY = re.compile(r"^base\.blocks\.\d+\.mlp\.ffn\.([1-9]\d*)\.")
_GATE_KEY = re.compile(r"^base\.blocks\.\d+\.mlp\.gate\.\d+\.weight$")
_BLOCK_KEY = re.compile(r"^base\.blocks\.(\d+)\.")


def expert_index(a: int, b: int) -> int:
    """Reference index ``j`` of the expert in-atom ``a`` -> out-atom ``b`` (``ffn.{j}``)."""
    return 1 + NUM_ATOMS * a + b


def listing(keys: list[str], limit: int = 6) -> str:
    """The first ``limit`` keys and the count of the others (error messages stay one line)."""
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


@dataclass(frozen=True)
class _Entry:
    """One reference tensor and where it lives in our state_dict.

    ``slot`` None: ``ours[our_key]`` is the tensor itself. Otherwise it is
    ``ours[our_key][slot]`` (transposed when ``transpose``). ``our_key`` None: a tensor our
    model has no place for (the unused 1-column gates without MoAE).
    """

    ref_key: str
    shape: tuple[int, ...]
    our_key: Optional[str]
    slot: Optional[int] = None
    transpose: bool = False


@dataclass(frozen=True)
class ReferenceLayout:
    """Everything that decides the reference state_dict's keys and shapes."""

    depth: int
    embed_dim: int
    mlp_hidden: int
    patch_size: int
    num_patches: int
    ncls: int
    moae: bool
    head_classes: tuple[int, ...]

    def entries(self) -> Iterator[_Entry]:
        """Every reference tensor in the reference's own order."""
        d, h, p = self.embed_dim, self.mlp_hidden, self.patch_size
        yield _Entry("base.cls_token", (1, self.ncls, d), "base.cls_token")
        yield _Entry("base.pos_embed", (1, self.ncls + self.num_patches, d), "base.pos_embed")
        yield _Entry("base.patch_embed.proj.weight", (d, IN_CHANS, p, p), "base.patch_embed.proj.weight")
        yield _Entry("base.patch_embed.proj.bias", (d,), "base.patch_embed.proj.bias")
        for i in range(self.depth):
            blk = f"base.blocks.{i}"
            for name, shape in (("norm1.weight", (d,)), ("norm1.bias", (d,)), ("attn.qkv.weight", (3 * d, d)),
                                ("attn.qkv.bias", (3 * d,)), ("attn.proj.weight", (d, d)),
                                ("attn.proj.bias", (d,)), ("norm2.weight", (d,)), ("norm2.bias", (d,))):
                yield _Entry(f"{blk}.{name}", shape, f"{blk}.{name}")
            shapes = {"0.weight": (h, d), "0.bias": (h,), "2.weight": (d, h), "2.bias": (d,)}
            for ref, ours in _SHARED_FFN:
                yield _Entry(f"{blk}.mlp.{ref}", shapes[ref[len("ffn.0."):]], f"{blk}.mlp.{ours}")
            if self.moae:
                for a in range(NUM_ATOMS):
                    for b in range(NUM_ATOMS):
                        ffn = f"{blk}.mlp.ffn.{expert_index(a, b)}"
                        yield _Entry(f"{ffn}.0.weight", (h, d), f"{blk}.mlp.in_w", a, True)
                        yield _Entry(f"{ffn}.0.bias", (h,), f"{blk}.mlp.in_b", a)
                        yield _Entry(f"{ffn}.2.weight", (d, h), f"{blk}.mlp.out_w", b, True)
                        yield _Entry(f"{ffn}.2.bias", (d,), f"{blk}.mlp.out_b", b)
            for t in range(self.ncls):
                if self.moae:
                    yield _Entry(f"{blk}.mlp.gate.{t}.weight", (2, d), f"{blk}.mlp.gate", t)
                else:
                    yield _Entry(f"{blk}.mlp.gate.{t}.weight", (1, d), None)
        yield _Entry("base.norm.weight", (d,), "base.norm.weight")
        yield _Entry("base.norm.bias", (d,), "base.norm.bias")
        for hd in range(NUM_HEADS):
            for name in _BN_TENSORS:
                shape = () if name == "num_batches_tracked" else (d,)
                yield _Entry(f"bottleneck.{hd}.{name}", shape, f"bottleneck.{hd}.{name}")
        for hd, classes in enumerate(self.head_classes):
            yield _Entry(f"classifier.{hd}.weight", (classes, d), f"classifier.{hd}.weight")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Reference key -> shape, in the reference's order."""
        return {e.ref_key: e.shape for e in self.entries()}


def patch_grid(image_size: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
    """Patch grid of a strided patch embedding (as :class:`atreid.model.PatchEmbed` computes it)."""
    return tuple((s - patch_size) // stride + 1 for s in image_size)


def strip_ddp_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a ``module.`` prefix that DistributedDataParallel put on every key."""
    keys = list(state_dict)
    if keys and all(k.startswith(DDP_PREFIX) for k in keys):
        return {k[len(DDP_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Bitwise equality (NaN payloads and signed zeros included), short-cut for one shared tensor."""
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.data_ptr() == y.data_ptr() and x.stride() == y.stride():
        return True
    if x.is_floating_point() or x.is_complex():
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(x.element_size())
        if bits is not None:
            return torch.equal(x.view(bits), y.view(bits))
    return torch.equal(x, y)


def _block_count(keys: list[str]) -> int:
    indices = {int(m[1]) for k in keys if (m := _BLOCK_KEY.match(k))}
    return max(indices) + 1 if indices else 0


def _resolve_arch(arch: Optional[str], depth: int, dim: int, hidden: int, patch: int) -> str:
    found = {"depth": depth, "embed_dim": dim, "mlp_hidden": hidden, "patch_size": patch}
    described = ", ".join(f"{k} {v}" for k, v in found.items())
    if arch is not None:
        config = get_arch(arch)
        wrong = [f"{k} {getattr(config, k)}" for k, v in found.items() if getattr(config, k) != v]
        if wrong:
            raise AtreidError(f"the checkpoint is not a {arch} ({described}; {arch} has {', '.join(wrong)}); "
                              f"set model.arch to a registered arch of that shape ({', '.join(list_archs())})")
        return arch
    matches = [a for a in list_archs() if all(getattr(get_arch(a), k) == v for k, v in found.items())]
    if len(matches) != 1:
        what = "no registered arch has" if not matches else f"several archs ({', '.join(matches)}) have"
        raise AtreidError(f"{what} the checkpoint's {described}; set model.arch (valid: {', '.join(list_archs())})")
    return matches[0]


def _resolve_stride(rows: int, image_size: tuple[int, int], patch: int, stride: Optional[int]) -> int:
    fits = [s for s in range(1, patch + 1) if min(patch_grid(image_size, patch, s)) >= 1
            and patch_grid(image_size, patch, s)[0] * patch_grid(image_size, patch, s)[1] == rows]
    size = f"{image_size[0]}x{image_size[1]}"
    if stride is not None:
        if stride not in fits:
            grid = patch_grid(image_size, patch, stride)
            hint = f"stride {fits[0]} fits" if len(fits) == 1 else ("no stride fits; set model.image_size"
                                                                   if not fits else f"strides {fits} fit")
            raise AtreidError(f"base.pos_embed has {rows} patch rows but stride {stride} at {size} gives "
                              f"{grid[0]}x{grid[1]} = {grid[0] * grid[1]} ({hint}); fix model.patch_stride "
                              f"or model.image_size")
        return stride
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise AtreidError(f"base.pos_embed has {rows} patch rows, which no patch stride 1..{patch} gives at "
                          f"image size {size}; set model.image_size to the size the checkpoint was trained at")
    raise AtreidError(f"base.pos_embed has {rows} patch rows, which strides {fits} all give at {size}; "
                      "set model.patch_stride")


def _check_layout(state: Mapping[str, torch.Tensor], layout: ReferenceLayout) -> None:
    expected = layout.shapes()
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)
    shapes = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = [f"{len(missing)} missing keys: {listing(missing)}" if missing else "",
                f"{len(unexpected)} unexpected keys: {listing(unexpected)}" if unexpected else "",
                f"{len(shapes)} shape mismatches: {listing(shapes)}" if shapes else ""]
    problems = [p for p in problems if p]
    if problems:
        raise AtreidError(f"not the reference layout of a depth-{layout.depth} ViT with ncls {layout.ncls}, "
                          f"MoAE {'on' if layout.moae else 'off'}: {'; '.join(problems)}")


def infer_reference_config(state_dict: Mapping[str, Any], *, arch: Optional[str] = None,
                           image_size: Optional[tuple[int, int]] = None, patch_stride: Optional[int] = None,
                           ncls: Optional[int] = None, moae: Optional[bool] = None,
                           said: Optional[bool] = None, classifier_sizing: Optional[str] = None) -> dict[str, Any]:
    """What a reference state_dict describes, checked against what the caller expects.

    Every keyword left ``None`` is inferred; a given one must agree with the weights.

    Args:
        state_dict: a reference state_dict (``module.`` prefix already stripped).
        arch: registered arch; inferred from depth, width, FFN width and patch size.
        image_size: (height, width) the checkpoint was trained at; default: the arch's.
        patch_stride: inferred from the position embedding's rows at ``image_size``.
        ncls: CLS tokens (the ``base.cls_token`` shape).
        moae: attribute experts (``ffn.{j>=1}`` keys and 2-column gates).
        said: the variant's loss switch (not in the weights, never inferred from them);
            None records False. It constrains the classifier sizes only with the
            ``by_loss`` sizing.
        classifier_sizing: how the classifiers were sized (:func:`atreid.model.head_classes`);
            default ``"reference"``, the released code's: heads 0, 2, 4 have one output
            per outfit class (C >= P) and 1, 3, 5 one per person (P), in every variant.
            With ``"by_loss"`` and no SAID all six heads must have P outputs.

    Returns:
        A JSON-able dict: arch, ncls, moae, said, classifier_sizing, image_size,
        patch_stride, grid, num_persons, num_outfits (None when the weights cannot tell:
        by_loss without SAID), head_classes, depth, embed_dim, mlp_hidden, patch_size.

    Raises:
        AtreidError: missing core tensors, inconsistent MoAE keys, or a disagreement
        with the caller's values (all named).
    """
    needed = ["base.cls_token", "base.pos_embed", "base.patch_embed.proj.weight", "base.blocks.0.mlp.ffn.0.0.weight",
              *(f"classifier.{h}.weight" for h in range(NUM_HEADS))]
    absent = [k for k in needed if k not in state_dict]
    if absent:
        raise AtreidError(f"not a reference Uni-AT state_dict: {len(absent)} missing keys: {listing(absent)}")
    cls_shape = tuple(state_dict["base.cls_token"].shape)
    if len(cls_shape) != 3 or cls_shape[0] != 1:
        raise AtreidError(f"base.cls_token has shape {cls_shape}, expected (1, ncls, dim)")
    found_ncls, dim = cls_shape[1], cls_shape[2]
    keys = list(state_dict)
    experts = sorted(k for k in keys if _EXPERT_KEY.match(k))
    gate_rows = {k: state_dict[k].shape[0] for k in keys if _GATE_KEY.match(k) and state_dict[k].dim() == 2}
    found_moae = bool(experts)
    if found_ncls not in (1, NUM_HEADS):
        raise AtreidError(f"base.cls_token holds {found_ncls} CLS tokens; Uni-AT has 1 or {NUM_HEADS}")
    if found_moae and found_ncls != NUM_HEADS:
        raise AtreidError(f"expert keys ({listing(experts, 2)}) with {found_ncls} CLS token: MoAE needs "
                          f"{NUM_HEADS} (one per scenario)")
    columns = 2 if found_moae else 1
    wrong_gates = sorted(k for k, rows in gate_rows.items() if rows != columns)
    if wrong_gates:
        why = "expert keys ffn.1.. are present" if found_moae else "there are no expert keys ffn.1.."
        raise AtreidError(f"inconsistent MoAE: {why}, so every gate must have {columns} column(s), but "
                          f"{len(wrong_gates)} do not: {listing(wrong_gates)}")

    disagree = []
    if ncls is not None and ncls != found_ncls:
        disagree.append(f"ncls {ncls} (the checkpoint has {found_ncls} CLS tokens)")
    if moae is not None and bool(moae) != found_moae:
        disagree.append(f"moae {str(bool(moae)).lower()} (the checkpoint has "
                        f"{'expert keys ffn.1..' if found_moae else 'no experts'})")
    heads = [int(state_dict[f"classifier.{h}.weight"].shape[0]) for h in range(NUM_HEADS)]
    short = {heads[h] for h in SHORT_TERM_HEADS}
    long = {heads[h] for h in LONG_TERM_HEADS}
    if len(short) != 1 or len(long) != 1:
        raise AtreidError(f"classifier sizes {heads}: heads 0, 2, 4 (outfit classes) and 1, 3, 5 (person ids) "
                          "must each agree")
    num_persons, num_classes_short = long.pop(), short.pop()
    said = bool(said)
    sizing = classifier_sizing or DEFAULT_SIZING
    if sizing not in CLASSIFIER_SIZINGS:
        raise AtreidError(f"classifier_sizing must be one of {', '.join(CLASSIFIER_SIZINGS)}, got {sizing!r}")
    num_outfits: Optional[int] = num_classes_short
    if sizing == "by_loss" and not said:
        num_outfits = None  # every head classifies person ids: the outfit count is not in the weights
        if num_classes_short != num_persons:
            disagree.append(f"classifier_sizing by_loss with said false (classifiers 0, 2, 4 have "
                            f"{num_classes_short} classes and 1, 3, 5 {num_persons}; by_loss without SAID gives "
                            "every head the person ids, the reference sizing outfit classes to 0, 2, 4)")
    elif num_classes_short < num_persons:
        raise AtreidError(f"classifier sizes {heads}: heads 0, 2, 4 (outfit classes) have fewer outputs than "
                          "1, 3, 5 (person ids), but every person has at least one outfit")
    if disagree:
        raise AtreidError(f"the settings disagree with the checkpoint: {'; '.join(disagree)}; fix the variant")

    proj = tuple(state_dict["base.patch_embed.proj.weight"].shape)
    if len(proj) != 4 or proj[2] != proj[3] or proj[1] != IN_CHANS:
        raise AtreidError(f"base.patch_embed.proj.weight has shape {proj}, expected (dim, 3, patch, patch)")
    depth = _block_count(keys)
    hidden = int(state_dict["base.blocks.0.mlp.ffn.0.0.weight"].shape[0])
    arch = _resolve_arch(arch, depth, dim, hidden, proj[2])
    config = get_arch(arch)
    image_size = tuple(int(s) for s in (image_size or config.default_img_size))
    rows = int(state_dict["base.pos_embed"].shape[1]) - found_ncls
    stride = _resolve_stride(rows, image_size, config.patch_size, patch_stride)
    return {"arch": arch, "ncls": found_ncls, "moae": found_moae, "said": said, "classifier_sizing": sizing,
            "image_size": list(image_size), "patch_stride": stride,
            "grid": list(patch_grid(image_size, config.patch_size, stride)),
            "num_persons": num_persons, "num_outfits": num_outfits,
            "head_classes": heads, "depth": depth, "embed_dim": dim, "mlp_hidden": hidden,
            "patch_size": config.patch_size}


def _layout(config: Mapping[str, Any]) -> ReferenceLayout:
    grid = config["grid"]
    return ReferenceLayout(depth=config["depth"], embed_dim=config["embed_dim"], mlp_hidden=config["mlp_hidden"],
                           patch_size=config["patch_size"], num_patches=grid[0] * grid[1], ncls=config["ncls"],
                           moae=config["moae"], head_classes=tuple(config["head_classes"]))


def unused_reference_keys(config: Mapping[str, Any]) -> list[str]:
    """Reference keys our model has no place for (the unused 1-column gates without MoAE)."""
    return [e.ref_key for e in _layout(config).entries() if e.our_key is None]


def reference_to_atreid(state_dict: Mapping[str, Any], **expected: Any
                        ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a reference state_dict onto a :class:`atreid.model.UniAT` state_dict.

    Args:
        state_dict: the reference's ``checkpoint['model']`` (a ``module.`` prefix is dropped).
        **expected: ``arch``, ``image_size``, ``patch_stride``, ``ncls``, ``moae``, ``said``,
            ``classifier_sizing`` as in :func:`infer_reference_config` (None or absent:
            inferred from the shapes, or the defaults for what the shapes cannot tell).

    Returns:
        ``(ours, config)``: a state_dict that ``build_model(config['arch'], ...)`` loads
        strictly, bit-identical tensors, and the inferred configuration (JSON-able; its
        ``unused_keys`` are the reference tensors with no place in our model).

    Raises:
        AtreidError: non-tensor values, missing / unexpected / mis-shaped keys, repeated
        expert copies that differ, or settings that disagree with the weights.
    """
    state = strip_ddp_prefix(state_dict)
    odd = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if odd:
        raise AtreidError(f"{len(odd)} state_dict entries are not tensors: {listing(odd)}")
    config = infer_reference_config(state, **{k: v for k, v in expected.items() if v is not None})
    layout = _layout(config)
    _check_layout(state, layout)

    ours: dict[str, torch.Tensor] = {}
    stacks: dict[str, dict[int, tuple[_Entry, torch.Tensor]]] = {}
    differ: list[str] = []
    for entry in layout.entries():
        value = state[entry.ref_key]
        if entry.our_key is None:
            continue
        if entry.slot is None:
            ours[entry.our_key] = value
            continue
        slots = stacks.setdefault(entry.our_key, {})
        if entry.slot in slots:  # a repeated atom copy: must be the same tensor, bit for bit
            first, first_value = slots[entry.slot]
            if not _same_bits(value, first_value):
                differ.append(f"{entry.ref_key} != {first.ref_key}")
        else:
            slots[entry.slot] = (entry, value)
            ours[entry.our_key] = None  # placeholder keeps the key order
    if differ:
        raise AtreidError(f"{len(differ)} repeated expert tensors differ from their first copy (the reference "
                          f"shares each atom across 5 experts, so copies must be equal): {listing(differ, 4)}")
    for our_key, slots in stacks.items():
        parts = [value.t() if entry.transpose else value for entry, value in (slots[s] for s in sorted(slots))]
        ours[our_key] = torch.stack(parts)
    config["unused_keys"] = unused_reference_keys(config)
    return ours, config


def atreid_to_reference(model_or_state: nn.Module | Mapping[str, torch.Tensor], *,
                        unused: Optional[Mapping[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """Write a Uni-AT model (or its state_dict) in the reference layout.

    Expert atoms are repeated as the reference has them: the five ``ffn.{1+5a+b}.0``
    keys of in-atom ``a`` hold one shared tensor (as do the out-atoms), so
    ``torch.save`` stores each atom once. Without MoAE every CLS token gets the
    reference's unused 1-column gate: the tensor from ``unused`` when given (what an
    import kept aside), else zeros.

    Args:
        model_or_state: a :class:`atreid.model.UniAT` or its state_dict.
        unused: reference tensors our model has no place for (by reference key).

    Returns:
        The reference state_dict (tensors share memory with the input where no
        transpose is needed).

    Raises:
        AtreidError: a state_dict that is not a Uni-AT one (missing / mis-shaped keys).
    """
    if isinstance(model_or_state, nn.Module):
        state = dict(model_or_state.state_dict())
    else:
        state = dict(model_or_state)
    needed = ["base.cls_token", "base.pos_embed", "base.patch_embed.proj.weight", "base.blocks.0.mlp.fc1.weight",
              *(f"classifier.{h}.weight" for h in range(NUM_HEADS))]
    absent = [k for k in needed if k not in state]
    if absent:
        raise AtreidError(f"not a Uni-AT state_dict: {len(absent)} missing keys: {listing(absent)}")
    _, ncls, dim = state["base.cls_token"].shape
    patch = state["base.patch_embed.proj.weight"].shape[-1]
    layout = ReferenceLayout(
        depth=_block_count(list(state)), embed_dim=dim, mlp_hidden=state["base.blocks.0.mlp.fc1.weight"].shape[0],
        patch_size=patch, num_patches=state["base.pos_embed"].shape[1] - ncls, ncls=ncls,
        moae="base.blocks.0.mlp.in_w" in state,
        head_classes=tuple(state[f"classifier.{h}.weight"].shape[0] for h in range(NUM_HEADS)))
    unused = dict(unused or {})
    out: dict[str, torch.Tensor] = {}
    atoms: dict[tuple[str, int], torch.Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []
    for entry in layout.entries():
        if entry.our_key is None:
            value = unused.pop(entry.ref_key, None)
            out[entry.ref_key] = value if value is not None else torch.zeros(entry.shape, dtype=state[
                "base.cls_token"].dtype)
            continue
        if entry.our_key not in state:
            problems.append(f"missing {entry.our_key}")
            continue
        used.add(entry.our_key)
        if entry.slot is None:
            value = state[entry.our_key]
        else:
            key = (entry.our_key, entry.slot)
            if key not in atoms:  # one tensor per atom, shared by its five expert keys
                atom = state[entry.our_key][entry.slot]
                atoms[key] = atom.t().contiguous() if entry.transpose else atom
            value = atoms[key]
        if tuple(value.shape) != entry.shape:
            problems.append(f"{entry.our_key} gives {entry.ref_key} shape {tuple(value.shape)}, not {entry.shape}")
        out[entry.ref_key] = value
    extra = sorted(set(state) - used)
    if extra:
        problems.append(f"{len(extra)} keys with no reference place: {listing(extra)}")
    if unused:
        problems.append(f"unused reference tensors that the layout has no place for: {listing(sorted(unused))}")
    if problems:
        raise AtreidError(f"cannot write the reference layout: {listing(problems, 4)}")
    return out
