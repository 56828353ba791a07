"""Multi-device training: torchrun relaunch, process-group setup, small collectives.

``train.devices > 1`` trains with DistributedDataParallel. The CLI, when not already
running under torchrun (no ``LOCAL_RANK`` in the environment), relaunches itself with
``python -m torch.distributed.run --standalone --nproc_per_node <devices>``. Backend:
NCCL on CUDA, gloo on CPU. ``--standalone`` rendezvouses on a free loopback port, so
DDP jobs running side by side do not clash.

Global-batch semantics: every rank draws the same P x K global batch and keeps P/world
whole identities of it (:class:`atreid.engine.sampler.PKSampler`); DDP averages the
gradients. Every batch statistic is that of the global batch, as in the single-GPU
recipe: the BN necks' (:func:`sync_batchnorm`: PyTorch's ``SyncBatchNorm`` on CUDA,
:class:`GlooSyncBatchNorm` on CPU, where gloo has no ``SyncBatchNorm``), and the loss's
-- SAID's subset counts and HDW's group means through :func:`autograd_all_reduce`, the
triplet loss's mining through :func:`autograd_all_gather` (the criterion's ``rank_sum``
and ``rank_gather``). A DDP run trains to the single-process weights up to float
summation order (tests/test_ddp_rule.py: 6.6e-7 on CPU).
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
from torch import nn

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


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum over ranks of the output's gradients.

    (``torch.distributed.nn.functional.all_reduce`` does the same but is deprecated.)
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def autograd_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks, differentiable: each rank's input gets the summed gradient.

    What makes a batch statistic that of the global batch (BN necks, HDW's group means,
    SAID's subset counts) with the gradients one process over that batch would have.
    """
    return _AllReduceSum.apply(tensor)


class _AllGather(torch.autograd.Function):
    """The ranks' tensors (of one shape) concatenated along dim 0 in rank order; each rank's
    input gets its slice of the gradient summed over ranks."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return total[start:start + ctx.rows]


def autograd_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (the same shape on all) concatenated in rank order, differentiable.

    The batch-hard triplet loss mines over the global batch with it; every rank computes
    the same loss, and DDP's gradient averaging then gives the single-process gradient.
    """
    return _AllGather.apply(tensor)


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the batch of every rank (CPU/gloo).

    The same parameters, buffers and state_dict keys as the BatchNorm it replaces. In
    training under an initialised process group, the mean and the (biased) variance are
    all-reduced with autograd-aware collectives (two passes, as a single BatchNorm
    computes them), so gradients reach every rank's inputs as in one process over the
    global batch; the running statistics take the global mean and unbiased variance.
    Otherwise (evaluation, one process) it is a plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        local = torch.tensor([input.numel() // input.shape[1]], dtype=input.dtype, device=input.device)
        count = autograd_all_reduce(local)
        mean = autograd_all_reduce(input.sum(dims)) / count
        centred = input - mean.view(shape)
        var = autograd_all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(unbiased.detach(), factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` with statistics over all ranks (in place where nested).

    CUDA: PyTorch's ``SyncBatchNorm``; CPU: :class:`GlooSyncBatchNorm`. The parameters
    are kept (the same objects, so an optimiser built before still updates them).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        synced = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean, synced.running_var = module.running_mean, module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, sync_batchnorm(child, device))
    return module


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
