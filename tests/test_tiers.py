"""The fast tier's own checks (tests/conftest.py), on a small suite run by pytest in a subprocess
with this repository's pytest settings and conftest: a test not marked slow over
``--fast-limit`` fails the run and is named, a slow-marked one is not; without the option
nothing is timed; a module-wide ``pytestmark`` with ``slow`` is refused at collection."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

TIMED = '''
import time

import pytest

def test_quick():
    pass

def test_sleeps_unmarked():
    time.sleep(0.4)

@pytest.mark.slow
def test_sleeps_marked_slow():
    time.sleep(0.4)
'''

WHOLE_MODULE_SLOW = '''
import pytest

pytestmark = pytest.mark.slow

def test_fast_but_hidden():
    pass
'''


def session(tmp_path: Path, modules: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    shutil.copy2(REPO / "tests" / "conftest.py", suite / "conftest.py")
    for name, text in modules.items():
        (suite / name).write_text(text)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                           str(REPO / "pyproject.toml"), "--rootdir", str(suite), "--basetemp",
                           str(tmp_path / "base"), *options, str(suite)],
                          capture_output=True, text=True, timeout=120)


def test_an_unmarked_test_over_the_limit_fails_the_fast_tier(tmp_path):
    done = session(tmp_path, {"test_timed.py": TIMED}, "--fast-limit", "0.2")
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "3 passed" in out, out  # every test passed; the time check failed
    assert "tests not marked slow over 0.2 s" in out, out
    named = [line for line in out.splitlines() if " s  " in line and "::" in line]
    assert len(named) == 1 and named[0].endswith("test_timed.py::test_sleeps_unmarked"), named
    assert "mark them @pytest.mark.slow" in out

    untimed = session(tmp_path, {"test_timed.py": TIMED})
    assert untimed.returncode == 0 and "not marked slow over" not in untimed.stdout, untimed.stdout


def test_a_module_wide_slow_mark_is_refused(tmp_path):
    done = session(tmp_path, {"test_whole.py": WHOLE_MODULE_SLOW}, "-m", "not slow")
    out = done.stdout + done.stderr
    assert done.returncode == 4, out  # pytest's usage error
    assert "test_whole.py: pytestmark sets slow for the whole module; mark the end-to-end tests one by one" in out
