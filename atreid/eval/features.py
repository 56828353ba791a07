"""Feature extraction: one pass per image yields all six post-BN head features.

Features are cached on disk per (model file, image list, transform) so protocols and
re-evaluations that share images never extract twice. bf16 autocast on CUDA, fp32 on
CPU (bit-reproducible there).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from atreid.errors import AtreidError
from atreid.io import atomic_torch_save, file_sha256, progress

log = logging.getLogger("atreid.features")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(image_size: Sequence[int]):
    """Resize + to-tensor + ImageNet normalisation (the recipe's test transform)."""
    # start-up: PIL, torchvision loaded only when this runs
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ImageListDataset(Dataset):
    """Images given by paths relative to ``root``, loaded as RGB."""

    def __init__(self, root: str | Path, paths: Sequence[str], transform) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        # start-up: PIL loaded only when this runs
        from PIL import Image

        path = self.root / self.paths[i]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise AtreidError(f"{path}: cannot read image ({exc}); re-run the dataset's verification step") from None


@torch.no_grad()
def extract_features(model: torch.nn.Module, root: str | Path, paths: Sequence[str], *,
                     image_size: Sequence[int], batch_size: int = 128, flip: bool = False,
                     device: torch.device | str = "cpu", num_workers: int = 0,
                     compile: bool = False) -> torch.Tensor:
    """Return a float32 CPU tensor (N, 6, D) of post-BN features, in ``paths`` order.

    With ``flip`` the features of the image and its horizontal mirror are averaged. With
    ``compile`` the model runs through ``torch.compile`` (one graph for one batch shape: the
    last, smaller batch is padded with zero images whose features are dropped; in eval mode
    every image's features depend on that image alone).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    net = torch.compile(model, dynamic=False) if compile else model
    loader = DataLoader(ImageListDataset(root, paths, eval_transform(image_size)), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda")
    use_bf16 = device.type == "cuda"
    chunks = []
    for images in progress(loader, total=len(loader), desc="extract features", unit="batch"):
        images = images.to(device, non_blocking=True)
        rows = images.shape[0]
        if compile and rows < batch_size:
            images = torch.cat([images, images.new_zeros(batch_size - rows, *images.shape[1:])])
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            features = net(images).float()
            if flip:
                features = (features + net(torch.flip(images, dims=[3])).float()) / 2
        chunks.append(features[:rows].cpu())
    if not chunks:
        return torch.empty(0, 6, 0)
    return torch.cat(chunks)


def cache_key(model_path: str | Path, paths: Sequence[str], image_size: Sequence[int], flip: bool) -> str:
    """Key of one (model, image list, transform) combination."""
    payload = json.dumps({"model": file_sha256(model_path), "paths": list(paths),
                          "image_size": list(image_size), "flip": flip}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cached_features(model: torch.nn.Module, model_path: str | Path, root: str | Path, paths: Sequence[str], *,
                    cache_dir: str | Path | None, image_size: Sequence[int], **kwargs) -> torch.Tensor:
    """:func:`extract_features` with an on-disk cache under ``cache_dir``."""
    if cache_dir is None:
        return extract_features(model, root, paths, image_size=image_size, **kwargs)
    key = cache_key(model_path, paths, image_size, kwargs.get("flip", False))
    cache_file = Path(cache_dir) / f"{key}.pt"
    if cache_file.is_file():
        try:
            features = torch.load(cache_file, weights_only=True)
            if isinstance(features, torch.Tensor) and features.shape[0] == len(paths):
                log.info("features from cache %s", cache_file)
                return features
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            log.warning("ignoring unreadable feature cache %s", cache_file)
    features = extract_features(model, root, paths, image_size=image_size, **kwargs)
    atomic_torch_save(cache_file, features)
    return features
