"""Reference checkpoints: ``atreid import-checkpoint`` / ``atreid export-checkpoint``.

``import-checkpoint`` turns the authors' ``epoch_best.t`` into a normal
``models/{variant}/{run}/model.pt`` (the payload :func:`atreid.engine.checkpoint.load_trained_model`
reads), so evaluation, galleries and the table treat it like a trained variant.
``export-checkpoint`` writes a model of ours back in the reference layout. The tensor
mapping lives in :mod:`atreid.model.reference`; this module reads and writes files.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import pickle
import re
from pathlib import Path
from typing import Any, Optional

from atreid import __version__
from atreid.commands import SETTINGS_HELP, read_settings
from atreid.errors import AtreidError
from atreid.io import atomic_torch_save
from atreid.provenance import imported_provenance

log = logging.getLogger("atreid.checkpoint")

PLACEHOLDER_LABELS = "unknown: the reference checkpoint holds no label maps (placeholders of the right sizes)"
# Settings the weights cannot tell and the import falls back to when none are given.
FALLBACK_MODEL = {"pretrained": "none", "drop_path_rate": 0.0, "gate": "hard"}


def load_reference_checkpoint(path: str | Path) -> tuple[dict[str, Any], Optional[int]]:
    """Read ``epoch_best.t`` with ``weights_only=True`` -> (state_dict, epoch or None)."""
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: reference checkpoint not found; set the variant's reference_checkpoint "
                          "to the epoch_best.t of the authors' training code")
    # start-up: numpy, torch, tqdm loaded only when this runs
    import torch  # here: every CLI call imports this module, and torch costs ~1.5 s to import

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        detail = f"it pickles {found[1]}" if found else (str(exc).splitlines() or [type(exc).__name__])[0]
        raise AtreidError(f"{path}: not a weights-only checkpoint ({detail}); torch.load(weights_only=True) "
                          "refuses its Python objects and atreid does not unpickle untrusted files: re-save it "
                          "as {'model': state_dict, 'epoch': N} of plain tensors") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AtreidError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        epoch = obj.get("epoch")
        return obj["model"], int(epoch) if isinstance(epoch, int) else None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    top = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
    raise AtreidError(f"{path}: neither {{'model': state_dict, 'epoch': N}} nor a bare state_dict "
                      f"(top level: {top})")


def _read_labels(path: str | Path, num_persons: int, num_outfits: Optional[int]) -> dict[str, Any]:
    path = Path(path)
    try:
        labels = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AtreidError(f"{path}: unreadable label maps ({exc})") from None
    keys = ("persons", "outfits", "outfit_to_person")
    if not isinstance(labels, dict) or any(not isinstance(labels.get(k), list) for k in keys):
        raise AtreidError(f"{path}: label maps need the lists {', '.join(keys)}")
    sizes = {k: len(labels[k]) for k in keys}
    wrong = []
    if sizes["persons"] != num_persons:
        wrong.append(f"{sizes['persons']} persons, the long-term classifiers have {num_persons}")
    if num_outfits is not None and sizes["outfits"] != num_outfits:
        wrong.append(f"{sizes['outfits']} outfits, the short-term classifiers have {num_outfits}")
    if sizes["outfit_to_person"] != sizes["outfits"]:
        wrong.append(f"outfit_to_person has {sizes['outfit_to_person']} entries for {sizes['outfits']} outfits")
    if wrong:
        raise AtreidError(f"{path}: label maps do not fit the checkpoint ({'; '.join(wrong)}); pass the "
                          "labels.json of the data it was trained on, or none")
    return {k: labels[k] for k in keys}


def placeholder_labels(num_persons: int, num_outfits: int) -> dict[str, Any]:
    """Label maps of the right sizes whose ids are unknown (-1), saying so."""
    return {"persons": [-1] * num_persons, "outfits": [[-1, -1] for _ in range(num_outfits)],
            "outfit_to_person": [-1] * num_outfits, "source": PLACEHOLDER_LABELS}


def import_checkpoint(checkpoint: str | Path, *, variant: str, out: str | Path,
                      settings: Optional[dict[str, Any]] = None, labels: Optional[str | Path] = None) -> dict[str, Any]:
    """Convert a reference checkpoint into ``out`` (a ``models/{variant}/{run}/model.pt`` payload).

    Args:
        checkpoint: the reference ``epoch_best.t`` (or a bare state_dict file).
        variant: the variant name recorded in the settings.
        out: the model file to write.
        settings: the variant's settings (:func:`atreid.config.resolve_variant`, or any
            part of them): ``ncls``, ``moae``, ``model.arch``, ``model.image_size``,
            ``model.patch_stride`` and ``model.classifier_sizing`` are checked against
            the weights; what is absent is inferred (image size: the arch's default;
            classifier sizing: the reference's). The loss switches ``said`` and ``hdw``
            are not in the weights: they are taken from the settings (absent: false,
            listed as assumed), never inferred from the classifier sizes.
        labels: a ``labels.json`` whose sizes fit the classifiers; default placeholders.

    Returns:
        The payload's settings.

    Raises:
        AtreidError: unreadable or non-weights-only file, keys or shapes that do not fit,
        unequal repeated expert copies, or settings that disagree with the weights.
    """
    # start-up: PIL, numpy, timm, torch, torchvision, tqdm, yaml loaded only when this runs
    from atreid.engine.checkpoint import model_from_settings
    from atreid.model.reference import listing, reference_to_atreid, strip_ddp_prefix

    checkpoint = Path(checkpoint)
    settings = copy.deepcopy(settings or {})
    if settings.get("name", variant) != variant:
        raise AtreidError(f"--settings is for variant {settings['name']!r}, not {variant!r}")
    model_settings = settings.get("model", {})
    raw, epoch = load_reference_checkpoint(checkpoint)
    raw = strip_ddp_prefix(raw)
    try:
        state, config = reference_to_atreid(
            raw, arch=model_settings.get("arch"), image_size=model_settings.get("image_size"),
            patch_stride=model_settings.get("patch_stride"), ncls=settings.get("ncls"), moae=settings.get("moae"),
            said=settings.get("said"), classifier_sizing=model_settings.get("classifier_sizing"))
    except AtreidError as exc:
        raise AtreidError(f"{checkpoint}: {exc}") from None

    num_persons = config["num_persons"]
    if labels is not None:
        label_maps = _read_labels(labels, num_persons, config["num_outfits"])
    else:
        label_maps = placeholder_labels(num_persons, config["num_outfits"] or num_persons)
    num_outfits = len(label_maps["outfits"])

    resolved = {**settings, "name": variant, "seed": settings.get("seed", 0), "ncls": config["ncls"],
                "said": config["said"], "moae": config["moae"], "hdw": bool(settings.get("hdw", False)),
                "model": {**FALLBACK_MODEL, **model_settings, "arch": config["arch"],
                          "image_size": config["image_size"], "patch_stride": config["patch_stride"],
                          "classifier_sizing": config["classifier_sizing"]},
                "train": settings.get("train", {})}
    resolved["imported_from"] = str(checkpoint)
    resolved["reference_import"] = {
        **{k: v for k, v in config.items() if k != "unused_keys"},
        "epoch": epoch, "labels": str(labels) if labels is not None else PLACEHOLDER_LABELS,
        # Defaults taken for what neither the weights nor the settings say.
        "assumed": [k for k in ("said", "hdw") if k not in settings]
                   + [f"model.{k}" for k in (*FALLBACK_MODEL, "classifier_sizing") if k not in model_settings],
        "unused_reference_tensors": len(config["unused_keys"]),
    }

    # What load_trained_model will do: build from the settings and load strictly.
    model = model_from_settings(resolved, num_persons, num_outfits)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that the settings' model does not have
        raise AtreidError(f"{checkpoint}: converted weights do not fit the model its settings describe "
                          f"({' '.join(str(exc).split())[:400]})") from None
    if result.missing_keys or result.unexpected_keys:
        raise AtreidError(f"{checkpoint}: converted weights do not fit the model (missing: "
                          f"{listing(result.missing_keys)}; unexpected: {listing(result.unexpected_keys)})")
    payload = {
        "state_dict": state,
        "settings": resolved,
        "labels": label_maps,
        "arch": config["arch"],
        "num_persons": num_persons,
        "num_outfits": num_outfits,
        "epoch": epoch if epoch is not None else 0,
        "atreid_version": __version__,
        # Reference tensors our model has no place for (1-column gates without MoAE), so
        # export-checkpoint can write the original file back bit for bit.
        "reference_unused": {k: raw[k] for k in config["unused_keys"]},
        # What the model came from: the authors' training, read from this file.
        "provenance": imported_provenance(resolved, checkpoint),
    }
    atomic_torch_save(out, payload)
    log.info("imported %s (epoch %s, %s, ncls %d, MoAE %s, SAID %s, stride %d, %d persons, %d outfits, "
             "classifier sizing %s) -> %s", checkpoint, epoch, config["arch"], config["ncls"], config["moae"],
             config["said"], config["patch_stride"], num_persons, num_outfits, config["classifier_sizing"], out)
    return resolved


def export_checkpoint(model_path: str | Path, out: str | Path, epoch: Optional[int] = None) -> int:
    """Write ``model_path`` (a ``model.pt``) as ``{'model': state_dict, 'epoch': N}`` in the reference layout.

    Returns:
        The number of state_dict entries written.
    """
    # start-up: PIL, numpy, timm, torch, torchvision, tqdm, yaml loaded only when this runs
    from atreid.engine.checkpoint import MODEL_KEYS, safe_load
    from atreid.model.reference import atreid_to_reference

    payload = safe_load(model_path, "trained model")
    missing = [k for k in MODEL_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise AtreidError(f"{model_path}: not an atreid model file (missing {', '.join(missing)})")
    try:
        state = atreid_to_reference(payload["state_dict"], unused=payload.get("reference_unused"))
    except AtreidError as exc:
        raise AtreidError(f"{model_path}: {exc}") from None
    epoch = int(payload["epoch"] if epoch is None else epoch)
    atomic_torch_save(out, {"model": state, "epoch": epoch})
    log.info("exported %s -> %s (%d entries, epoch %d)", model_path, out, len(state), epoch)
    return len(state)


def run_import(args: argparse.Namespace) -> int:
    import_checkpoint(args.checkpoint, variant=args.variant, out=args.out, settings=read_settings(args.settings) if args.settings else None,
                      labels=args.labels)
    return 0


def run_export(args: argparse.Namespace) -> int:
    export_checkpoint(args.model, args.out, epoch=args.epoch)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("import-checkpoint", help="reference epoch_best.t -> models/{variant}/{run}/model.pt")
    p.add_argument("checkpoint", help="the reference implementation's checkpoint (epoch_best.t)")
    p.add_argument("--variant", required=True, help="variant name recorded in the model's settings")
    p.add_argument("--out", required=True, help="models/{variant}/{run}/model.pt")
    p.add_argument("--settings", default=None,
                   help=f"{SETTINGS_HELP}: the variant's, resolved or partial (e.g. "
                        '{"model": {"image_size": [256, 128]}}); given values are checked against the '
                        "weights, absent ones inferred")
    p.add_argument("--labels", default=None,
                   help="labels.json of the training data (sizes must fit); default: placeholders")
    p.set_defaults(func=run_import)

    p = subparsers.add_parser("export-checkpoint", help="models/{variant}/{run}/model.pt -> reference epoch_best.t")
    p.add_argument("model", help="models/{variant}/{run}/model.pt")
    p.add_argument("--out", required=True, help="epoch_best.t")
    p.add_argument("--epoch", type=int, default=None, help="epoch recorded in the file (default: the model's)")
    p.set_defaults(func=run_export)
