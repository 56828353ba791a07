"""Pre-train the demo backbone: our stand-in for the paper's ImageNet pre-training.

The paper fine-tunes a ViT-B/16 pre-trained on ImageNet (timm
``vit_base_patch16_224.orig_in21k_ft_in1k``). No such weights exist for the demo's tiny
backbone, so the pipeline makes its own once (rule ``pretrain_backbone``): a plain timm
``VisionTransformer`` of the arch's shape learns to classify images of a synthetic
population that shares no identity with the synthetic AT-USTC (its persons, outfits and
cameras are drawn from generators of their own stream, :data:`PRETRAIN_STREAM`), and is
saved as timm saves a classifier -- a bare ``state_dict`` with ``cls_token``,
``pos_embed``, ``patch_embed``, ``blocks``, ``norm`` and ``head`` -- so every variant
loads it through exactly the path the paper's weights take
(:func:`atreid.model.pretrained.load_pretrained`: timm reads the file through
``pretrained_cfg_overlay=dict(file=...)``, CLS tokens and the FFN are copied into the
six tokens and the MoAE atoms).

The classes are the population's persons (``pretrain.labels: person``), seen in several
outfits by RGB and infrared cameras (``pretrain.infrared``): what transfers is how to
see the cues that identify a person, as a large disjoint person dataset would teach it.
``labels: outfit`` (classes are (person, outfit) looks) with ``infrared: false`` is the
closer analogue of ImageNet's appearance classes. Measured on the demo (2 CPU cores,
benchmarks/README.md): 800 iterations of ``outfit``/RGB left the backbone at chance on
AT-USTC, 800 of ``person``/infrared at Any-Time R1 8.9 before any fine-tuning, so
``person`` is the default. A tiny ViT trained from scratch sits on a long plateau before
it learns anything (also measured there), which is why the pre-training, not the
per-variant fine-tuning, gets most of the demo's training budget.

Deterministic on CPU for a fixed ``pretrain.seed`` and ``pretrain.threads``: the
population is a pure function of the settings, and batches, augmentation and
initialisation come from one seeded generator.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from atreid.data.synthetic.render import Camera, Identity, Outfit, render_image
from atreid.engine.transforms import IMAGENET_MEAN, IMAGENET_STD
from atreid.errors import AtreidError
from atreid.io import atomic_torch_save, atomic_write_csv, progress, remove_stale_temporaries

log = logging.getLogger("atreid.pretrain")

# Mixed into every generator seed of the population: never the stream of the synthetic
# AT-USTC (seeded by (seed, kind, ...)) nor of a miniature (seed, benchmark code, ...).
PRETRAIN_STREAM = 0x7E7A1
_IDENTITY, _OUTFIT, _CAMERA, _VIEW, _TRAIN = range(5)
LABEL_KINDS = ("outfit", "person")
HISTORY_EVERY = 25  # iterations per history row


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), PRETRAIN_STREAM, *(int(k) for k in keys)])


def render_population(settings: dict[str, Any], image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Images and class labels of the pre-training population.

    Every person gets ``outfits`` outfits; every (person, outfit) is seen ``views`` times,
    each time by a camera drawn from ``cameras`` (half of them infrared when
    ``infrared``) with its own frame jitter.

    Returns:
        ``(images, labels)``: ``(N, H, W, 3)`` uint8 and ``(N,)`` int64, ordered by
        person, outfit, view.
    """
    seed = int(settings["seed"])
    height, width = int(image_size[0]), int(image_size[1])
    cameras = [Camera.sample(_rng(seed, _CAMERA, c), c + 1) for c in range(settings["cameras"])]
    # With infrared, the second half of the cameras are IR ones (at least one of each kind).
    infrared = [settings["infrared"] and c >= len(cameras) // 2 for c in range(len(cameras))]
    persons, outfits, views = settings["persons"], settings["outfits"], settings["views"]
    images = np.empty((persons * outfits * views, height, width, 3), dtype=np.uint8)
    labels = np.empty(len(images), dtype=np.int64)
    i = 0
    for person in progress(range(persons), total=persons, desc="render pre-training population", unit="person"):
        identity = Identity.sample(_rng(seed, _IDENTITY, person))
        for outfit_id in range(outfits):
            outfit = Outfit.sample(_rng(seed, _OUTFIT, person, outfit_id))
            rng = _rng(seed, _VIEW, person, outfit_id)
            for _ in range(views):
                camera = int(rng.integers(len(cameras)))
                images[i] = render_image(identity, outfit, cameras[camera], infrared=infrared[camera], rng=rng,
                                         height=height, width=width)
                labels[i] = person * outfits + outfit_id if settings["labels"] == "outfit" else person
                i += 1
    return images, labels


def timm_backbone(arch: str, image_size: tuple[int, int], num_classes: int) -> nn.Module:
    """The timm ViT whose weights file the arch loads as ``model.pretrained`` (random init)."""
    # start-up: PIL, timm, torchvision, yaml loaded only when this runs
    import timm

    from atreid.model.uniat import get_arch

    config = get_arch(arch)
    return timm.create_model(config.timm_name, pretrained=False, num_classes=num_classes,
                             **config.timm_kwargs(image_size))


class BatchAugment:
    """Pad-and-crop and horizontal flip of a uint8 batch, drawn from ``generator``.

    The same augmentation as the fine-tuning recipe (``train.pad``, ``train.flip``),
    applied on tensors because the population lives in memory.
    """
    def __init__(self, pad: int, flip: float) -> None:
        self.pad, self.flip = int(pad), float(flip)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = images.shape
        if self.pad > 0:
            padded = F.pad(images, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=generator)
            images = torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy.tolist(),
                                                                                               dx.tolist()))])
        if self.flip > 0:
            flips = torch.rand(n, generator=generator) < self.flip
            images = torch.where(flips[:, None, None, None], images.flip(-1), images)
        return images


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _lr_at(iteration: int, settings: dict[str, Any]) -> float:
    """Linear warm-up, then cosine to 0 (per iteration)."""
    total, warmup = settings["iterations"], settings["warmup_iterations"]
    if iteration <= warmup:
        return settings["lr"] * iteration / max(1, warmup)
    progress_ = (iteration - warmup) / max(1, total - warmup)
    return settings["lr"] * 0.5 * (1 + math.cos(math.pi * progress_))


def check_settings(settings: dict[str, Any]) -> None:
    if settings["labels"] not in LABEL_KINDS:
        raise AtreidError(f"pretrain.labels: {settings['labels']!r} is not one of {', '.join(LABEL_KINDS)}")
    if settings["labels"] == "person" and settings["persons"] < 2:
        raise AtreidError("pretrain.persons: at least 2 persons are needed to classify them")
    if settings["infrared"] and settings["cameras"] < 2:
        raise AtreidError("pretrain.cameras: at least 2 cameras (one RGB, one infrared) with pretrain.infrared")


def pretrain_backbone(settings: dict[str, Any], *, out_path: str | Path, history_path: str | Path) -> dict[str, Any]:
    """Pre-train the backbone ``settings`` describes; write the weights file and history.

    Args:
        settings: ``{"arch", "image_size", "pretrain": {...}}`` (the params.yaml
            ``model.arch``/``model.image_size`` and the ``pretrain`` section).
        out_path: the weights file (a timm ``state_dict``, written atomically).
        history_path: CSV of ``iteration, lr, loss, accuracy`` every
            :data:`HISTORY_EVERY` iterations.

    Returns:
        A summary: classes, images, final loss and training accuracy, seconds.
    """
    pre = settings["pretrain"]
    check_settings(pre)
    out_path, history_path = Path(out_path), Path(history_path)
    for output in (out_path, history_path):
        remove_stale_temporaries(output, suffixes=(".tmp",))
    torch.set_num_threads(pre["threads"])  # fixed by the settings: the weights depend on it
    image_size = (int(settings["image_size"][0]), int(settings["image_size"][1]))
    started = time.perf_counter()
    images_np, labels_np = render_population(pre, image_size)
    images = torch.from_numpy(images_np).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, H, W)
    labels = torch.from_numpy(labels_np)
    num_classes = int(labels.max()) + 1
    rendered = time.perf_counter() - started

    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([pre["seed"], PRETRAIN_STREAM, _TRAIN])
                                                  .generate_state(1)[0]))
    torch.manual_seed(int(generator.initial_seed() % 2 ** 31))  # timm's init draws from the global generator
    model = timm_backbone(settings["arch"], image_size, num_classes)
    # CUDA when present (a ViT-B pre-training under the paper preset); bit-exact runs on CPU.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and n not in ("pos_embed", "cls_token")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and n not in ("pos_embed", "cls_token"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": pre["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=pre["lr"])
    augment = BatchAugment(pre["pad"], pre["flip"])
    history: list[dict[str, Any]] = []
    loss_sum = correct = seen = 0.0
    model.train()
    steps = progress(range(1, pre["iterations"] + 1), total=pre["iterations"], desc="pre-train backbone", unit="it")
    for iteration in steps:
        lr = _lr_at(iteration, pre)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = torch.randint(0, len(images), (pre["batch_size"],), generator=generator)
        x = _normalise(augment(images[batch], generator)).to(device)
        y = labels[batch].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=pre["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += float((logits.argmax(1) == y).sum())
        seen += len(y)
        if iteration % HISTORY_EVERY == 0 or iteration == pre["iterations"]:
            history.append({"iteration": iteration, "lr": lr, "loss": loss_sum / seen, "accuracy": correct / seen})
            log.info("iteration %d/%d lr %.3g loss %.4f accuracy %.3f", iteration, pre["iterations"], lr,
                     loss_sum / seen, correct / seen)
            loss_sum = correct = seen = 0.0
    atomic_write_csv(history_path, pd.DataFrame(history))
    atomic_torch_save(out_path, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    summary = {"classes": num_classes, "images": len(images), "render_s": round(rendered, 1),
               "seconds": round(time.perf_counter() - started, 1), "loss": history[-1]["loss"],
               "accuracy": history[-1]["accuracy"]}
    log.info("pre-trained %s on %d images of %d classes -> %s (%s)", settings["arch"], len(images), num_classes,
             out_path, summary)
    return summary
