"""Features of any images with a trained model (``atreid extract``), as a parquet table.

The images come from a folder (searched recursively), a list file, or one split of a
prepared benchmark (``data/<name>/index.csv``). Features are computed by the evaluation's
own code (:func:`atreid.eval.features.extract_features`: the same resize, normalisation,
precision and flip averaging), so they are the numbers the evaluation ranks with. Images
of any size are accepted: like the evaluation, each is resized to the model's
``image_size`` (bilinear, aspect ratio not kept).

The table has one row per image, in input order:

``path``        the image file as given (folder/relative path, list line, or the
                benchmark's dataset root joined with the index path)
``person``, ``camera``, ``clothes`` (int), ``modality``, ``split`` (text): the
                benchmark index's labels (AT-USTC's ``split`` from its flags); null for
                folders and lists
one column per head, named by the head (``DT-ST`` ... ``AD-LT``): the post-BN feature, a
                fixed-size list of float32, *not* normalised; the evaluation compares two
                images by ``1 - cosine`` (L2-normalise, then dot product)

The schema's metadata (key ``atreid``) records the model file and its SHA-256, variant,
arch, image size, flip, the heads and the feature dimension; ``atreid search
--gallery-features`` uses it to refuse features of another model.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from atreid import __version__
from atreid.constants import SCENARIOS
from atreid.data.benchmarks import get_benchmark
from atreid.data.benchmarks.files import IMAGE_SUFFIXES, is_image, list_files, read_benchmark_index
from atreid.engine.checkpoint import load_trained_model
from atreid.errors import AtreidError
from atreid.engine.device import resolve_device
from atreid.eval.features import extract_features
from atreid.io import file_sha256
from atreid.io import atomic_write_bytes, progress

log = logging.getLogger("atreid.extract")

LABEL_COLUMNS: tuple[str, ...] = ("person", "camera", "modality", "clothes", "split")
INT_LABELS = frozenset({"person", "camera", "clothes"})
METADATA_KEY = b"atreid"
MODEL_HINT = "pass a trained model (models/<variant>/seed<seed>/model.pt, made by `make run` or `snakemake`)"
SUFFIXES_TEXT = ", ".join(sorted(IMAGE_SUFFIXES))


@dataclass
class ImageSet:
    """Images to extract: paths relative to ``root`` (what the feature code reads) and their labels.

    Attributes:
        root: folder the paths are relative to (``.`` for list files).
        paths: image paths relative to ``root``.
        labels: one row per path with :data:`LABEL_COLUMNS` (None where unknown).
        source: one line saying where the images come from.
    """

    root: Path
    paths: list[str]
    labels: pd.DataFrame
    source: str

    def files(self) -> list[Path]:
        return [self.root / p for p in self.paths]

    def display_paths(self) -> list[str]:
        """The paths written to the table (openable from where the command ran)."""
        return [str(f) for f in self.files()]


def empty_labels(n: int) -> pd.DataFrame:
    return pd.DataFrame({c: [None] * n for c in LABEL_COLUMNS}, dtype=object)


def require_pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or a one-line error saying to install pyarrow."""
    try:
        # start-up: pyarrow loaded only when this runs
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise AtreidError("feature tables are parquet files and need pyarrow, which is not installed: "
                          "run `pip install pyarrow` (or `pip install -e .` again) and rerun") from None
    return pa, pq


def parse_heads(text: str | None) -> list[str]:
    """``DT-ST,AD-LT`` (any case) or ``all``/None -> head names in :data:`SCENARIOS` order."""
    if text is None or text.strip().lower() == "all":
        return list(SCENARIOS)
    wanted = []
    for name in (t.strip() for t in text.split(",")):
        if not name:
            continue
        head = name.upper()
        if head not in SCENARIOS:
            raise AtreidError(f"unknown head {name!r} in --heads; valid: {', '.join(SCENARIOS)} "
                              "(comma-separated) or all")
        wanted.append(head)
    if not wanted:
        raise AtreidError(f"--heads {text!r} names no head; valid: {', '.join(SCENARIOS)} (comma-separated) or all")
    return [h for h in SCENARIOS if h in wanted]


# ---- where the images come from -------------------------------------------------------
def folder_images(folder: str | Path) -> ImageSet:
    """Every image (by suffix) in ``folder`` and below, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "folder not found"
        raise AtreidError(f"{folder}: {what}; pass a folder holding images ({SUFFIXES_TEXT})")
    paths = [rel for rel in list_files(folder, folder) if is_image(rel)]
    if not paths:
        raise AtreidError(f"{folder}: no images ({SUFFIXES_TEXT}) in this folder or below; "
                          "point it at a folder holding images")
    return ImageSet(folder, paths, empty_labels(len(paths)), f"folder {folder}")


def list_images(list_file: str | Path) -> ImageSet:
    """Image paths, one a line (blank lines and ``#`` comments skipped), relative to the
    current directory or absolute."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise AtreidError(f"{list_file}: image list not found; pass a text file with one image path a line")
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AtreidError(f"{list_file}: cannot read the image list ({exc}); pass a text file with one image "
                          "path a line") from None
    paths = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not Path(entry).is_file():
            raise AtreidError(f"{list_file}:{number}: {entry} not found; fix the line (paths are relative to the "
                              "current directory, or absolute)")
        paths.append(entry)
    if not paths:
        raise AtreidError(f"{list_file}: lists no images; write one image path a line")
    return ImageSet(Path("."), paths, empty_labels(len(paths)), f"list {list_file}")


def benchmark_images(name: str, split: str | None, data_dir: str | Path = "data") -> ImageSet:
    """The images of one split (None: all) of a prepared benchmark, with the index's labels."""
    data_dir = Path(data_dir)
    benchmark = get_benchmark(name)  # unknown names list the valid ones
    index_path = data_dir / name / "index.csv"
    root = benchmark.find_root(data_dir / name / "images")
    index = read_benchmark_index(index_path)
    index = index.assign(split=benchmark.row_splits(index))
    valid = benchmark.split_names(index)
    rows = index if split is None else index[index["split"] == split] if split in valid else index.iloc[:0]
    if rows.empty:
        raise AtreidError(f"{index_path}: no images in split {split!r}; valid splits: {', '.join(valid)}")
    rows = rows.reset_index(drop=True)
    return ImageSet(root, rows["path"].tolist(), rows[list(LABEL_COLUMNS)].astype(object),
                    f"{name} {split or 'all splits'} ({index_path})")


def select_images(*, folder: str | Path | None = None, images: str | Path | None = None,
                  benchmark: str | None = None, split: str | None = None, data_dir: str | Path = "data",
                  what: str = "") -> ImageSet:
    """The one image source given: a folder, a list file, or a benchmark split."""
    given = [x is not None for x in (folder, images, benchmark)]
    if sum(given) != 1:
        raise AtreidError(f"give exactly one image source{what}: --folder DIR, --images LIST.txt or "
                          "--benchmark NAME --split SPLIT")
    if folder is not None:
        return folder_images(folder)
    if images is not None:
        return list_images(images)
    if split is None:
        raise AtreidError(f"--benchmark {benchmark} needs --split (query, gallery or train)")
    return benchmark_images(benchmark, split, data_dir)


def check_images(files: Sequence[Path], image_size: Sequence[int]) -> int:
    """Read every image's header: an unreadable one is an error naming it. Returns how many
    are not ``image_size`` (height, width): those are resized, as the evaluation does."""
    # start-up: PIL loaded only when this runs
    from PIL import Image

    height, width = (int(s) for s in image_size)
    other = 0
    for path in progress(files, total=len(files), desc="check images", unit="img"):
        try:
            with Image.open(path) as image:
                size = image.size
        except FileNotFoundError:
            raise AtreidError(f"{path}: image not found; restore it or remove it from the input") from None
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AtreidError(f"{path}: cannot read image ({reason}); remove it or replace it with a readable "
                              f"image ({SUFFIXES_TEXT})") from None
        other += size != (width, height)
    return other


# ---- the model -----------------------------------------------------------------------
def load_model(model_path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained ``model.pt`` -> (eval-mode model, payload), with one-line errors."""
    path = Path(model_path)
    if not path.is_file():
        what = "is a folder, not a model file" if path.is_dir() else "not found"
        raise AtreidError(f"{path}: model file {what}; {MODEL_HINT}")
    if not zipfile.is_zipfile(path):
        raise AtreidError(f"{path}: not an atreid model file (not a PyTorch archive); {MODEL_HINT}")
    return load_trained_model(path, device)


def model_image_size(payload: dict[str, Any]) -> list[int]:
    return [int(s) for s in payload["settings"]["model"]["image_size"]]


def image_features(model: torch.nn.Module, images: ImageSet, *, image_size: Sequence[int], batch_size: int,
                   flip: bool, device: torch.device) -> torch.Tensor:
    """(N, 6, D) post-BN features by :func:`~atreid.eval.features.extract_features`."""
    try:
        return extract_features(model, images.root, images.paths, image_size=image_size, batch_size=batch_size,
                                flip=flip, device=device)
    except AtreidError as exc:  # the evaluation's advice is about datasets; here the user's file
        message = str(exc).replace("; re-run the dataset's verification step", "; remove or replace the file")
        raise AtreidError(message) from None


def check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AtreidError(f"--batch {batch_size!r} must be a positive integer (images per forward pass)")


# ---- the table -----------------------------------------------------------------------
def _label_array(pa: Any, values: Sequence[Any], column: str) -> Any:
    if column in INT_LABELS:
        return pa.array([None if pd.isna(v) else int(v) for v in values], type=pa.int64())
    return pa.array([None if pd.isna(v) else str(v) for v in values], type=pa.string())


def feature_table(images: ImageSet, features: torch.Tensor, heads: Sequence[str], metadata: dict[str, Any]) -> Any:
    """The pyarrow table: ``path``, label columns, one fixed-size float32 list column per head."""
    pa, _ = require_pyarrow()
    columns = {"path": pa.array(images.display_paths(), type=pa.string())}
    for column in LABEL_COLUMNS:
        columns[column] = _label_array(pa, images.labels[column].tolist(), column)
    dim = int(features.shape[-1])
    for head in heads:
        values = features[:, SCENARIOS.index(head)].contiguous().numpy().astype(np.float32).reshape(-1)
        columns[head] = pa.FixedSizeListArray.from_arrays(pa.array(values, type=pa.float32()), dim)
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


def write_table(out: str | Path, table: Any) -> None:
    """Write ``table`` as parquet, atomically."""
    pa, pq = require_pyarrow()
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(out, sink.getvalue().to_pybytes())


def read_feature_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, np.ndarray]]:
    """A table written by ``atreid extract`` -> (path and label columns, metadata,
    head -> (N, D) float32 features)."""
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: feature file not found; make it with `atreid extract --model ... --out {path}`")
    pa, pq = require_pyarrow()
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AtreidError(f"{path}: not a readable parquet file ({reason[:200]}); make it with "
                          f"`atreid extract --model ... --out {path}`") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None or "path" not in table.column_names:
        raise AtreidError(f"{path}: not a feature table of `atreid extract` (no atreid metadata); make it with "
                          f"`atreid extract --model ... --out {path}`")
    metadata = json.loads(raw)
    features = {}
    for head in metadata["heads"]:
        column = table.column(head).combine_chunks()
        features[head] = np.array(column.flatten(), dtype=np.float32).reshape(len(table), int(metadata["dim"]))
    labels = [c for c in ("path", *LABEL_COLUMNS) if c in table.column_names]
    frame = table.select(labels).to_pandas().astype(object)
    frame = frame.where(frame.notna(), None)
    return frame, metadata, features


def model_metadata(model_path: Path, payload: dict[str, Any], *, heads: Sequence[str], flip: bool, dim: int,
                   source: str) -> dict[str, Any]:
    settings = payload.get("settings", {})
    return {"model": str(model_path), "model_sha256": file_sha256(model_path), "variant": settings.get("name"),
            "arch": payload.get("arch"), "image_size": model_image_size(payload), "flip": bool(flip),
            "heads": list(heads), "dim": dim, "source": source, "atreid_version": __version__,
            "features": "post-BN head features, not normalised; distance = 1 - cosine (as the evaluation)"}


def extract(model_path: str | Path, out: str | Path, *, folder: str | Path | None = None,
            images: str | Path | None = None, benchmark: str | None = None, split: str | None = None,
            data_dir: str | Path = "data", heads: str | None = None, flip: bool = False, batch_size: int = 128,
            device: str = "auto") -> dict[str, Any]:
    """``atreid extract``: features of the images given, written to ``out`` (parquet).

    Args:
        model_path: trained ``model.pt``.
        out: the parquet file (written atomically).
        folder, images, benchmark, split, data_dir: the image source (exactly one of
            ``folder``, ``images`` (a list file) and ``benchmark`` with ``split``).
        heads: ``DT-ST,AD-LT``-style names or ``all`` (None = all).
        flip: average each image's features with its mirror's (as ``eval.flip``).
        batch_size: images per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        A JSON-able report (out, images, heads, dim, flip, resized, model).
    """
    require_pyarrow()
    head_names = parse_heads(heads)
    check_batch(batch_size)
    model_path = Path(model_path)
    image_set = select_images(folder=folder, images=images, benchmark=benchmark, split=split, data_dir=data_dir)
    torch_device = resolve_device(device)
    model, payload = load_model(model_path, torch_device)
    image_size = model_image_size(payload)
    resized = check_images(image_set.files(), image_size)
    if resized:
        log.info("%d of %d images are not %dx%d (height x width): each is resized to it (bilinear, aspect ratio "
                 "not kept), as the evaluation does", resized, len(image_set.paths), *image_size)
    features = image_features(model, image_set, image_size=image_size, batch_size=batch_size, flip=flip,
                              device=torch_device)
    dim = int(features.shape[-1])
    metadata = model_metadata(model_path, payload, heads=head_names, flip=flip, dim=dim, source=image_set.source)
    write_table(out, feature_table(image_set, features, head_names, metadata))
    log.info("%d images (%s) -> %s", len(image_set.paths), image_set.source, out)
    return {"out": str(out), "images": len(image_set.paths), "heads": head_names, "dim": dim, "flip": bool(flip),
            "resized": resized, "image_size": image_size, "model": str(model_path)}
