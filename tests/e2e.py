"""Helpers of the end-to-end tests: a throw-away copy of the repository and its commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` with the test's environment (its venv first on PATH, no progress bars)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ATREID_QUIET="1")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


def copy_tracked_files(work: Path) -> Path:
    """A copy of the repository's tracked files in ``work`` (what a fresh clone holds)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        src = REPO / rel
        if src.is_file():
            dst = work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (work / "data" / "raw").mkdir(parents=True, exist_ok=True)
    return work


def commit_all(work: Path) -> None:
    """Make ``work`` a git repository with one commit (DVC needs one)."""
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "e2e"]):
        run(cmd, work)


def jobs_of_dry_run(output: str) -> dict[str, int]:
    """The 'Job stats' table of `snakemake -n`: rule -> count."""
    jobs: dict[str, int] = {}
    block = output.split("Job stats:")[1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        jobs[match[1]] = int(match[2])
    jobs.pop("total", None)
    return jobs
