"""Shared fixtures (a tiny hand-built AT-USTC-layout dataset) and the suite's two tiers.

Tiers: ``make check`` runs ``pytest -m "not slow" --fast-limit 5``, every test not marked
``slow``, in about a minute; ``make test`` (CI) runs them all. Mark a test
``@pytest.mark.slow``, one test at a time, when it runs the workflow end to end or takes
over the limit on its own; a module-wide ``pytestmark`` with ``slow`` is refused at
collection (it would hide the module's fast tests from the fast tier). With
``--fast-limit SECONDS`` a test not marked slow whose setup + call + teardown took longer
fails the run, named in the summary: the fast tier stays fast as tests are added.
"""

from __future__ import annotations

import json

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("ATREID_QUIET", "1")  # no progress bars in test output

REPO = Path(__file__).resolve().parents[1]


# ---- the fast tier's time check ------------------------------------------------------------
SPENT = pytest.StashKey[dict]()  # nodeid -> seconds (setup + call + teardown), tests not marked slow
OVER = pytest.StashKey[list]()  # (seconds, nodeid) over --fast-limit


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast-limit", type=float, default=None, metavar="SECONDS",
                     help="fail the run when a test not marked slow takes longer than SECONDS "
                          "(setup + call + teardown; make check: 5)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SPENT] = {}
    config.stash[OVER] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for module in {getattr(item, "module", None) for item in items} - {None}:
        marks = getattr(module, "pytestmark", [])
        if any(mark.name == "slow" for mark in (marks if isinstance(marks, list) else [marks])):
            raise pytest.UsageError(f"{module.__file__}: pytestmark sets slow for the whole module; mark the "
                                    "end-to-end tests one by one (@pytest.mark.slow) so the fast tier keeps "
                                    "the others")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    if item.get_closest_marker("slow") is None:
        spent = item.config.stash[SPENT]
        spent[item.nodeid] = spent.get(item.nodeid, 0.0) + outcome.get_result().duration


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    limit = session.config.getoption("--fast-limit")
    if limit is None:
        return
    over = sorted(((s, n) for n, s in session.config.stash[SPENT].items() if s > limit), reverse=True)
    session.config.stash[OVER] = over
    if over and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    over = config.stash[OVER]
    if over:
        limit = config.getoption("--fast-limit")
        terminalreporter.section(f"tests not marked slow over {limit:g} s", sep="=", red=True)
        for seconds, nodeid in over:
            terminalreporter.line(f"{seconds:6.1f} s  {nodeid}")
        terminalreporter.line("make them faster, or mark them @pytest.mark.slow (make test runs them; "
                              "make check does not)")


def settings_file(path: Path, settings: dict) -> Path:
    """Write ``settings`` as the JSON file a ``--settings`` flag takes; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings))
    return path


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


# Folders of session fixtures under pytest's base temp start with this: they outlive modules.
SESSION_SCRATCH = "session-"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    """The tiny pipeline of tests/e2e.py (``work``: the built repository; ``log``: the
    run's stderr), built once per test session for every end-to-end test that starts from
    a finished run. Read-only: a test that changes anything works in a copy
    (``tests.e2e.copy_pipeline``). Deleted at the end of a session without failures."""
    from tests.e2e import build_tiny_pipeline

    folder = tmp_path_factory.mktemp(SESSION_SCRATCH + "pipeline")
    log = build_tiny_pipeline(folder / "repo")
    yield SimpleNamespace(work=folder / "repo", log=log)
    if request.session.testsfailed == 0:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _free_module_scratch(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete the folders a test module made under pytest's base temp once it is done.

    The suite writes several GB (ViT-B checkpoints, models and ONNX files, pipeline copies
    with their DVC caches); kept to the end of the session they add up to more than a CI
    disk may have free. ``tmp_path_retention_policy = "failed"`` (pyproject.toml) deletes a
    passed test's ``tmp_path``; this does the same for ``tmp_path_factory`` folders of
    module fixtures, at module teardown (after the module's own fixtures are torn down).
    A module with a failure keeps its fixtures' folders (and pytest its failed tests'
    tmp_path), for the post-mortem. Session fixtures' folders (``SESSION_SCRATCH``) are
    left to their fixture."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failures = request.session.testsfailed
    yield
    if request.session.testsfailed != failures:
        return
    for path in set(base.iterdir()) - before:
        if path.name.startswith(SESSION_SCRATCH):
            continue  # a session fixture's: deleted at the session's end
        if path.is_symlink():  # pytest's "<name>current" links
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tiny_atustc(tmp_path: Path) -> Path:
    return build_tiny_atustc(tmp_path / "images")
