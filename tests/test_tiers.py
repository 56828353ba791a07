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


# Each test appends its module and its xdist worker to one file.
RECORDS = '''
import os
from pathlib import Path

def test_one():
    with open(Path(__file__).parent / "workers.txt", "a") as out:
        out.write(f"{Path(__file__).stem} {os.environ['PYTEST_XDIST_WORKER']}\\n")

def test_two():
    test_one()
'''


def test_units_of_work_never_split_across_workers(tmp_path):
    """make test's two workers: a module's tests run in one worker, and the modules of a
    shared unit (ViT-B files, apt installs) in one worker; the fast-limit check still works."""
    modules = {f"{name}.py": RECORDS for name in ("test_paper_path_e2e", "test_attention", "test_slurm_cluster",
                                                  "test_extract_search", "test_alpha", "test_beta", "test_gamma")}
    modules["test_timed.py"] = TIMED
    done = session(tmp_path, modules, "-n", "2", "--dist", "loadscope", "--no-loadscope-reorder",
                   "--fast-limit", "0.2")
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "17 passed" in out, out
    assert [line for line in out.splitlines() if " s  " in line and "::" in line][0].endswith("test_sleeps_unmarked")
    workers: dict[str, set[str]] = {}
    for line in (tmp_path / "suite" / "workers.txt").read_text().splitlines():
        module, worker = line.split()
        workers.setdefault(module, set()).add(worker)
    assert all(len(ran_in) == 1 for ran_in in workers.values()), workers
    assert workers["test_paper_path_e2e"] == workers["test_attention"], workers
    assert workers["test_slurm_cluster"] == workers["test_extract_search"], workers
    assert len(set().union(*workers.values())) == 2, workers  # both workers had work


def test_every_module_the_units_name_exists():
    from tests.conftest import APT_MODULES, LONGEST_FIRST, VIT_B_MODULES, unit_of

    modules = {path.stem for path in (REPO / "tests").glob("test_*.py")}
    assert VIT_B_MODULES <= modules and APT_MODULES <= modules
    assert {unit_of(f"tests/{name}.py::test") for name in modules} >= set(LONGEST_FIRST)
