"""The suite frees its temporary folders as it goes (CI ran out of disk when it did not).

A small test session, run by pytest in a subprocess with this repository's pytest settings
(pyproject.toml) and tests/conftest.py: a module's fixture folder and a passed test's
tmp_path are gone by the time the next module runs; a module with a failure keeps its
fixtures' folders and the failed test's tmp_path. And the paper-path module, which needs
about 5 GB, skips with the reason on a disk that is too small.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

MODULE_A = '''
import pytest

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fixture_of_a")
    (folder / "weights.bin").write_bytes(b"x" * 1000)
    return folder

def test_a(made, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"y" * 1000)
    assert (made / "weights.bin").is_file()
'''

MODULE_B = '''
def test_b(tmp_path_factory):
    names = [path.name for path in tmp_path_factory.getbasetemp().iterdir()]
    assert not any(name.startswith(("fixture_of_a", "test_a")) for name in names), names
'''

MODULE_C = '''
import pytest

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return tmp_path_factory.mktemp("fixture_of_c")

def test_c_passes(made, tmp_path):
    (tmp_path / "kept.txt").write_text("kept: the module failed")

def test_c_fails(made, tmp_path):
    (tmp_path / "evidence.txt").write_text("for the post-mortem")
    assert False
'''


def test_passed_modules_leave_nothing_and_failed_ones_keep_their_folders(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy2(REPO / "tests" / "conftest.py", suite / "conftest.py")
    for name, text in (("test_a.py", MODULE_A), ("test_b.py", MODULE_B), ("test_c.py", MODULE_C)):
        (suite / name).write_text(textwrap.dedent(text))
    base = tmp_path / "base"  # given, so pytest keeps it after the session for this check
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-c", str(REPO / "pyproject.toml"), "--rootdir", str(suite), "--basetemp", str(base),
                           str(suite)], capture_output=True, text=True, timeout=300)
    assert "1 failed, 3 passed" in done.stdout, done.stdout + done.stderr  # test_b saw a's folders gone
    left = sorted(path.name for path in base.iterdir() if not path.is_symlink())
    # Module c failed: its fixture folder and its failed test's folder stay; a passed
    # test's tmp_path goes in any case.
    assert any(name.startswith("fixture_of_c") for name in left), left
    assert any(name.startswith("test_c_fails") for name in left), left
    assert not any(name.startswith("test_c_passes") for name in left), left
    assert not any(name.startswith(("fixture_of_a", "test_a", "test_b")) for name in left), left
    kept = list(base.glob("test_c_fails*/evidence.txt"))
    assert kept and kept[0].read_text() == "for the post-mortem"


def test_the_paper_run_skips_with_the_reason_on_a_small_disk(tmp_path):
    """The paper-path module checks the free space before its 4.5 GB run: on a 64 MB disk
    (a real tmpfs as pytest's base temp) its four run tests skip, saying what is needed and
    what is free, instead of failing half-way on a full disk."""
    from tests.test_io import small_filesystem

    with small_filesystem(tmp_path / "small", size="64m") as disk:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider",
                               "--basetemp", str(disk / "base"), "-k", "not overlapping",
                               str(REPO / "tests" / "test_paper_path_e2e.py")],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "4 skipped" in done.stdout and "failed" not in done.stdout and "error" not in done.stdout, done.stdout
    reasons = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and "the paper run needs 5 GB free in" in reasons[0], reasons
    assert "free disk space (or point --basetemp elsewhere)" in reasons[0], reasons
