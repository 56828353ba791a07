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


# The smallest pipeline the end-to-end tests run: a synthetic AT-USTC of 8 + 6 persons at
# 64x32, 3 pre-training iterations and one epoch of 3 iterations (tests override pieces).
TINY_PARAMS = {
    "data": {
        "synthetic": {"train_persons": 8, "test_persons": 6, "outfits": [2, 2], "dates": 2,
                      "train_cameras_per_outfit": 4, "train_frames_per_clip": 6, "image_height": 64,
                      "image_width": 32},
        "atustc": {"frames_per_clip": 4, "decode_workers": 1},
    },
    "model": {"image_size": [64, 32]},
    "pretrain": {"persons": 6, "outfits": 2, "cameras": 4, "views": 2, "iterations": 3, "batch_size": 8,
                 "threads": 1},
    "train": {"epochs": 1, "iters_per_epoch": 3, "batch_p": 4, "batch_k": 4, "num_workers": 0},
    "eval": {"batch_size": 64},
    "seeds": [0],
}


def tiny_params(work: Path, variants: dict, *, benchmarks: list[str] | None = None,
                overrides: dict | None = None) -> dict:
    """Write ``work``/params.yaml as the repository's, shrunk to :data:`TINY_PARAMS`
    (deep-merged with ``overrides``), with exactly ``variants`` and, when given, only
    ``benchmarks`` evaluated (and imported); return the params."""
    import yaml

    from atreid.config import deep_merge

    params = deep_merge(yaml.safe_load((work / "params.yaml").read_text()), TINY_PARAMS)
    params = deep_merge(params, overrides or {})
    params["variants"] = variants  # replaced, not merged: the test's variants only
    if benchmarks is not None:
        params["eval"]["benchmarks"] = list(benchmarks)
        params["data"]["benchmarks"] = {name: params["data"]["benchmarks"][name] for name in benchmarks
                                        if name in params["data"]["benchmarks"]}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


# The pipeline that the end-to-end tests share, built once a test session (the
# `tiny_pipeline` fixture, tests/conftest.py): two variants, the one with every switch of
# the method and the one with none, evaluated on AT-USTC and one cross-dataset benchmark.
PIPELINE_VARIANTS = {"full": {"ncls": 6, "said": True, "moae": True, "hdw": True},
                     "baseline": {"ncls": 6, "said": False, "moae": False, "hdw": False}}
PIPELINE_BENCHMARKS = ["atustc", "market1501"]


def build_tiny_pipeline(work: Path) -> str:
    """`snakemake --cores 2` (what `make run` runs) in a git-committed copy of the repository
    shrunk to :data:`TINY_PARAMS` with :data:`PIPELINE_VARIANTS`; returns its stderr (the log)."""
    copy_tracked_files(work)
    tiny_params(work, PIPELINE_VARIANTS, benchmarks=PIPELINE_BENCHMARKS)
    commit_all(work)
    return run(["snakemake", "--cores", "2"], work).stderr


def copy_pipeline(built: Path, work: Path) -> Path:
    """A copy of the built pipeline ``built`` that a test may change: every file, with its
    modification time (so Snakemake has nothing to do in it), and the git, DVC and
    Snakemake state (.git, .dvc, dvc.lock, .snakemake) with it."""
    shutil.copytree(built, work, symlinks=True)
    return work


def stale_dvc_stages(output: str) -> set[str]:
    """The stages `dvc status` lists as changed (its unindented ``name:`` lines)."""
    return {line.strip().rstrip(":") for line in output.splitlines()
            if line and not line.startswith((" ", "\t")) and line.strip().endswith(":")}


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


def settings_of(work: Path, command: str) -> dict:
    """The settings a job's shell line passes: the JSON file after its ``--settings``."""
    import json

    return json.loads((work / command.split("--settings ")[1].split()[0]).read_text())


def dry_run_commands(work: Path, steps: tuple[str, ...], *config: str) -> dict[str, list[str]]:
    """The ``atreid <step>`` shell commands ``snakemake -n -p`` would run in ``work``, by step."""
    out = run(["snakemake", "-n", "-p", "--cores", "1", *config], work).stdout
    lines = [line.strip() for line in out.splitlines() if "atreid " in line]
    return {step: sorted(line for line in lines if f"atreid {step} " in line) for step in steps}
