"""AT-USTC: its layout and flags, frame sampling and training labels.

Reference: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(IJCAI 2025). Released by signed agreement only: the pipeline imports a user's copy
(``atreid.data.archive``) or generates the embedded synthetic copy
(``atreid.data.synthetic.atustc``) in exactly the same layout::

    AT-USTC/pPPP-dDD-cCC/camKK-fF-NNNN.jpg     e.g. p001-d01-c01/cam01-f0-0050.jpg

person PPP, capture date DD, clothes CC (per person), camera KK (1-8 RGB, 9-16 IR),
split flag F (0 train, 1 validation, 2-5 queries, 6-9 galleries, see
``atreid.constants.FLAG_NAMES``) and frame index NNNN inside the clip (a clip is one
person, date, clothes and camera).

Scanning, verification and the report go through the registered adapter ``atustc``
(``atreid.data.adapters.atustc``), the same path as every benchmark; this module keeps
what only AT-USTC has (the path scheme, flags, frame sampling, labels) and the entry
points other modules use (:func:`find_dataset_root`, :func:`scan_layout`,
:func:`compute_statistics`), which call the adapter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atreid.constants import IR_CAMERAS, RGB_CAMERAS
from atreid.errors import AtreidError

TOP_FOLDER = "AT-USTC"
LAYOUT = f"{TOP_FOLDER}/pPPP-dDD-cCC/camKK-fF-NNNN.jpg"
# One image path relative to the AT-USTC folder: person 001-999, camera 01-16, flag 0-9.
PATH_RE = re.compile(r"^(?P<clip_dir>p(?P<person>(?!000)\d{3})-d(?P<date>\d{2})-c(?P<clothes>\d{2}))/"
                     r"cam(?P<camera>0[1-9]|1[0-6])-f(?P<flag>\d)-(?P<frame>\d{4})\.jpg$")
INDEX_COLUMNS = ["path", "person", "date", "clothes", "camera", "modality", "flag", "frame", "clip"]

# Splits of the verification report: name -> flags.
SPLITS: dict[str, tuple[int, ...]] = {
    "train": (0,),
    "val": (1,),
    "query": (2, 3, 4, 5),
    "gallery": (6, 7, 8, 9),
    "test": (2, 3, 4, 5, 6, 7, 8, 9),
}
STAT_FIELDS = ("ids", "outfits", "rgb_cameras", "ir_cameras", "clips", "images")

# Published statistics of the released AT-USTC (protocols.md). Only ids and images are
# published per split; the verification compares these with a tolerance (whether the
# validation images are inside the 286,087 training images is unverified).
OFFICIAL_COUNTS: dict[str, dict[str, int]] = {
    "train": {"ids": 135, "images": 286_087},
    "val": {"ids": 135, "images": 55_060},
    "test": {"ids": 135, "images": 117_512},
}
COUNT_TOLERANCE = 0.02  # relative difference reported as a soft problem, never fatal


def modality_of_camera(camera: int) -> str:
    """'rgb' for cameras 1-8, 'ir' for 9-16."""
    if camera in RGB_CAMERAS:
        return "rgb"
    if camera in IR_CAMERAS:
        return "ir"
    raise ValueError(f"camera {camera} is outside 1-16")


def index_row(found: re.Match[str]) -> dict[str, Any]:
    """The index row of a :data:`PATH_RE` match."""
    camera = int(found["camera"])
    return {
        "path": found.string,
        "person": int(found["person"]),
        "date": int(found["date"]),
        "clothes": int(found["clothes"]),
        "camera": camera,
        "modality": modality_of_camera(camera),
        "flag": int(found["flag"]),
        "frame": int(found["frame"]),
        "clip": f"{found['clip_dir']}-cam{camera:02d}",
    }


def parse_relative_path(rel: str) -> dict[str, Any] | None:
    """Fields of one image path relative to the dataset root, or None if malformed."""
    found = PATH_RE.match(rel)
    return None if found is None else index_row(found)


def find_dataset_root(images_dir: str | Path) -> Path:
    """The ``AT-USTC`` folder inside ``images_dir`` (or ``images_dir`` itself)."""
    from atreid.data.adapters import get_adapter

    return get_adapter("atustc").find_root(images_dir)


def scan_layout(root: str | Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Parse every file under ``root`` (the AT-USTC folder).

    Returns:
        (index, malformed, ignored): the tidy index sorted by path; image files whose
        path does not match the layout (a hard problem); other files (reported only).
    """
    from atreid.data.adapters import get_adapter

    adapter = get_adapter("atustc")
    malformed: list[str] = []
    rows, ignored = adapter.walk_layout(Path(root), malformed=malformed)
    return adapter.frame(rows), malformed, ignored


def compute_statistics(index: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split (and per flag) counts: ids, outfits, RGB/IR cameras, clips, images."""
    from atreid.data.adapters import get_adapter

    return get_adapter("atustc").statistics(index)


def _evenly_spaced(n: int, keep: int) -> np.ndarray:
    """Positions of ``keep`` frames evenly spaced over ``n`` (first and last included)."""
    if keep >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, keep)).astype(int))


def sample_frames(index: pd.DataFrame, frames_per_clip: int | str) -> pd.DataFrame:
    """Keep ``frames_per_clip`` training frames (flag 0) per clip, evenly spaced in frame order.

    ``"all"`` keeps every frame (the released dataset); 18 reproduces the IJCAI version.
    Deterministic: depends only on the index.
    """
    train = index[index["flag"] == 0].sort_values(["clip", "frame", "path"], kind="stable")
    if frames_per_clip == "all":
        kept = train
    else:
        keep = int(frames_per_clip)
        parts = []
        for _, clip in train.groupby("clip", sort=True):
            parts.append(clip.iloc[_evenly_spaced(len(clip), keep)])
        kept = pd.concat(parts) if parts else train.iloc[:0]
    return kept.sort_values("path", kind="stable").reset_index(drop=True)


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


def read_index(path: str | Path) -> pd.DataFrame:
    """Read an index CSV written by this module (clear error when missing)."""
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: index not found; run `snakemake {path}` to build it")
    return pd.read_csv(path, dtype={"path": str, "modality": str, "clip": str})


def read_labels(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: label maps not found; run `snakemake {path}` to build them")
    return json.loads(path.read_text())
