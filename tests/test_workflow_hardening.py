"""The workflow against hostile or broken input (issue 15, items 1, 8 and 9).

Every test runs Snakemake in a copy of the repository's tracked files:
- values that reach a shell (paths, settings JSON) are quoted: a `data.dir` holding a
  space and `$(touch ...)` is printed quoted by `snakemake -n -p`, and a real run of the
  data stage works and runs nothing;
- params.yaml with a duplicated key or broken YAML, that is empty or a list, and an
  unregistered benchmark, stop the workflow with one line naming the file, the line and
  the key (as `atreid check-params` does);
- after a killed snakemake, the rerun's lock error says to run `snakemake --unlock`, and
  that works.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import BIN, copy_tracked_files, run

HOSTILE_DIR = "my data $(touch PWNED)"

TINY = {
    "data": {
        "synthetic": {"train_persons": 4, "test_persons": 3, "outfits": [2, 2], "dates": 2,
                      "train_cameras_per_outfit": 2, "train_frames_per_clip": 2, "image_height": 32,
                      "image_width": 16},
        "atustc": {"frames_per_clip": 2, "decode_workers": 1},
        "benchmarks": {},
    },
    "model": {"image_size": [64, 32]},
    "train": {"epochs": 1, "iters_per_epoch": 1, "batch_p": 2, "batch_k": 2, "num_workers": 0},
    "variants": {"baseline": {"ncls": 6, "said": False, "moae": False, "hdw": False}},
    "eval": {"batch_size": 16, "benchmarks": ["atustc"]},
}


def write_params(work: Path, **changes) -> dict:
    from atreid.config import deep_merge

    params = yaml.safe_load((work / "params.yaml").read_text())
    params = deep_merge(params, TINY)
    params["data"]["benchmarks"] = {}
    params["variants"] = dict(TINY["variants"])
    for key, value in changes.items():
        section, name = key.split("__")
        params[section][name] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


@pytest.fixture
def work(tmp_path) -> Path:
    return copy_tracked_files(tmp_path / "repo")


def no_pwned(root: Path) -> None:
    assert not list(root.rglob("PWNED")), "a value in params.yaml ran as a shell command"


def test_dry_run_prints_hostile_values_quoted(work):
    checkpoint = "ref ck $(touch PWNED) 'x'.t"
    (work / checkpoint).write_bytes(b"not read by a dry run")
    params = write_params(work, data__dir=HOSTILE_DIR)
    params["variants"]["imported"] = {"ncls": 6, "said": True, "moae": True, "hdw": True,
                                      "reference_checkpoint": checkpoint}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    dry = run(["snakemake", "-n", "-p", "--cores", "1"], work)
    out = dry.stdout + dry.stderr
    shell_lines = [line.strip().removeprefix("Shell command:").strip() for line in out.splitlines()]
    commands = [shlex.split(line) for line in shell_lines if line.startswith("atreid ")]
    by_step = {args[1]: args for args in commands}
    assert {"train", "import-checkpoint", "evaluate", "sample-frames"} <= set(by_step), out

    def value_of(step: str, option: str) -> str:
        args = by_step[step]
        return args[args.index(option) + 1]

    assert value_of("train", "--index") == f"{HOSTILE_DIR}/atustc/train_sampled.csv"
    assert value_of("train", "--images") == f"{HOSTILE_DIR}/atustc/images/AT-USTC"
    assert by_step["import-checkpoint"][2] == checkpoint
    assert value_of("evaluate", "--data-dir") == HOSTILE_DIR
    # Settings reach a job as one file the workflow wrote (a logged command reruns by hand).
    assert json.loads((work / value_of("evaluate", "--settings")).read_text())["batch_size"] == 16
    assert json.loads((work / value_of("train", "--settings")).read_text())["name"] in params["variants"]
    assert value_of("sample-frames", "--index") == f"{HOSTILE_DIR}/atustc/index.csv"
    no_pwned(work)


@pytest.mark.slow
def test_data_stage_runs_with_space_and_command_in_data_dir(work):
    write_params(work, data__dir=HOSTILE_DIR)
    target = f"{HOSTILE_DIR}/atustc/train_sampled.csv"
    run(["snakemake", "--cores", "2", target], work)
    assert (work / target).is_file() and (work / HOSTILE_DIR / "atustc" / "labels.json").is_file()
    no_pwned(work)


def snakemake_fails(work: Path, *args: str) -> str:
    result = run(["snakemake", "-n", *args], work, check=False)
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


@pytest.mark.slow
def test_duplicate_key_and_bad_yaml_name_file_and_line(work):
    params = work / "params.yaml"
    text = params.read_text()
    params.write_text(text + "seeds: [3]\n")
    line = len(text.splitlines()) + 1
    assert f"error: params.yaml (line {line}): duplicate key 'seeds'; give each key once" in snakemake_fails(work)

    params.write_text(text)
    preset = work / "preset.yaml"
    preset.write_text("train:\n  epochs: 2\n  epochs: 3\n")
    assert "preset.yaml (line 3): duplicate key 'epochs'" in snakemake_fails(work, "--configfile", str(preset))

    params.write_text(text.replace("seeds: [0, 1]", "seeds: [0, 1", 1))
    out = snakemake_fails(work)
    assert "error: params.yaml (line " in out and "not valid YAML" in out, out

    # The retired single seed: one line naming its new form.
    params.write_text(text.replace("seeds: [0, 1]", "seed: 0", 1))
    out = snakemake_fails(work)
    assert "error: params.yaml (+ --configfile/--config): key 'seed' was renamed to seeds, a list" in out, out


@pytest.mark.parametrize("text", ["", "- seeds\n- data\n"])
def test_params_without_a_mapping_fail_the_same_way_in_check_params_and_workflow(work, text):
    """Not Snakemake's "Config file must be given as JSON or YAML with keys at top level"
    naming the Snakefile: the line of `atreid check-params`, naming params.yaml."""
    (work / "params.yaml").write_text(text)
    result = run(["snakemake", "-n"], work, check=False)
    check = run([sys.executable, "-m", "atreid", "check-params"], work, check=False)
    assert result.returncode != 0 and check.returncode == 2
    line = check.stderr.strip().splitlines()[-1]
    assert line.startswith("error: params.yaml: ") and "expected a mapping of settings at the top level" in line
    assert result.stderr.strip().splitlines()[-1] == line, result.stderr
    assert "Snakefile" not in result.stderr and "WorkflowError" not in result.stderr


def test_unregistered_benchmark_fails_the_same_way_in_check_params_and_workflow(work):
    write_params(work, eval__benchmarks=["atustc", "market1502"])
    out = snakemake_fails(work)
    check = run([sys.executable, "-m", "atreid", "check-params"], work, check=False)
    assert check.returncode == 2
    message = "eval.benchmarks: unknown benchmark 'market1502'; valid: atustc, cuhk03"
    assert message in out and message in check.stderr, (out, check.stderr)


@pytest.mark.slow
def test_killed_snakemake_rerun_says_unlock_and_unlock_works(work):
    write_params(work)
    target = "data/atustc/images"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ATREID_QUIET="1")
    # Its own process group, so that the kill takes the job's shell too (as a killed
    # terminal session would).
    proc = subprocess.Popen(["snakemake", "--cores", "1", target], cwd=work, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locks = work / ".snakemake" / "locks"
    job_log = work / "logs" / "data" / "prepare_atustc.log"  # created when the job's shell starts
    deadline = time.monotonic() + 120
    try:
        while not (locks.is_dir() and any(locks.iterdir()) and job_log.exists()):
            assert proc.poll() is None, "snakemake ended before it was killed"
            assert time.monotonic() < deadline, "snakemake started no job"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    rerun = run(["snakemake", "--cores", "1", target], work, check=False)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode != 0 and "LockException" in out, out
    assert "run `snakemake --unlock` then rerun" in out, out

    unlock = run(["snakemake", "--unlock"], work)
    assert "hint:" not in unlock.stdout + unlock.stderr
    done = run(["snakemake", "--cores", "1", target], work)
    assert "hint:" not in done.stdout + done.stderr
    assert (work / target / "AT-USTC").is_dir()


def test_benchmark_data_stage_allows_every_benchmark_rule():
    """`dvc repro` of a benchmark (built-in or `custom`) runs Snakemake with the stage's
    --allowed-rules: each rule of rules/benchmarks.smk must be in it, or the stage of the
    dataset that rule builds stops with "no rule allowed" (index_custom was once missing)."""
    import re

    from tests.conftest import REPO

    rules = set(re.findall(r"^rule (\w+):", (REPO / "rules" / "benchmarks.smk").read_text(), flags=re.M))
    command = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["benchmark_data"]["do"]["cmd"]
    allowed = set(command.split("--allowed-rules", 1)[1].split())
    assert rules and rules == allowed, (rules, allowed)
