"""ONNX export of a trained model's evaluation path (``atreid export-onnx``).

What is exported is exactly what the evaluation ranks with, for one batch of images:

* input ``images``: float32 ``(N, 3, H, W)``, already resized to the model's image size
  and normalised as :func:`atreid.eval.features.eval_transform` does (to [0, 1], then
  ImageNet mean/std); ``N`` is a dynamic axis, ``H, W`` are fixed by the model;
* output ``features``: float32 ``(N, 6, D)``, the six post-BN head features in
  :data:`atreid.constants.SCENARIOS` order, each L2-normalised (the evaluation ranks by
  ``1 - cosine`` of these; a model with ``ncls`` 1 still has six BN heads);
* output ``post_bn``: the same features before the L2 normalisation, for callers that
  average features first (flip averaging, below).

Not exported: the training path (classifiers, logits, pre-BN tokens, drop-path), the
image decoding/resizing/normalisation, and the flip averaging of ``eval.flip`` (run the
model on the image and on its horizontal mirror, average ``post_bn`` and L2-normalise the
mean, as :func:`atreid.eval.features.extract_features` does). The graph is float32 as
the CPU evaluation is (the CUDA evaluation runs the model in bf16 autocast).

The exporter is ``torch.onnx.export(dynamo=True)`` (``torch.export`` then ONNX Script),
opset :data:`DEFAULT_OPSET` by default. The MoAE hard gate exports as its dense form
(both allowed experts weighted by the one-hot top-1 gate: fixed shapes, no host reads;
see :class:`atreid.model.moae.MoAE`), the same function as the routed CPU path up to
float rounding. After writing, the file is checked with onnxruntime against PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atreid.constants import ONNX_DEFAULT_OPSET, ONNX_OPSETS, SCENARIOS
from atreid.engine.checkpoint import load_trained_model
from atreid.errors import AtreidError
from atreid.io import atomic_write_with

log = logging.getLogger("atreid.export")

DEFAULT_OPSET = ONNX_DEFAULT_OPSET
SUPPORTED_OPSETS: tuple[int, ...] = ONNX_OPSETS
# Largest |onnxruntime - PyTorch| difference accepted by the check after export.
TOLERANCE = 1e-4
INPUT_NAME = "images"
OUTPUT_NAMES = ("features", "post_bn")


class EvalFeatures(nn.Module):
    """A trained Uni-AT model's evaluation path: images -> (L2-normalised, post-BN) head features."""
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        post_bn = self.model(images)
        return F.normalize(post_bn, dim=-1), post_bn


def _check_opset(opset: int) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        valid = ", ".join(map(str, SUPPORTED_OPSETS))
        raise AtreidError(f"--opset {opset!r} is not supported; use one of {valid} (default {DEFAULT_OPSET})")


def _load(model_path: Path) -> tuple[nn.Module, dict[str, Any]]:
    if not model_path.is_file():
        what = "is a folder, not a model file" if model_path.is_dir() else "not found"
        raise AtreidError(f"{model_path}: model file {what}; pass a trained model "
                          "(models/<variant>/seed<seed>/model.pt, made by `make run` or `snakemake`)")
    return load_trained_model(model_path, "cpu")


def _example(batch: int, image_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *image_size, generator=generator)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's libraries log every graph pass at INFO (and the optimiser warns about
    each constant it leaves unfolded, which changes nothing in the graph's function)."""
    quiet = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx": logging.WARNING,
             "torch.export": logging.WARNING, "onnxscript.optimizer._constant_folding": logging.ERROR}
    loggers = {logging.getLogger(name): level for name, level in quiet.items()}
    previous = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(logger.level, level))
    try:
        yield
    finally:
        for logger, level in previous.items():
            logger.setLevel(level)


def export_model(model: nn.Module, out: str | Path, *, image_size: tuple[int, int], opset: int = DEFAULT_OPSET,
                 batch: int = 2, metadata: dict[str, str] | None = None) -> Path:
    """Write the evaluation path of ``model`` (a :class:`~atreid.model.uniat.UniAT`) to ``out``.

    Args:
        model: the model (put in eval mode; its weights are not changed).
        out: the ``.onnx`` file, written atomically (a temporary sibling, then renamed).
        image_size: the model's input (height, width).
        opset: ONNX opset, one of :data:`SUPPORTED_OPSETS`.
        batch: batch size of the example input that is traced (the batch axis stays
            dynamic whatever it is).
        metadata: extra ``metadata_props`` (strings) stored in the file.

    Returns:
        ``out`` as a Path.
    """
    _check_opset(opset)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise AtreidError(f"--batch {batch!r} must be a positive integer (the traced example's batch size)")
    out = Path(out)
    wrapper = EvalFeatures(model).cpu().eval()
    # torch.export specialises a dimension whose example size is 1: trace with at least 2.
    example = _example(max(batch, 2), image_size)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1)}}
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(wrapper, (example,), None, input_names=[INPUT_NAME],
                                    output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, opset_version=opset,
                                    dynamo=True, verbose=False)
    props = {"atreid.input": f"{INPUT_NAME}: float32 (N, 3, {image_size[0]}, {image_size[1]}), resized and "
                             "ImageNet-normalised (mean 0.485,0.456,0.406, std 0.229,0.224,0.225)",
             "atreid.outputs": "features: (N, 6, D) L2-normalised post-BN head features; post_bn: before normalising",
             "atreid.heads": ",".join(SCENARIOS),
             "atreid.not_exported": "training heads (classifiers, logits), preprocessing, flip averaging"}
    props.update(metadata or {})
    program.model.metadata_props.update(props)
    with _quiet_exporter():
        atomic_write_with(out, lambda tmp: program.save(str(tmp)))
    return out


def compare_with_torch(model: nn.Module, onnx_path: str | Path, images: torch.Tensor) -> float:
    """Max ``|onnxruntime - PyTorch|`` of the normalised features of ``images`` (float)."""
    # start-up: onnxruntime loaded only when this runs
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = EvalFeatures(model).cpu().eval()(images)[0].numpy()
    got = session.run([OUTPUT_NAMES[0]], {INPUT_NAME: images.numpy()})[0]
    if got.shape != expected.shape:
        raise AtreidError(f"{onnx_path}: onnxruntime gave shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got - expected).max())


def export_onnx(model_path: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET, batch: int = 2,
                verify: bool = True) -> dict[str, Any]:
    """``atreid export-onnx``: load ``model_path`` (a trained ``model.pt``), write ``out``.

    With ``verify`` the file is run by onnxruntime at batch sizes ``batch`` and
    ``batch + 1`` (the dynamic axis) and compared with PyTorch; a difference above
    :data:`TOLERANCE` is an error (the file is then removed).

    Returns:
        A JSON-able report: ``out``, ``opset``, ``arch``, ``variant``, ``image_size``,
        ``feature_shape`` and, with ``verify``, ``max_abs_diff``.
    """
    _check_opset(opset)
    model_path = Path(model_path)
    model, payload = _load(model_path)
    settings = payload.get("settings", {})
    image_size = tuple(int(s) for s in settings.get("model", {}).get("image_size", model.base.patch_embed.img_size))
    metadata = {"atreid.model": str(model_path), "atreid.arch": str(payload.get("arch")),
                "atreid.variant": str(settings.get("name", "")), "atreid.opset": str(opset)}
    out = export_model(model, out, image_size=image_size, opset=opset, batch=batch, metadata=metadata)
    report: dict[str, Any] = {"out": str(out), "opset": opset, "arch": payload.get("arch"),
                              "variant": settings.get("name"), "image_size": list(image_size),
                              "feature_shape": ["N", 6, int(model.embed_dim)]}
    if verify:
        diff = max(compare_with_torch(model, out, _example(n, image_size, seed=n)) for n in (batch, batch + 1))
        report["max_abs_diff"] = diff
        if not diff <= TOLERANCE:
            out.unlink(missing_ok=True)
            raise AtreidError(f"{out}: onnxruntime features differ from PyTorch's by {diff:.3g} (> {TOLERANCE}); "
                              "the export is not faithful, file removed: report it with the model's arch and opset")
    log.info("exported %s -> %s (opset %d%s)", model_path, out, opset,
             f", max |onnxruntime - torch| {report['max_abs_diff']:.2e}" if verify else "")
    return report
