"""Reading a benchmark copy's files: the sorted walk, image decoding, the release's list
files, and the index CSV the index step writes.

Hard problems (unreadable list files, corrupt images) raise
:class:`DamagedCopyError` naming the file and the fix.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from atreid.errors import AtreidError
from atreid.io import progress

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
SYNTHETIC_COUNTS = "synthetic_counts.json"


def list_files(folder: Path, root: Path) -> list[str]:
    """Every file under ``folder`` as a path relative to ``root`` (POSIX), sorted.

    Sorting makes the index (and every seeded draw made from it) independent of the
    filesystem's listing order.
    """
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def is_image(rel: str) -> bool:
    return Path(rel).suffix.lower() in IMAGE_SUFFIXES


def decode_error(path: str) -> str | None:
    """Fully decode one image; return an error string or None."""
    from PIL import Image  # imported here for start-up time (only the verification decodes)

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
    if workers <= 1:
        return _decode_errors(paths, map(decode_error, full))
    chunk = max(1, min(256, len(full) // (workers * 8) or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return _decode_errors(paths, pool.map(decode_error, full, chunksize=chunk))


def _decode_errors(paths: list[str], results) -> dict[str, str]:
    errors: dict[str, str] = {}
    for rel, error in zip(paths, progress(results, total=len(paths), desc="decode images", unit="img")):
        if error:
            errors[rel] = error
    return errors


class DamagedCopyError(AtreidError):
    """A copy whose content is damaged (an image that does not decode, an unreadable list
    file, a missing split). ``what`` names the problem; the message adds a generic fix,
    which the index step replaces with the one command that prepares the copy again from
    its source (it knows the source: atreid.commands.data.write_index)."""

    def __init__(self, what: str, fix: str = "re-extract the dataset"):
        super().__init__(f"{what}; {fix}")
        self.what = what


def read_id_list(path: Path) -> list[int]:
    """Integer ids separated by commas, spaces or newlines (SYSU/LLCM/LTCC id files)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DamagedCopyError(f"{path}: cannot read id list ({exc})") from None
    tokens = [t for t in re.split(r"[\s,]+", text.strip()) if t]
    try:
        return [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise DamagedCopyError(f"{path}: {bad!r} is not an integer id; the file must list ids separated by "
                               "commas or newlines") from None


def read_path_list(path: Path) -> list[tuple[str, int | None]]:
    """``<relative path> [label]`` lines (RegDB idx, MSMT17 and LLCM lists); blank lines skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DamagedCopyError(f"{path}: cannot read list file ({exc})") from None
    entries: list[tuple[str, int | None]] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        label: int | None = None
        if len(parts) > 1:
            try:
                label = int(parts[1])
            except ValueError:
                raise AtreidError(f"{path}:{number}: label {parts[1]!r} is not an integer; expected "
                                  "'<image path> <label>' lines (re-extract the dataset)") from None
        rel = parts[0].replace("\\", "/")
        while rel.startswith("./"):
            rel = rel[2:]
        entries.append((rel.lstrip("/"), label))
    return entries


TEXT_COLUMNS = ("path", "modality", "split", "train_trials", "test_trials")


def read_benchmark_index(path: str | Path) -> pd.DataFrame:
    """Read ``data/<name>/index.csv`` (clear error when missing); list columns stay text."""
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: index not found; run `snakemake {path}` to build it")
    header = pd.read_csv(path, nrows=0).columns
    dtypes = {c: str for c in TEXT_COLUMNS if c in header}
    return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={c: [] for c in header})
