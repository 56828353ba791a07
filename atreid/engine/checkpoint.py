"""Training checkpoints (resume) and the trained-model file.

In-progress checkpoint (``checkpoints/{variant}/last.pt``, written atomically every
``train.checkpoint_every`` epochs but never after the last, the one before kept as
``previous.pt`` to fall back to when ``last.pt`` is unreadable): model and optimiser
state, the completed epoch, the sampler state, the history
rows so far, every RNG state (Python ``random``, NumPy, torch CPU, CUDA) and a digest of
the resolved settings + training index + label maps. A checkpoint whose digest differs
from the current job's is stale and ignored (training starts fresh and says so).
Leftover temporaries of a killed write are removed when training starts again.

Trained model (``models/{variant}/model.pt``): a dict of tensors and plain values only
(``state_dict``, ``settings``, ``labels``, ``arch``, ``num_persons``, ``num_outfits``,
``epoch``, ``atreid_version``), so it loads with ``torch.load(weights_only=True)``.

Both files hold only tensors and plain containers and are read with
``weights_only=True``: a file that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import logging
import pickle
import random
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from atreid import __version__
from atreid.errors import AtreidError
from atreid.io import atomic_torch_save, atomic_write_stream, keep_previous, remove_stale_temporaries

log = logging.getLogger("atreid.checkpoint")

CHECKPOINT_NAME = "last.pt"
PREVIOUS_NAME = "previous.pt"  # the checkpoint before last.pt: the fallback when last.pt is unreadable
CHECKPOINT_FORMAT = 1
MODEL_KEYS = ("state_dict", "settings", "labels", "arch", "num_persons", "num_outfits", "epoch", "atreid_version")


# ---- RNG states (as tensors and plain values, loadable with weights_only) -----------
def rng_states() -> dict[str, Any]:
    """Every global RNG state the training loop may touch."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    py = states["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = states["numpy"]
    np.random.set_state({"bit_generator": npy["bit_generator"],
                         "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
                         "has_gauss": npy["has_gauss"], "gauss": npy["gauss"]})
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---- safe loading ------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or its type name (``EOFError()``)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def safe_load(path: str | Path, what: str, fix: str = "delete it and rerun the step that writes it") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with one-line errors naming ``path``
    and ``fix``: missing, empty, corrupt or truncated, not a PyTorch file, or one that holds
    non-tensor Python objects (refused: only tensors and plain values are trusted)."""
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: {what} not found")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AtreidError(f"{path}: cannot read the {what} ({exc.strerror or _first_line(exc)}); {fix}") from None
    if size == 0:
        raise AtreidError(f"{path}: empty {what} (0 bytes; an interrupted copy or a full disk); {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch.save writes a zip archive; anything else failing the unpickler is just bytes
        # (torch's message about weights_only would mislead).
        if not zipfile.is_zipfile(path):
            raise AtreidError(f"{path}: not a PyTorch file (corrupt, or not written by atreid); {fix}") from None
        raise AtreidError(f"{path}: holds non-tensor Python objects and will not be loaded (only files saved "
                          f"by atreid with tensors and plain values are trusted); retrain or re-export the "
                          f"{what}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile) as exc:
        raise AtreidError(f"{path}: corrupt or truncated {what} ({_first_line(exc)[:200]}); {fix}") from None


# ---- in-progress checkpoint -----------------------------------------------------------
def save_checkpoint(checkpoint_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``checkpoint_dir/last.pt`` atomically, adding the format and,
    unless ``state`` already holds them (``"rng"``), the current RNG states.

    The content is streamed into a temporary sibling (no in-memory copy of a ~3 GB
    checkpoint). Once it is complete on disk, the ``last.pt`` it replaces is kept as
    ``previous.pt`` (atomically, see :func:`atreid.io.keep_previous`) and the sibling
    becomes ``last.pt``, so an unreadable ``last.pt`` costs one checkpoint, not the run.
    A write error (full disk) is one :class:`AtreidError` line; both files are then left
    as they were.
    """
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / CHECKPOINT_NAME
    payload = {"format": CHECKPOINT_FORMAT, **state}
    payload.setdefault("rng", rng_states())
    atomic_write_stream(path, lambda f: torch.save(payload, f),
                        before_replace=lambda: keep_previous(path, checkpoint_dir / PREVIOUS_NAME))
    return path


def cpu_copy(obj: Any, copy: bool = True) -> Any:
    """Nested dicts/lists/tuples with every tensor detached and on CPU.

    ``copy=True``: every tensor is a fresh copy, a frozen snapshot for a background
    writer while training goes on (the optimiser updates its buffers in place).
    ``copy=False``: CPU tensors are the live ones (no memory spent), for a write that
    finishes before training resumes.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=copy)
    if isinstance(obj, dict):
        return {k: cpu_copy(v, copy) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v, copy) for v in obj)
    return obj


class CheckpointWriter:
    """Runs checkpoint writes in order, in the caller's thread or in one background thread.

    With ``background=True`` (used on CUDA, where a ViT-B MoAE checkpoint of ~3 GB would
    otherwise stall an epoch of a few seconds) at most one write is in flight: the next
    :meth:`hold` or :meth:`submit` first waits for the previous one, and :meth:`close`
    waits for the last one, re-raising any error of the writer thread. Training then
    waits only for :meth:`hold`'s copy to host memory.
    """

    def __init__(self, background: bool = False) -> None:
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        # Host buffers of the background snapshots, by (name, key path), reused from one
        # checkpoint to the next: pinned for CUDA tensors (a device->host copy at full bus
        # speed), and no fresh 3 GB to page in each time (that made the copy 2-5x slower).
        self._buffers: dict[tuple, torch.Tensor] = {}

    def hold(self, obj: Any, name: str = "") -> Any:
        """What :meth:`submit`'s write may save of ``obj`` (a state dict; ``name`` tells two
        held in one snapshot apart): the live CPU tensors when the write runs here and now;
        for the background thread a copy in host buffers, frozen while training goes on
        (the optimiser updates its buffers in place)."""
        if not self.background:
            return cpu_copy(obj, copy=False)
        self.wait()  # the write in flight still reads the buffers
        synced: list[bool] = []
        held = self._copy_into_buffers(obj, (name,), synced)
        if synced:
            torch.cuda.synchronize()  # the non-blocking device->host copies have landed
        return held

    def _copy_into_buffers(self, obj: Any, key: tuple, synced: list[bool]) -> Any:
        if isinstance(obj, torch.Tensor):
            tensor = obj.detach()
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
                self._buffers[key] = buffer
            buffer.copy_(tensor, non_blocking=tensor.is_cuda)
            if tensor.is_cuda:
                synced.append(True)
            return buffer
        if isinstance(obj, dict):
            return {k: self._copy_into_buffers(v, key + (k,), synced) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._copy_into_buffers(v, key + (i,), synced) for i, v in enumerate(obj))
        return obj

    def submit(self, write: Callable[[], Any]) -> None:
        self.wait()
        if not self.background:
            write()
            return

        def run() -> None:
            try:
                write()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="atreid-checkpoint", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    close = wait


def _usable_checkpoint(path: Path, digest: str) -> tuple[dict[str, Any] | None, str]:
    """(state, "") when ``path`` can be resumed from, else (None, why not)."""
    if not path.is_file():
        return None, f"{path} absent"
    try:
        state = safe_load(path, "training checkpoint", fix="skipped")
    except AtreidError as exc:
        return None, str(exc).removesuffix("; skipped")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "epoch" not in state:
        return None, f"{path}: unknown checkpoint format"
    if state.get("digest") != digest:
        return None, (f"{path}: written for different settings or training data (digest {state.get('digest')}, "
                      f"now {digest}), so it is stale")
    return state, ""


def find_checkpoint(checkpoint_dir: str | Path, digest: str,
                    main: bool = True) -> tuple[dict[str, Any] | None, Path | None]:
    """The checkpoint to resume from and its path: ``last.pt``, else ``previous.pt``, else
    (None, None). With ``main`` (rank 0), every file passed over is said on the console
    (logger WARNING), and an unusable ``last.pt`` is deleted when ``previous.pt`` is used."""
    checkpoint_dir = Path(checkpoint_dir)
    last, previous = checkpoint_dir / CHECKPOINT_NAME, checkpoint_dir / PREVIOUS_NAME
    if not last.is_file() and not previous.is_file():
        return None, None
    state, why_last = _usable_checkpoint(last, digest)
    if state is not None:
        return state, last
    state, why_previous = _usable_checkpoint(previous, digest)
    if state is not None:
        if main:
            log.warning("falling back to the previous checkpoint %s (after epoch %s), one epoch back, because %s",
                        previous, state["epoch"], why_last)
            # The next save would otherwise keep the unusable last.pt as previous.pt, losing this one.
            last.unlink(missing_ok=True)
        return state, previous
    if main:
        log.warning("no usable checkpoint in %s: starting fresh, training from scratch (%s; %s)", checkpoint_dir,
                    why_last, why_previous)
    return None, None


def load_checkpoint(checkpoint_dir: str | Path, digest: str) -> dict[str, Any] | None:
    """The checkpoint state to resume from, or ``None`` (see :func:`find_checkpoint`)."""
    return find_checkpoint(checkpoint_dir, digest)[0]


def remove_stale_checkpoint_temporaries(checkpoint_dir: str | Path) -> list[Path]:
    """Remove what a killed checkpoint write left (``.last.pt.*.tmp``, ``.previous.pt.*.tmp``)."""
    checkpoint_dir = Path(checkpoint_dir)
    return [leftover for name in (CHECKPOINT_NAME, PREVIOUS_NAME)
            for leftover in remove_stale_temporaries(checkpoint_dir / name, suffixes=(".tmp",))]


def remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Delete ``last.pt`` and ``previous.pt`` (and the directory when that leaves it empty)."""
    checkpoint_dir = Path(checkpoint_dir)
    for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
        (checkpoint_dir / name).unlink(missing_ok=True)
    remove_stale_checkpoint_temporaries(checkpoint_dir)
    try:
        checkpoint_dir.rmdir()
    except OSError:
        pass


# ---- trained model file ---------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def save_trained_model(path: str | Path, *, model: nn.Module, settings: dict[str, Any], labels: dict[str, Any],
                       epoch: int, provenance: dict[str, Any] | None = None) -> None:
    """Write the final ``model.pt`` payload atomically (``provenance``: what the run was
    built from, atreid.provenance.training_provenance)."""
    payload = {
        "state_dict": cpu_state_dict(model),
        "settings": settings,
        "labels": {k: labels[k] for k in ("persons", "outfits", "outfit_to_person")},
        "arch": settings["model"]["arch"],
        "num_persons": len(labels["persons"]),
        "num_outfits": len(labels["outfits"]),
        "epoch": int(epoch),
        "atreid_version": __version__,
    }
    if provenance is not None:
        payload["provenance"] = provenance
    atomic_torch_save(path, payload)


# The classifier sizing of model files written before model.classifier_sizing existed:
# classifiers were then sized by the loss (with SAID the same sizes as the reference's).
SIZING_BEFORE_THE_OPTION = "by_loss"


def model_from_settings(settings: dict[str, Any], num_persons: int, num_outfits: int) -> nn.Module:
    """Build the (untrained) model a variant's settings describe.

    The one place where training, evaluation (:func:`load_trained_model`) and the
    reference import build a model, so their classifier sizes always agree.
    """
    # start-up: PIL, timm, torchvision, yaml loaded only when this runs
    from atreid.model import build_model

    model = settings["model"]
    return build_model(model["arch"], ncls=settings["ncls"], moae=settings["moae"], num_persons=num_persons,
                       num_outfits=num_outfits, img_size=tuple(model["image_size"]),
                       patch_stride=model["patch_stride"], drop_path_rate=model["drop_path_rate"],
                       gate=model["gate"], said=settings["said"], classifier_sizing=model["classifier_sizing"])


def load_trained_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load ``models/{variant}/model.pt`` (``weights_only=True``) -> (eval-mode model, payload)."""
    payload = safe_load(path, "trained model", fix=f"delete it and retrain (`snakemake {path}`)")
    missing = [k for k in MODEL_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise AtreidError(f"{path}: not an atreid model file (missing {', '.join(missing)}); retrain it with "
                          "`snakemake models/<variant>/model.pt`")
    settings = payload["settings"]
    if "classifier_sizing" not in settings["model"]:  # written before the option (docs/ARCHITECTURE.md)
        settings["model"]["classifier_sizing"] = SIZING_BEFORE_THE_OPTION
    model = model_from_settings(settings, payload["num_persons"], payload["num_outfits"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise AtreidError(f"{path}: weights do not fit the {payload['arch']} model its settings describe "
                          f"({str(exc).splitlines()[0]}); retrain it") from None
    return model.to(device).eval(), payload
