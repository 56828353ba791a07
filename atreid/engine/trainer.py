"""Train one variant: data, model, optimiser, schedule, checkpoints, history, DDP.

:func:`train_variant` is the whole training job behind ``atreid train``. Reproducibility
design (CPU: a resumed run ends with weights ``torch.equal`` to an uninterrupted one):

- data order and augmentation are a pure function of (seed, epoch) -- the sampler draws
  batches from a generator seeded with (seed, epoch) and gives every sample its own
  augmentation seed (:mod:`atreid.engine.sampler`, :mod:`atreid.engine.transforms`);
- the global RNGs used inside the model (drop-path) are reseeded at the start of every
  epoch from (seed, epoch, rank), after the epoch's DataLoader iterator exists (creating
  an iterator draws from torch's generator);
- the checkpoint written every ``train.checkpoint_every`` epochs but never after the last
  holds model, optimiser (momentum buffers, group lrs), sampler state, history and all RNG
  states, and is restored as a whole (after the last epoch model.pt is written instead,
  and the checkpoints deleted). On CUDA a background thread writes it from a host copy,
  so training waits only for that copy.

The triplet loss is on when ``epoch > train.triplet_start_epoch`` (reference behaviour;
the recipe's 999 means never).

The training set is ``data.train_on``'s (``settings["train_on"]``, AT-USTC when absent):
a variant needing labels the split lacks is refused before anything is built
(:func:`atreid.data.labels.check_trainable`), and a head whose loss subset is empty is
reported -- in the log, and in the history as an empty loss and accuracy for every epoch
in which no batch gave it a sample, never a 0 (:func:`head_epoch_means`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from atreid.constants import SCENARIOS
from atreid.data.labels import DEFAULT_TRAIN_ON, check_trainable, empty_heads, label_support
from atreid.engine import distributed as ddp
from atreid.engine.checkpoint import (CheckpointWriter, find_checkpoint,
                                      model_from_settings, remove_checkpoint, remove_stale_checkpoint_temporaries,
                                      rng_states, save_checkpoint, save_trained_model, set_rng_states, unwrap)
from atreid.engine.dataset import build_train_loader, read_training_index
from atreid.engine.device import resolve_device
from atreid.engine.optim import build_optimizer, set_epoch_lr
from atreid.errors import AtreidError
from atreid.losses import UniATCriterion
from atreid.losses.said import head_masks
from atreid.provenance import training_provenance
from atreid.io import atomic_write_csv, file_sha256, progress, remove_stale_temporaries, settings_sha256

log = logging.getLogger("atreid.train")

TIMING_COLUMNS = ("images_per_s", "epoch_time_s")
_EPOCH_STREAM = 0xE90C  # separates the per-epoch global-RNG seeds from other seed uses


# ---- small helpers ---------------------------------------------------------------------
def configure_backend(device: torch.device, threads: int, world_size: int) -> None:
    """CPU threads (shared by the ranks on one machine); TF32 matmuls on CUDA."""
    if threads and threads > 0:
        per_rank = threads if device.type == "cuda" else max(1, threads // world_size)
        torch.set_num_threads(per_rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        torch.cuda.set_device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, _EPOCH_STREAM]).generate_state(1, dtype=np.uint64)[0]
               % (2 ** 63))


def read_label_maps(path: str | Path) -> dict[str, Any]:

    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: label maps not found; run `snakemake {path}` to build them")
    try:
        labels = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AtreidError(f"{path}: not valid JSON ({exc}); rebuild it with `snakemake {path}`") from None
    missing = [k for k in ("persons", "outfits", "outfit_to_person") if k not in labels]
    if missing:
        raise AtreidError(f"{path}: missing key(s) {', '.join(missing)}; rebuild it with `snakemake {path}`")
    return labels


def check_labels(index: pd.DataFrame, labels: dict[str, Any], index_path: Path, labels_path: Path) -> None:
    num_persons, num_outfits = len(labels["persons"]), len(labels["outfits"])
    if len(labels["outfit_to_person"]) != num_outfits:
        raise AtreidError(f"{labels_path}: outfit_to_person has {len(labels['outfit_to_person'])} entries for "
                          f"{num_outfits} outfits; rebuild the label maps")
    for column, bound in (("person_label", num_persons), ("outfit_label", num_outfits)):
        values = index[column]
        if values.min() < 0 or values.max() >= bound:
            raise AtreidError(f"{index_path}: {column} outside 0..{bound - 1} of {labels_path}; the index and the "
                              "label maps come from different runs: rebuild both")


def head_subset_sizes(modality: torch.Tensor, said: bool) -> list[int]:
    """Samples in each head's identity-loss subset of one batch (SAID: by modality; else all)."""
    if not said:
        return [int(modality.numel())] * len(SCENARIOS)

    return head_masks(modality, len(SCENARIOS)).sum(dim=1).tolist()


def head_epoch_means(row: dict[str, Any], seen: list[float]) -> list[str]:
    """Per-head loss and accuracy of ``row`` as means over the batches where the head had samples.

    ``row`` holds per-batch means over the epoch's batches (``loss_h{i}``, ``acc_h{i}``);
    ``seen[i]`` is the share of those batches in which head ``i``'s subset was not empty.
    A head with no sample in the whole epoch gets NaN (an empty history cell), not the
    criterion's 0. Returns the names of those heads.
    """
    empty = []
    for head, share in enumerate(seen):
        if share <= 0:
            empty.append(SCENARIOS[head])
        for key in (f"loss_h{head}", f"acc_h{head}"):
            if key in row:
                row[key] = row[key] / share if share > 0 else math.nan
    return empty


# ---- pieces a test may replace ----------------------------------------------------------
def build_training_model(settings: dict[str, Any], num_persons: int, num_outfits: int) -> nn.Module:
    return model_from_settings(settings, num_persons, num_outfits)


def build_criterion(settings: dict[str, Any], labels: dict[str, Any]) -> nn.Module:

    # The same classifier sizing the model was built with (model_from_settings).
    return UniATCriterion(said=settings["said"], hdw=settings["hdw"],
                          triplet_margin=settings["train"]["triplet_margin"],
                          outfit_to_person=labels["outfit_to_person"],
                          classifier_sizing=settings["model"]["classifier_sizing"])


def load_pretrained_weights(model: nn.Module, source: str, *, at_run_size: bool = False) -> Any:
    """Load the arch's timm weights file ``source`` into ``model``.

    ``at_run_size``: the file comes from the pretraining stage, which trains at the run's
    image size (a published file is at timm's own size).
    """
    # start-up: PIL, timm, torchvision loaded only when this runs
    from atreid.model.pretrained import load_pretrained
    from atreid.model.uniat import get_arch

    arch = get_arch(model.arch)
    size = tuple(model.base.patch_embed.img_size) if at_run_size else None
    return load_pretrained(model, source, timm_name=arch.timm_name, timm_kwargs=arch.timm_kwargs(size))


# ---- the job -----------------------------------------------------------------------------
def train_variant(settings: dict[str, Any], *, index_csv: str | Path, labels_json: str | Path,
                  images_root: str | Path, out_path: str | Path, history_path: str | Path,
                  checkpoint_dir: str | Path, threads: int = 0, device: str = "auto",
                  pretrained_file: str | Path | None = None) -> dict[str, Any]:
    """Train the variant ``settings`` describes and write ``out_path`` and ``history_path``.

    Resumes from ``checkpoint_dir/last.pt`` (or, when that is unreadable, ``previous.pt``,
    one epoch back) when it was written for the same settings, training index and label
    maps; removes both once the final model is written. Leftover temporaries of a killed
    earlier run (``.last.pt.*.tmp``, ``.model.pt.*.tmp``, ...) are removed first. Under
    torchrun (DDP) every rank calls this; only rank 0 writes files.

    ``model.pretrained: synthetic`` means the pipeline's own pre-trained backbone
    (:mod:`atreid.engine.pretrain`), whose file ``pretrained_file`` names.

    Returns:
        A summary dict: ``epochs``, ``resumed_from`` (last epoch of the checkpoint, 0 if
        none), ``history`` (the per-epoch rows) and ``out``.
    """
    ctx = ddp.context_from_env()
    train = settings["train"]
    if train["devices"] > 1 and not ctx.enabled:
        log.warning("train.devices = %d but not running under torchrun: training in one process "
                    "(the CLI relaunches itself with torchrun)", train["devices"])
    dev = resolve_device(device, local_rank=ctx.local_rank if ctx.enabled else None)
    configure_backend(dev, threads, ctx.world_size)
    ddp.init_process_group(ctx, dev)
    try:
        return _train(settings, ctx, dev, Path(index_csv), Path(labels_json), Path(images_root), Path(out_path),
                      Path(history_path), Path(checkpoint_dir), pretrained_source(settings, pretrained_file))
    finally:
        ddp.destroy_process_group()


def pretrained_source(settings: dict[str, Any], pretrained_file: str | Path | None) -> str:
    """What ``model.pretrained`` loads: ``none``, ``hub``, a file, or for ``synthetic`` the stage's file."""
    source = settings["model"]["pretrained"]
    if source != "synthetic":
        return source
    if pretrained_file is None:
        raise AtreidError("model.pretrained is 'synthetic' (the pipeline's pre-trained backbone) but no "
                          "--pretrained-file was given; build it with `snakemake models/pretrained/backbone.pth` "
                          "and pass that file")
    return str(pretrained_file)


def _train(settings: dict[str, Any], ctx: ddp.DistContext, dev: torch.device, index_csv: Path, labels_json: Path,
           images_root: Path, out_path: Path, history_path: Path, checkpoint_dir: Path,
           pretrained: str = "none") -> dict[str, Any]:
    train, name, seed = settings["train"], settings["name"], int(settings["seed"])
    index = read_training_index(index_csv)
    labels = read_label_maps(labels_json)
    check_labels(index, labels, index_csv, labels_json)
    support = label_support(index, settings.get("train_on", DEFAULT_TRAIN_ON))
    check_trainable(settings, support)
    if ctx.is_main:
        for head, why in empty_heads(settings, support).items():
            log.warning("head %s is not trained: %s", head, why)
    if not images_root.is_dir():
        raise AtreidError(f"{images_root}: image folder not found; --images must be the folder the index paths "
                          "are relative to")
    # A checkpoint resumes only what started from the same data and the same starting weights.
    start = file_sha256(pretrained) if pretrained not in ("none", "hub") and Path(pretrained).is_file() else pretrained
    digest = settings_sha256({"settings": settings, "index": file_sha256(index_csv),
                              "labels": file_sha256(labels_json), "pretrained": start})[:16]
    num_persons, num_outfits = len(labels["persons"]), len(labels["outfits"])

    if ctx.is_main:
        # This step is the only writer of these files: what a killed earlier run left is stale.
        remove_stale_checkpoint_temporaries(checkpoint_dir)
        for output in (out_path, history_path):
            remove_stale_temporaries(output, suffixes=(".tmp",))

    # Model, criterion, optimiser (deterministic initialisation from the seed).
    seed_everything(seed)
    model = build_training_model(settings, num_persons, num_outfits)
    criterion = build_criterion(settings, labels)
    if ctx.enabled:  # the loss's batch statistics (SAID, HDW, triplet mining) over the global batch
        criterion.rank_sum, criterion.rank_gather = ddp.autograd_all_reduce, ddp.autograd_all_gather
    state, state_path = find_checkpoint(checkpoint_dir, digest, main=ctx.is_main)
    if state is None and pretrained != "none":
        report = load_pretrained_weights(model, pretrained,
                                         at_run_size=settings["model"]["pretrained"] == "synthetic")
        log.info("pretrained weights %s: %s", pretrained, report)
    model.to(dev)
    criterion.to(dev)
    optimizer = build_optimizer(model, train, fused=dev.type == "cuda")

    loader, sampler = build_train_loader(index, images_root, settings, rank=ctx.rank, world_size=ctx.world_size,
                                         pin_memory=dev.type == "cuda")
    history: list[dict[str, Any]] = []
    start_epoch = 1
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        history = [dict(row) for row in state["history"]]
        set_rng_states(state["rng"])
        start_epoch = int(state["epoch"]) + 1
        if ctx.is_main:
            log.warning("resuming %s from %s after epoch %d of %d", name, state_path, state["epoch"],
                        train["epochs"])
    resumed_from = start_epoch - 1
    del state

    net = _wrap(model, settings, ctx, dev)
    use_amp = dev.type == "cuda" and train["amp"] == "bf16"
    epochs, iters = train["epochs"], train["iters_per_epoch"]
    global_batch = train["batch_p"] * train["batch_k"]
    # Background checkpoint writes on CUDA (epochs of seconds, checkpoints of GBs).
    writer = CheckpointWriter(background=dev.type == "cuda")
    try:
        for epoch in range(start_epoch, epochs + 1):
            net.train()
            lr = set_epoch_lr(optimizer, epoch, train)
            use_triplet = epoch > train["triplet_start_epoch"]
            sampler.set_epoch(epoch)
            batches = iter(loader)
            # Reseed after the iterator exists: creating one may draw from torch's generator.
            seed_everything(epoch_seed(seed, epoch, ctx.rank))
            sums: dict[str, float] = {}
            seen = [0] * len(SCENARIOS)  # batches in which each head's subset had samples
            started = time.perf_counter()
            if ctx.is_main:
                batches = progress(batches, total=iters, desc=f"train {name} epoch {epoch}/{epochs}", unit="it")
            for iteration, (images, person, outfit, modality) in enumerate(batches, start=1):
                stats = train_step(net, criterion, optimizer, images, person, outfit, modality, dev=dev,
                                   use_amp=use_amp, use_triplet=use_triplet, clip=train["clip_grad_norm"],
                                   epoch=epoch, iteration=iteration)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                for head, size in enumerate(head_subset_sizes(modality, settings["said"])):
                    seen[head] += size > 0
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            elapsed = time.perf_counter() - started
            keys = list(sums)
            means = ddp.all_reduce_mean(torch.tensor([sums[k] / iters for k in keys] + [n / iters for n in seen],
                                                     dtype=torch.float64, device=dev)).tolist()
            row: dict[str, Any] = {"epoch": epoch, "lr": lr}
            row.update({k: float(v) for k, v in zip(keys, means)})
            empty = head_epoch_means(row, means[len(keys):])
            row["images_per_s"] = global_batch * iters / elapsed
            row["epoch_time_s"] = elapsed
            history.append(row)
            if ctx.is_main:
                log.info("epoch %d/%d lr %.6g loss %.4f %.1f images/s", epoch, epochs, lr,
                         row.get("loss", math.nan), row["images_per_s"])
                if empty:
                    log.warning("epoch %d: no sample for head(s) %s in any batch: their loss and accuracy are "
                                "left empty in the history", epoch, ", ".join(empty))
                if checkpoint_due(epoch, epochs, train["checkpoint_every"]):
                    snapshot = {"digest": digest, "epoch": epoch, "name": name,
                                "model": writer.hold(unwrap(model).state_dict(), "model"),
                                "optimizer": writer.hold(optimizer.state_dict(), "optimizer"),
                                "sampler": sampler.state_dict(),
                                "history": [dict(r) for r in history], "rng": rng_states()}
                    writer.submit(lambda snapshot=snapshot: save_checkpoint(checkpoint_dir, snapshot))
                atomic_write_csv(history_path, pd.DataFrame(history))
            ddp.barrier()
    finally:
        writer.close()

    if ctx.is_main:
        atomic_write_csv(history_path, pd.DataFrame(history))
        provenance = training_provenance(settings, data_folder=index_csv.parent, pretrained=pretrained)
        save_trained_model(out_path, model=model, settings=settings, labels=labels, epoch=epochs,
                           provenance=provenance)
        remove_checkpoint(checkpoint_dir)
        log.info("trained %s -> %s", name, out_path)
    ddp.barrier()
    return {"epochs": epochs, "resumed_from": resumed_from, "history": history, "out": str(out_path)}


def checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether a resume checkpoint follows ``epoch``: every ``every`` epochs, never after the
    last one (model.pt is written next and the checkpoints deleted: for ViT-B MoAE that
    saves a 3 GB write per run)."""
    return epoch < epochs and epoch % every == 0


def compile_model(net: nn.Module) -> nn.Module:
    """``torch.compile`` (Inductor: C++ kernels on CPU, Triton on CUDA) of the whole model.

    One graph per model, no graph breaks (MoAE takes its fixed-shape dense path inside a
    graph, :meth:`atreid.model.moae.MoAE._routes`), compiled for the training batch's shape
    (``dynamic=False``: every training batch has it). ``fallback_random``: drop-path masks
    are drawn by the same aten calls as in eager mode, not by Inductor's own generator, so a
    compiled run draws the eager run's masks (equal losses up to rounding) and resumes
    exactly as an eager one does.
    """
    return torch.compile(net, dynamic=False, options={"fallback_random": True})


def _wrap(model: nn.Module, settings: dict[str, Any], ctx: ddp.DistContext, dev: torch.device) -> nn.Module:
    """DDP (BatchNorm statistics over all ranks) and torch.compile (``train.compile``)."""
    net = model
    if ctx.enabled:
        net = ddp.sync_batchnorm(net, dev)
        # Every parameter gets a gradient in every variant, whatever the routing: MoAE atoms
        # through the stacked matmuls (an empty group gives zeros), the hard gate an exact
        # zero (moae._ZeroGradTo). DDP raises at the next step if one ever does not.
        net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    if settings["train"]["compile"]:
        net = compile_model(net)
    return net


def train_step(net: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               person: torch.Tensor, outfit: torch.Tensor, modality: torch.Tensor, *, dev: torch.device,
               use_amp: bool, use_triplet: bool, clip: float | None, epoch: int = 0,
               iteration: int = 0) -> dict[str, float]:
    """One optimisation step; returns the criterion's stats plus ``loss``."""
    images = images.to(dev, non_blocking=True)
    person = person.to(dev, non_blocking=True)
    outfit = outfit.to(dev, non_blocking=True)
    modality = modality.to(dev, non_blocking=True)
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
        tokens, logits = net(images)
    loss, stats = criterion(tokens.float(), [lg.float() for lg in logits], person, outfit, modality, use_triplet)
    value = float(loss.detach())
    if ddp.any_rank(not math.isfinite(value), dev):
        raise AtreidError(f"training diverged: non-finite loss ({value}) at epoch {epoch}, iteration {iteration}; "
                          "no model written -- lower train.lr or set train.clip_grad_norm")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    optimizer.step()
    out = {k: float(v) for k, v in stats.items()}
    out["loss"] = value
    return out
