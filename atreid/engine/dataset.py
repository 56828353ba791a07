"""The training set: rows of ``train_sampled.csv`` -> (image, person, outfit, modality).

Items are requested as ``(row, sample_seed)`` pairs by :class:`atreid.engine.sampler.PKSampler`;
the seed makes the augmentation of that draw reproducible (see
:class:`atreid.engine.transforms.SeededTransform`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from atreid.constants import MODALITY_CODES
from atreid.engine.sampler import PKSampler
from atreid.engine.transforms import SeededTransform, train_transform
from atreid.errors import AtreidError

TRAIN_COLUMNS = ("path", "person", "modality", "person_label", "outfit_label")


def read_training_index(path: str | Path) -> pd.DataFrame:
    """Read ``train_sampled.csv`` and check the columns training needs."""
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: training index not found; run `snakemake {path}` to build it")
    try:
        frame = pd.read_csv(path, dtype={"path": str, "modality": str, "clip": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AtreidError(f"{path}: not a readable CSV ({exc}); rebuild it with `snakemake {path}`") from None
    missing = [c for c in TRAIN_COLUMNS if c not in frame.columns]
    if missing:
        raise AtreidError(f"{path}: missing column(s) {', '.join(missing)}; rebuild it with `snakemake {path}`")
    if frame.empty:
        raise AtreidError(f"{path}: the training index has no rows; check data.atustc.frames_per_clip")
    unknown = sorted(set(frame["modality"]) - set(MODALITY_CODES))
    if unknown:
        raise AtreidError(f"{path}: unknown modality value(s) {unknown}; expected {sorted(MODALITY_CODES)}")
    return frame


class TrainDataset(Dataset):
    """Training images with labels; ``dataset[(row, seed)]`` augments with ``seed``.

    Args:
        index: the training index (``path``, ``person_label``, ``outfit_label``, ``modality``).
        images_root: folder the ``path`` column is relative to.
        transform: the training transform (wrapped in :class:`SeededTransform`).
    """

    def __init__(self, index: pd.DataFrame, images_root: str | Path, transform: Callable) -> None:
        self.root = Path(images_root)
        self.paths = index["path"].astype(str).tolist()
        self.person = index["person_label"].astype("int64").to_numpy()
        self.outfit = index["outfit_label"].astype("int64").to_numpy()
        self.modality = index["modality"].map(MODALITY_CODES).astype("int64").to_numpy()
        self.transform = SeededTransform(transform)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, row: int):
        # start-up: PIL loaded only when this runs
        from PIL import Image

        path = self.root / self.paths[row]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise AtreidError(f"{path}: cannot read training image ({exc}); check --images and re-run the "
                              "dataset's verification step") from None

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int, int]:
        row, seed = key
        image = self.transform(self.load(row), seed)
        return image, int(self.person[row]), int(self.outfit[row]), int(self.modality[row])


def build_train_loader(index: pd.DataFrame, images_root: str | Path, settings: dict[str, Any], *,
                       rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                       num_workers: int | None = None) -> tuple[DataLoader, PKSampler]:
    """DataLoader + sampler for one variant's resolved ``settings``."""
    train = settings["train"]
    dataset = TrainDataset(index, images_root, train_transform(
        settings["model"]["image_size"], pad=train["pad"], flip=train["flip"], random_erasing=train["random_erasing"]))
    sampler = PKSampler(dataset.person, dataset.modality, batch_p=train["batch_p"], batch_k=train["batch_k"],
                        iters_per_epoch=train["iters_per_epoch"], seed=settings["seed"], rank=rank,
                        world_size=world_size)
    workers = train["num_workers"] if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
    return loader, sampler
