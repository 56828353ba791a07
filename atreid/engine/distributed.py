"""Multi-device training: torchrun relaunch, process-group setup, small collectives.

``train.devices > 1`` trains with DistributedDataParallel. The CLI, when not already
running under torchrun (no ``LOCAL_RANK`` in the environment), relaunches itself with
``python -m torch.distributed.run --standalone --nproc_per_node <devices>``. Backend:
NCCL on CUDA, gloo on CPU.

Global-batch semantics: every rank draws the same P x K global batch and keeps P/world
whole identities of it (:class:`atreid.engine.sampler.PKSampler`); DDP averages the
gradients. BN necks: on CUDA the model's BatchNorm layers are converted to
``SyncBatchNorm`` so batch statistics are those of the whole P x K batch, as in the
single-GPU recipe. On CPU (gloo) SyncBatchNorm is not supported by PyTorch, so BN
statistics there are per rank (P/world identities); this is a CPU-testing path only.
The per-head losses (SAID/HDW) are computed per rank on its own samples, so a multi-GPU
run is the recipe up to HDW's batch means being per rank.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

log = logging.getLogger("atreid.distributed")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``; ``local_rank`` picks the GPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def context_from_env() -> DistContext:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun); a single process otherwise."""
    if not under_torchrun():
        return DistContext()
    return DistContext(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                       local_rank=int(os.environ["LOCAL_RANK"]))


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (no-op for a single process or when already joined)."""
    if not ctx.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size, **kwargs)
    log.info("rank %d/%d joined the %s process group", ctx.rank, ctx.world_size, backend)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ranks (identity for a single process)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (so every rank stops together)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def torchrun_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m atreid <args>``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "atreid", *module_args]


def relaunch_with_torchrun(nproc: int, module_args: Sequence[str]) -> int:
    """Run ``atreid <module_args>`` under torchrun with ``nproc`` processes; returns its exit code."""
    command = torchrun_command(nproc, module_args)
    log.info("train.devices = %d: relaunching under torchrun: %s", nproc, " ".join(command))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default; the trainer sets threads itself
    return subprocess.call(command, env=env)
