"""AT-USTC: layout parsing, the tidy index, verification, frame sampling and labels.

Reference: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(IJCAI 2025). Released by signed agreement only: the pipeline imports a user's copy
(``atreid.data.archive``) or generates the embedded synthetic copy
(``atreid.data.synthetic.atustc``) in exactly the same layout::

    AT-USTC/pPPP-dDD-cCC/camKK-fF-NNNN.jpg     e.g. p001-d01-c01/cam01-f0-0050.jpg

person PPP, capture date DD, clothes CC (per person), camera KK (1-8 RGB, 9-16 IR),
split flag F (0 train, 1 validation, 2-5 queries, 6-9 galleries, see
``atreid.constants.FLAG_NAMES``) and frame index NNNN inside the clip (a clip is one
person, date, clothes and camera).
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atreid.constants import FLAG_NAMES, IR_CAMERAS, RGB_CAMERAS
from atreid.errors import AtreidError
from atreid.io import progress

TOP_FOLDER = "AT-USTC"
CLIP_DIR_RE = re.compile(r"^p(?P<person>\d{3})-d(?P<date>\d{2})-c(?P<clothes>\d{2})$")
FRAME_FILE_RE = re.compile(r"^cam(?P<camera>\d{2})-f(?P<flag>\d)-(?P<frame>\d{4})\.jpg$")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
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


def parse_relative_path(rel: str) -> dict[str, Any] | None:
    """Fields of one image path relative to the dataset root, or None if malformed."""
    parts = rel.split("/")
    if len(parts) != 2:
        return None
    clip_dir = CLIP_DIR_RE.match(parts[0])
    frame_file = FRAME_FILE_RE.match(parts[1])
    if not clip_dir or not frame_file:
        return None
    camera = int(frame_file["camera"])
    flag = int(frame_file["flag"])
    person = int(clip_dir["person"])
    if not (1 <= camera <= 16) or flag not in FLAG_NAMES or person < 1:
        return None
    return {
        "path": rel,
        "person": person,
        "date": int(clip_dir["date"]),
        "clothes": int(clip_dir["clothes"]),
        "camera": camera,
        "modality": modality_of_camera(camera),
        "flag": flag,
        "frame": int(frame_file["frame"]),
        "clip": f"{parts[0]}-cam{camera:02d}",
    }


def find_dataset_root(images_dir: str | Path) -> Path:
    """The ``AT-USTC`` folder inside ``images_dir`` (or ``images_dir`` itself)."""
    images_dir = Path(images_dir)
    if (images_dir / TOP_FOLDER).is_dir():
        return images_dir / TOP_FOLDER
    if images_dir.is_dir() and images_dir.name == TOP_FOLDER:
        return images_dir
    raise AtreidError(
        f"{images_dir}: no {TOP_FOLDER}/ folder found; the dataset must unpack to "
        f"{TOP_FOLDER}/pPPP-dDD-cCC/camKK-fF-NNNN.jpg (check data.atustc.source)")


def scan_layout(root: str | Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Parse every file under ``root`` (the AT-USTC folder).

    Returns:
        (index, malformed, ignored): the tidy index sorted by path; image files whose
        path does not match the layout (a hard problem); other files (reported only).
    """
    root = Path(root)
    rows: list[dict[str, Any]] = []
    malformed: list[str] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                ignored.append(rel)
                continue
            fields = parse_relative_path(rel)
            if fields is None:
                malformed.append(rel)
            else:
                rows.append(fields)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    index = index.sort_values("path", kind="stable").reset_index(drop=True)
    return index, malformed, ignored


def compute_statistics(index: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split (and per flag) counts: ids, outfits, RGB/IR cameras, clips, images."""

    def stats(frame: pd.DataFrame) -> dict[str, int]:
        return {
            "ids": int(frame["person"].nunique()),
            "outfits": int(frame[["person", "clothes"]].drop_duplicates().shape[0]),
            "rgb_cameras": int(frame.loc[frame["modality"] == "rgb", "camera"].nunique()),
            "ir_cameras": int(frame.loc[frame["modality"] == "ir", "camera"].nunique()),
            "clips": int(frame["clip"].nunique()),
            "images": int(len(frame)),
        }

    result = {split: stats(index[index["flag"].isin(flags)]) for split, flags in SPLITS.items()}
    for flag in FLAG_NAMES:
        result[f"flag{flag}"] = stats(index[index["flag"] == flag])
    result["all"] = stats(index)
    return result


def _decode_one(path: str) -> str | None:
    """Fully decode one image; return an error string or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return "empty image"
    except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupt file
        return f"{type(exc).__name__}: {exc}"
    return None


def find_corrupt_images(root: Path, paths: list[str], workers: int) -> dict[str, str]:
    """Decode every image (in ``workers`` processes, with progress); return path -> error."""
    full = [str(root / p) for p in paths]
    errors: dict[str, str] = {}
    chunk = max(1, min(256, len(full) // (workers * 8) or 1))
    if workers <= 1:
        results = map(_decode_one, full)
        for rel, error in zip(paths, progress(results, total=len(full), desc="decode images", unit="img")):
            if error:
                errors[rel] = error
        return errors
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_one, full, chunksize=chunk)
        for rel, error in zip(paths, progress(results, total=len(full), desc="decode images", unit="img")):
            if error:
                errors[rel] = error
    return errors


def compare_counts(actual: dict[str, dict[str, int]], expected: dict[str, dict[str, int]],
                   tolerance: float) -> list[dict[str, Any]]:
    """Differences between actual and expected counts (relative tolerance)."""
    differences = []
    for split, fields in expected.items():
        for field, want in fields.items():
            have = actual.get(split, {}).get(field)
            if have is None:
                continue
            rel = abs(have - want) / max(want, 1)
            if rel > tolerance:
                differences.append({"split": split, "field": field, "expected": want,
                                    "actual": have, "relative_difference": round(rel, 4)})
    return differences


def verify_dataset(images_dir: str | Path, *, expected: dict[str, dict[str, int]] | None,
                   decode_workers: int = 1, tolerance: float = COUNT_TOLERANCE
                   ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Parse and check a dataset copy; return (index, report).

    Hard problems (malformed names, corrupt images, missing splits, ids shared by train
    and test) raise :class:`AtreidError` naming the file and the fix. Soft differences
    (counts off the expected figures, stray non-image files, a missing validation split)
    are recorded in the report's ``warnings``.
    """
    root = find_dataset_root(images_dir)
    index, malformed, ignored = scan_layout(root)
    if malformed:
        more = f" (and {len(malformed) - 1} more)" if len(malformed) > 1 else ""
        raise AtreidError(
            f"{root / malformed[0]}{more}: file name does not match "
            "pPPP-dDD-cCC/camKK-fF-NNNN.jpg (camera 01-16, flag 0-9); rename or remove it")
    if index.empty:
        raise AtreidError(f"{root}: no images found; the folder must hold pPPP-dDD-cCC/camKK-fF-NNNN.jpg files")
    corrupt = find_corrupt_images(root, index["path"].tolist(), decode_workers)
    if corrupt:
        first = sorted(corrupt)[0]
        more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
        raise AtreidError(f"{root / first}{more}: unreadable or corrupt image ({corrupt[first]}); "
                          "re-extract the dataset or replace the file")
    present = set(index["flag"].unique().tolist())
    missing = [f for f in FLAG_NAMES if f != 1 and f not in present]
    if missing:
        names = ", ".join(f"flag {f} ({FLAG_NAMES[f]})" for f in missing)
        raise AtreidError(f"{root}: empty or missing split: {names}; the copy is incomplete, re-import it")
    train_ids = set(index.loc[index["flag"].isin((0, 1)), "person"])
    test_ids = set(index.loc[index["flag"] >= 2, "person"])
    shared = sorted(train_ids & test_ids)
    if shared:
        raise AtreidError(f"{root}: persons {shared[:5]} appear in both training and test splits; "
                          "the copy mixes splits, re-import it")

    statistics = compute_statistics(index)
    warnings: list[str] = []
    if 1 not in present:
        warnings.append("no validation images (flag 1); training does not use them")
    if ignored:
        warnings.append(f"{len(ignored)} non-image files ignored, e.g. {ignored[0]}")
    differences = compare_counts(statistics, expected or {}, tolerance)
    for diff in differences:
        warnings.append(f"{diff['split']} {diff['field']}: {diff['actual']} (expected {diff['expected']})")
    report = {
        "root": str(root),
        "statistics": statistics,
        "expected": expected or {},
        "tolerance": tolerance,
        "count_differences": differences,
        "warnings": warnings,
        "ignored_files": ignored[:100],
        "ok": True,
    }
    return index, report


def format_report(report: dict[str, Any]) -> str:
    """A readable statistics table like the paper's, plus warnings."""
    stats = report["statistics"]
    header = f"{'split':<10}" + "".join(f"{f:>12}" for f in STAT_FIELDS)
    lines = [f"AT-USTC verification: {report['root']}", "", header, "-" * len(header)]
    for split in ("train", "val", "query", "gallery", "test", "all"):
        lines.append(f"{split:<10}" + "".join(f"{stats[split][f]:>12,}" for f in STAT_FIELDS))
    lines += ["", "per flag:"]
    for flag, name in FLAG_NAMES.items():
        s = stats[f"flag{flag}"]
        lines.append(f"  {flag} {name:<14} ids {s['ids']:>5}  clips {s['clips']:>6}  images {s['images']:>8,}")
    lines.append("")
    if report["expected"]:
        lines.append(f"expected counts compared with tolerance {report['tolerance']:.0%}")
    lines += [f"WARNING: {w}" for w in report["warnings"]] or ["no warnings"]
    return "\n".join(lines) + "\n"


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
