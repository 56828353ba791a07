"""Shared fixtures: a tiny hand-built AT-USTC-layout dataset and the default params."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ATREID_QUIET", "1")  # no progress bars in test output

REPO = Path(__file__).resolve().parents[1]


def write_jpeg(path: Path, value: int = 128, size: tuple[int, int] = (16, 8)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[0], size[1], 3), value, dtype=np.uint8)
    Image.fromarray(array).save(path, quality=90)


def build_tiny_atustc(root: Path, frames: int = 5) -> Path:
    """A minimal valid AT-USTC copy: 2 train persons, 2 test persons, every flag present."""
    top = root / "AT-USTC"
    # Training persons 1-2: two outfits, RGB and IR cameras, flag 0 clips and a flag 1 clip.
    for person in (1, 2):
        for date, clothes in ((1, 1), (2, 2)):
            for camera in (1, 9):
                for frame in range(frames):
                    write_jpeg(top / f"p{person:03d}-d{date:02d}-c{clothes:02d}" / f"cam{camera:02d}-f0-{frame * 10:04d}.jpg")
        write_jpeg(top / f"p{person:03d}-d01-c01" / "cam02-f1-0000.jpg")
    # Test persons 3-4: one clip per query/gallery flag.
    for person in (3, 4):
        for flag, camera, clothes in ((2, 1, 1), (6, 2, 1), (3, 1, 1), (7, 2, 2),
                                      (4, 9, 1), (8, 10, 1), (5, 9, 1), (9, 10, 2)):
            for frame in range(3):
                write_jpeg(top / f"p{person:03d}-d01-c{clothes:02d}" / f"cam{camera:02d}-f{flag}-{frame:04d}.jpg")
    return root


@pytest.fixture(autouse=True, scope="module")
def _free_module_scratch(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete the folders a test module made under pytest's base temp once it is done.

    The suite writes several GB (ViT-B checkpoints, models and ONNX files, pipeline copies
    with their DVC caches); kept to the end of the session they add up to more than a CI
    disk may have free. ``tmp_path_retention_policy = "failed"`` (pyproject.toml) deletes a
    passed test's ``tmp_path``; this does the same for ``tmp_path_factory`` folders of
    module fixtures, at module teardown (after the module's own fixtures are torn down).
    A module with a failure keeps its fixtures' folders (and pytest its failed tests'
    tmp_path), for the post-mortem."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failures = request.session.testsfailed
    yield
    if request.session.testsfailed != failures:
        return
    for path in set(base.iterdir()) - before:
        if path.is_symlink():  # pytest's "<name>current" links
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tiny_atustc(tmp_path: Path) -> Path:
    return build_tiny_atustc(tmp_path / "images")
