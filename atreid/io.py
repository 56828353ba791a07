"""Atomic output helpers and progress reporting.

Every file the pipeline writes goes through these helpers: the content is written to a
temporary sibling and moved into place with ``os.replace``, so a crash (even kill -9)
never leaves a truncated output that a later step or Snakemake would trust.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")


def _temp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling + fsync + rename)."""
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(path: str | os.PathLike, frame: "Any") -> None:
    """Write a pandas DataFrame as CSV (no index column) atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    atomic_write_text(path, buffer.getvalue())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and move it into place on success.

    On any exception the temporary directory is removed and ``path`` is left as it was
    (absent if it did not exist), so no partial dataset is ever visible.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar on stderr (quiet when ATREID_QUIET is set)."""
    from tqdm import tqdm

    disable = bool(os.environ.get("ATREID_QUIET"))
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                mininterval=1.0, dynamic_ncols=True)
