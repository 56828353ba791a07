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

import fcntl
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


SESSION_CONFIG: list[pytest.Config] = []  # this process's config (pytest_runtest_logreport has none)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SPENT] = {}
    config.stash[OVER] = []
    SESSION_CONFIG[:] = [config]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for module in {getattr(item, "module", None) for item in items} - {None}:
        marks = getattr(module, "pytestmark", [])
        if any(mark.name == "slow" for mark in (marks if isinstance(marks, list) else [marks])):
            raise pytest.UsageError(f"{module.__file__}: pytestmark sets slow for the whole module; mark the "
                                    "end-to-end tests one by one (@pytest.mark.slow) so the fast tier keeps "
                                    "the others")
    if is_xdist_worker(config):
        longest_first(items)


# ---- parallel runs: make test is `pytest -n 2 --dist loadscope` (pytest-xdist) -------------
# Each test module is one unit of work, run by one worker from start to end: its module
# fixtures (a trained pipeline copy, a SLURM cluster, the paper run) are built once. Two
# sets of modules share a unit: those that hold ViT-B/16 files (1.4 GB models, the paper
# run's GBs), so that at most one of them is on disk at a time (the suite's disk peak stays
# that of the paper run), and those that install Debian packages when missing (SLURM,
# Chromium), as two apt-get runs at once fail on dpkg's lock (and each test would skip).
# Units go to the workers longest first, as measured (`pytest -m slow --durations=0` on the
# 2-core VM), so that the two workers end together; modules not listed follow in file
# order. A stale order costs time, not proof.
VIT_B_UNIT, VIT_B_MODULES = "vit-b", {"test_paper_path_e2e", "test_export_onnx", "test_reference_checkpoint",
                                      "test_attention"}
APT_UNIT, APT_MODULES = "apt", {"test_slurm_cluster", "test_extract_search"}
LONGEST_FIRST = [VIT_B_UNIT, APT_UNIT, "test_docs", "test_provenance_e2e", "test_dvc_sync", "test_data_stage",
                 "test_ddp_rule", "test_workflow_e2e", "test_compile", "test_train_on", "test_trainer",
                 "test_workflow_hardening", "test_gpu_check"]


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def parallel(config: pytest.Config) -> bool:
    """Whether pytest-xdist runs this session (a worker's own options say ``-n 0``)."""
    return is_xdist_worker(config) or bool(getattr(config.option, "numprocesses", None))


def unit_of(nodeid: str) -> str:
    """The unit of work of the test ``nodeid`` (``tests/test_x.py::test_y[...]``)."""
    module = Path(nodeid.split("::")[0]).stem
    return VIT_B_UNIT if module in VIT_B_MODULES else APT_UNIT if module in APT_MODULES else module


def longest_first(items: list[pytest.Item]) -> None:
    """Order the units of work longest first (the scheduler hands them out in this order)."""
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))  # stable: file order within a unit


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadscope`` with this suite's units of work as its scopes (:func:`unit_of`).

    Not xdist's ``loadgroup`` marks: with pytest 9 they no longer reach the scheduler."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling  # start-up: only a pytest-xdist controller has it

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return UnitScheduling(config, log)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The report of each phase, in the process that prints the results: pytest's own, or
    # pytest-xdist's controller (its workers' reports carry the marks as keywords).
    if "slow" not in report.keywords:
        spent = SESSION_CONFIG[0].stash[SPENT]
        spent[report.nodeid] = spent.get(report.nodeid, 0.0) + report.duration


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if is_xdist_worker(session.config):
        return  # the controller judges the times and owns the shared scratch
    if parallel(session.config) and session.testsfailed == 0 and exitstatus == pytest.ExitCode.OK:
        # The workers' shared tiny pipeline (`tiny_pipeline`): kept after a failure, for the post-mortem.
        shutil.rmtree(session.config._tmp_path_factory.getbasetemp() / SHARED_PIPELINE, ignore_errors=True)
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
SHARED_PIPELINE = SESSION_SCRATCH + "pipeline"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    """The tiny pipeline of tests/e2e.py (``work``: the built repository; ``log``: the
    run's stderr), built once per test session for every end-to-end test that starts from
    a finished run. Read-only: a test that changes anything works in a copy
    (``tests.e2e.copy_pipeline``). Deleted at the end of a session without failures."""
    from tests.e2e import build_tiny_pipeline

    worker = is_xdist_worker(request.config)
    # pytest-xdist's workers share one build, in the folder above their own base folders
    # (the controller's; it deletes the build at the end of a session without failures).
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if worker else base) / SHARED_PIPELINE
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / (SHARED_PIPELINE + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait for the first one's build
        if not (folder / "built.log").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            log = build_tiny_pipeline(folder / "repo")
            (folder / "built.log").write_text(log)
    yield SimpleNamespace(work=folder / "repo", log=(folder / "built.log").read_text())
    if not worker and request.session.testsfailed == 0:
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

