"""The training split of any dataset, its labels, and what a variant needs of them.

``data.train_on`` names the dataset training reads: ``atustc`` (the sampled frames of
``sample_frames``) or any registered benchmark, whose ``index.csv`` rows with split
``train`` become the training set (:func:`build_training_split`). Either way persons and
(person, clothes) outfits are relabelled by :func:`training_labels`.

Not every benchmark labels what every variant trains on (:func:`label_support`):

- **clothes** (``clothes >= 0`` on every training image): SAID's short-term heads
  (DT-ST, NT-ST, AD-ST) classify person-outfit classes and mask a person's other
  outfits. Without clothes labels every person is one outfit, the short-term heads
  would repeat the long-term ones, and the clothes-changing distinction SAID (and HDW's
  clothes level on top of it) is built on is gone: a ``said: true`` variant is refused
  (:func:`check_trainable`). Without SAID every head classifies person ids over every
  image, which needs no clothes label.
- **modality** (``rgb``/``ir``): SAID gives the DT heads the RGB images and the NT heads
  the infrared ones, so on a single-modality split the other modality's heads have an
  empty subset. Those variants still train, and the heads are reported
  (:func:`empty_heads`; the trainer logs them and leaves their per-epoch loss and
  accuracy empty in the history, not 0). The batch-hard triplet loss, when on, uses the
  same modality subsets with or without SAID.

MoAE and ``ncls`` need no label: the gates route by token, and a single CLS token is
one unified embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from atreid.config import DEFAULT_TRAIN_ON
from atreid.constants import MODALITY_NAMES, SCENARIOS
from atreid.data.benchmarks import get_benchmark
from atreid.errors import AtreidError

__all__ = ["DEFAULT_TRAIN_ON", "LabelSupport", "build_training_split", "check_trainable", "empty_heads",
           "label_support", "training_labels", "training_split"]
TRAIN_SPLIT = "train"
REQUIRED_COLUMNS: tuple[str, ...] = ("path", "person", "camera", "modality", "clothes", "split")
# The modality each head's subset holds (None = every image), in SCENARIOS order.
HEAD_MODALITY: tuple[str | None, ...] = tuple({"DT": "rgb", "NT": "ir", "AD": None}[s[:2]] for s in SCENARIOS)


@dataclass(frozen=True)
class LabelSupport:
    """What a training split labels.

    Attributes:
        dataset: the dataset's name (``atustc``, ``market1501``, ...).
        modalities: the modalities present, in :data:`MODALITY_NAMES` order.
        clothes: whether every training image has a clothes label (``clothes >= 0``).
        unlabelled_clothes: training images without a clothes label.
        images: training images.
    """

    dataset: str
    modalities: tuple[str, ...]
    clothes: bool
    unlabelled_clothes: int
    images: int


def training_labels(train: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Relabel persons (over sorted ids) and outfits (over sorted (person, clothes) pairs).

    Returns the index with ``person_label`` and ``outfit_label`` columns and the label
    maps ``{"persons", "outfits", "outfit_to_person"}``.
    """
    persons = sorted(int(p) for p in train["person"].unique())
    outfits = sorted({(int(p), int(c)) for p, c in zip(train["person"], train["clothes"])})
    person_label = {p: i for i, p in enumerate(persons)}
    outfit_label = {o: i for i, o in enumerate(outfits)}
    labelled = train.copy()
    labelled["person_label"] = [person_label[int(p)] for p in labelled["person"]]
    labelled["outfit_label"] = [outfit_label[(int(p), int(c))] for p, c in zip(labelled["person"], labelled["clothes"])]
    maps = {
        "persons": persons,
        "outfits": [list(o) for o in outfits],
        "outfit_to_person": [person_label[p] for p, _ in outfits],
    }
    return labelled, maps


def label_support(train: pd.DataFrame, dataset: str) -> LabelSupport:
    """The labels the training rows ``train`` (``modality``, ``clothes`` columns) carry."""
    present = set(train["modality"].astype(str)) if "modality" in train else set()
    if "clothes" in train:  # -1 (or an empty cell) is "no clothes label"
        unlabelled = int((pd.to_numeric(train["clothes"], errors="coerce").fillna(-1) < 0).sum())
    else:
        unlabelled = len(train)
    return LabelSupport(dataset=dataset, modalities=tuple(m for m in MODALITY_NAMES if m in present),
                        clothes=len(train) > 0 and unlabelled == 0, unlabelled_clothes=unlabelled,
                        images=len(train))


def check_trainable(settings: dict[str, Any], support: LabelSupport) -> None:
    """Refuse, in one line naming the variant and the setting, a variant the split cannot train.

    Args:
        settings: the variant's resolved settings (:func:`atreid.config.resolve_variant`).
        support: the training split's labels (:func:`label_support`).

    Raises:
        AtreidError: ``said: true`` on a split without clothes labels.
    """
    if not settings.get("said") or support.clothes:
        return
    what = ("has none (clothes -1)" if support.unlabelled_clothes == support.images
            else f"lacks them on {support.unlabelled_clothes} of {support.images} images (clothes -1)")
    raise AtreidError(
        f"variant {settings['name']!r} cannot train on {support.dataset}: said: true needs clothes labels (its "
        f"short-term heads classify person-outfit classes) and {support.dataset}'s training split {what}; "
        f"set said: false (and hdw: false) for it, drop it from variants, or train on a dataset with clothes labels")


def empty_heads(settings: dict[str, Any], support: LabelSupport) -> dict[str, str]:
    """Heads whose loss subset is empty on the whole split -> why (empty: none).

    The identity subsets are SAID's (none is empty without SAID); the triplet subsets
    count when the triplet loss starts within the run (``train.triplet_start_epoch``).
    """
    train = settings.get("train", {})
    triplet = train.get("triplet_start_epoch", 0) < train.get("epochs", 0)
    losses = [name for name, on in (("SAID", settings.get("said")), ("triplet", triplet)) if on]
    if not losses:
        return {}
    out: dict[str, str] = {}
    for head, modality in zip(SCENARIOS, HEAD_MODALITY):
        if modality is not None and modality not in support.modalities:
            out[head] = (f"no {modality} image in {support.dataset}'s training split "
                         f"({' and '.join(losses)} subset empty)")
    return out


def training_split(index: pd.DataFrame, dataset: str, where: str | Path = "index.csv") -> pd.DataFrame:
    """The rows of a benchmark's index with split ``train``, sorted by path.

    Raises:
        AtreidError: missing columns, or no training rows (the benchmark cannot be trained on).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
    if missing:
        raise AtreidError(f"{where}: missing column(s) {', '.join(missing)}; rebuild it with `snakemake {where}`")
    train = index[index["split"].astype(str) == TRAIN_SPLIT]
    if train.empty:
        splits = ", ".join(sorted(set(index["split"].astype(str)))) or "none"
        raise AtreidError(f"{where}: {dataset} has no training images (split {TRAIN_SPLIT!r}; its splits: "
                          f"{splits}), so data.train_on cannot name it; choose another dataset")
    unknown = sorted(set(train["modality"].astype(str)) - set(MODALITY_NAMES))
    if unknown:
        raise AtreidError(f"{where}: unknown modality value(s) {unknown}; expected {list(MODALITY_NAMES)}")
    return train.sort_values("path", kind="stable").reset_index(drop=True)


def build_training_split(index_csv: str | Path, images_dir: str | Path, dataset: str
                         ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The labelled training split of benchmark ``dataset`` and its label maps.

    The index paths are relative to the release's root inside ``images_dir``; the
    returned ``path`` column is relative to ``images_dir`` itself (what ``atreid train
    --images`` is given). The label maps are those of
    :func:`training_labels` plus ``dataset``, ``modalities`` and
    ``clothes`` (what :func:`label_support` found).
    """
    index_csv, images_dir = Path(index_csv), Path(images_dir)
    if not index_csv.is_file():
        raise AtreidError(f"{index_csv}: index not found; run `snakemake {index_csv}` to build it")
    index = pd.read_csv(index_csv, dtype={"path": str, "modality": str, "split": str})
    train = training_split(index, dataset, index_csv)
    root = get_benchmark(dataset).find_root(images_dir)
    prefix = root.relative_to(images_dir).as_posix()
    if prefix != ".":
        train["path"] = prefix + "/" + train["path"]
    labelled, maps = training_labels(train)
    support = label_support(train, dataset)
    maps.update({"dataset": dataset, "modalities": list(support.modalities), "clothes": support.clothes})
    return labelled, maps
