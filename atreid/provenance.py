"""What a number came from: the data's source, the code's commit, the settings, the weights.

A trained model file carries the :func:`training_provenance` of its run, and every
metrics file the :func:`evaluation_provenance` of its evaluation (with the model's), so
each row of the result table can say which data, commit, settings and pretrained file it
was built from (atreid/report/table.py). Package versions are recorded, never compared:
they do not rerun anything.
"""

from __future__ import annotations

import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from atreid import __version__
from atreid.io import file_sha256, settings_sha256

SYNTHETIC_MARKER = "synthetic_counts.json"  # written by the generators into images/
SOURCE_RECORD = "source.json"  # written by an import: {source, sha256, kind, size, imported_at}
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "snakemake", "dvc")


PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def git_state(folder: str | Path = PACKAGE_ROOT) -> dict[str, Any]:
    """The commit checked out in ``folder`` (by default the checkout atreid runs from) and
    whether tracked files differ from it (``commit`` None outside a git repository)."""
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def dataset_source(folder: str | Path) -> dict[str, Any]:
    """Where the dataset in ``folder`` (data/<name>) came from: the synthetic generator, or
    the imported copy's name and sha256 (its source.json), or ``unknown``."""
    folder = Path(folder)
    record = folder / SOURCE_RECORD
    if record.is_file():
        try:
            recorded = json.loads(record.read_text())
            return {"source": Path(str(recorded["source"]).rstrip("/")).name, "sha256": recorded["sha256"],
                    "kind": recorded.get("kind")}
        except (OSError, ValueError, KeyError, TypeError):
            return {"source": "unknown", "why": f"{record} is unreadable"}
    if (folder / "images" / SYNTHETIC_MARKER).is_file():
        return {"source": "synthetic", "generator": f"atreid {__version__}"}
    return {"source": "unknown"}


def describe_source(source: Mapping[str, Any]) -> str:
    """One short phrase for a :func:`dataset_source`: ``synthetic``, ``AT-USTC.zip@1a2b3c4d5e6f``."""
    if source.get("source") == "synthetic":
        return "synthetic"
    if source.get("sha256"):
        return f"{source['source']}@{str(source['sha256'])[:12]}"
    return str(source.get("source", "unknown"))


def pretrained_sha256(pretrained: str | Path | None) -> str | None:
    """The sha256 of the starting weights' file, or the source itself (``none``, ``hub``)."""
    if pretrained is None:
        return None
    path = Path(str(pretrained))
    return file_sha256(path) if path.is_file() else str(pretrained)


@lru_cache(maxsize=None)
def packages() -> dict[str, str]:
    versions = {"python": platform.python_version(), "atreid": __version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def training_provenance(settings: Mapping[str, Any], *, data_folder: str | Path, pretrained: str | Path | None
                        ) -> dict[str, Any]:
    """What a trained model was built from (stored in its model file)."""
    return {"code": dict(git_state()), "settings_sha256": settings_sha256(settings),
            "data": dataset_source(data_folder), "pretrained_sha256": pretrained_sha256(pretrained),
            "packages": dict(packages())}


def evaluation_provenance(eval_settings: Mapping[str, Any], *, data_folder: str | Path,
                          model: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a metrics file was computed from: the benchmark's data, the evaluation's code
    and settings, and the model's own provenance (empty for a model file without one)."""
    return {"data": dataset_source(data_folder), "code": dict(git_state()),
            "eval_settings_sha256": settings_sha256(eval_settings), "model": dict(model or {}),
            "packages": dict(packages())}


def imported_provenance(settings: Mapping[str, Any], checkpoint: str | Path) -> dict[str, Any]:
    """What an imported reference checkpoint's model file came from: the file itself
    (trained by the authors' code on data atreid never saw)."""
    checkpoint = Path(checkpoint)
    return {"code": dict(git_state()), "settings_sha256": settings_sha256(settings),
            "data": {"source": f"reference checkpoint {checkpoint.name}", "sha256": file_sha256(checkpoint)},
            "pretrained_sha256": None, "packages": dict(packages())}
