"""Training and test image transforms of the recipe, reproducible per sample.

Train: Resize(bilinear) -> Pad -> RandomCrop -> RandomHorizontalFlip -> ToTensor ->
Normalize(ImageNet) -> timm RandomErasing(p, area 0.02-0.4, per-pixel values, one box).
Test: Resize -> ToTensor -> Normalize.

torchvision's random transforms draw from torch's global CPU generator and timm's
RandomErasing from Python's ``random`` module (and torch for the pixel values).
:class:`SeededTransform` runs a transform with both seeded from the sample's own seed
(chosen by the sampler from (seed, epoch, iteration, position)) and restores the
previous global states afterwards, so an image's augmentation is the same whichever
process (main, DataLoader worker, DDP rank) computes it, and library code leaves the
global RNGs untouched.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Random-erasing geometry of the recipe (timm's own default max_area is 1/3).
ERASE_MIN_AREA = 0.02
ERASE_MAX_AREA = 0.4
ERASE_MIN_ASPECT = 0.3  # timm default; max aspect = 1 / 0.3


def train_transform(image_size: Sequence[int], *, pad: int = 10, flip: float = 0.5,
                    random_erasing: float = 0.5) -> Callable:
    """The recipe's training augmentation for ``image_size = (height, width)``."""
    # start-up: PIL, timm, torchvision, yaml loaded only when this runs
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    size = (int(image_size[0]), int(image_size[1]))
    steps: list[Callable] = [T.Resize(size, interpolation=T.InterpolationMode.BILINEAR)]
    if pad > 0:
        steps += [T.Pad(pad), T.RandomCrop(size)]
    if flip > 0:
        steps.append(T.RandomHorizontalFlip(p=flip))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if random_erasing > 0:
        steps.append(RandomErasing(probability=random_erasing, min_area=ERASE_MIN_AREA, max_area=ERASE_MAX_AREA,
                                   min_aspect=ERASE_MIN_ASPECT, mode="pixel", max_count=1, device="cpu"))
    return T.Compose(steps)


def test_transform(image_size: Sequence[int]) -> Callable:
    """Resize + to-tensor + ImageNet normalisation (the recipe's test transform)."""
    # start-up: PIL, torchvision loaded only when this runs
    from torchvision import transforms as T

    size = (int(image_size[0]), int(image_size[1]))
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class SeededTransform:
    """Apply ``transform`` with torch's CPU generator and ``random`` seeded from ``seed``.

    Only the CPU generator is touched (``torch.manual_seed`` would also reseed CUDA);
    both global states are restored on exit, except in a DataLoader worker, where
    nothing else draws from them.
    """

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image, seed: int):
        if torch.utils.data.get_worker_info() is not None:
            # A DataLoader worker's global RNGs serve only this transform (and each call
            # reseeds them): saving and restoring them (~0.1 ms, mostly random.getstate)
            # would be a few % of a worker's time per image for nothing.
            return self._seeded(image, seed)
        py_state = random.getstate()
        torch_state = torch.get_rng_state()
        try:
            return self._seeded(image, seed)
        finally:
            random.setstate(py_state)
            torch.set_rng_state(torch_state)

    def _seeded(self, image, seed: int):
        random.seed(int(seed))
        torch.default_generator.manual_seed(int(seed))
        return self.transform(image)

    def __repr__(self) -> str:
        return f"SeededTransform({self.transform!r})"
