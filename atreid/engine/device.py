"""The one device resolver: a ``device`` setting (``auto``, ``cpu``, ``cuda``) -> a torch device."""

from __future__ import annotations

import torch

from atreid.errors import AtreidError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, *, setting: str = "--device", local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA when present. ``setting`` names where ``name`` came from, for the
    messages (``--device``, ``eval.device``). ``local_rank``: the DDP rank on this machine,
    whose GPU a CUDA device is (None: the current GPU)."""
    if name not in DEVICE_CHOICES:
        raise AtreidError(f"{setting} {name!r} unknown; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise AtreidError(f"{setting} is cuda but no CUDA device is available; use auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank is None:
        return torch.device("cuda", torch.cuda.current_device())
    if local_rank >= torch.cuda.device_count():
        raise AtreidError(f"rank {local_rank} needs GPU {local_rank} but only {torch.cuda.device_count()} CUDA "
                          "device(s) are visible; lower train.devices")
    return torch.device("cuda", local_rank)
