"""DVC knows what Snakemake built, and a DVC remote round trip (issue 18).

The slow tests share, in order, a copy of the session's tiny pipeline (tests/conftest.py
`tiny_pipeline`): a `make run`-equivalent (`snakemake --cores 2`) in a copy of the
repository whose params.yaml is shrunk (DVC reads params.yaml, so the shrink is there,
not in --config). Then:
1. the run recorded itself in dvc.lock: `dvc status` is clean and quick, `snakemake -n`
   has nothing to do; committed as run A and pushed to a local-folder remote;
2. one variant's setting changes: `dvc status` names its training stage only, and
   `dvc repro` reruns that variant's stages, the table and the figures; committed as run B
   and pushed;
3. a fresh `git clone` + `dvc pull --allow-missing` (the datasets are never pushed) +
   `dvc repro` (which rebuilds the datasets, here the synthetic ones, byte for byte, and
   nothing else) + `snakemake --touch` holds run B's table and has nothing left for
   `snakemake -n`; `git checkout` of run A + `dvc pull` there (`dvc checkout` in the
   repository that made the runs) brings back run A's model and table;
4. `dvc push` never uploads a dataset (`push: false` in dvc.yaml and data.dvc).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from atreid.commands.dvc_sync import covered, skip_reason
from tests.conftest import REPO
from tests.e2e import copy_pipeline, copy_tracked_files, run, stale_dvc_stages

STAGES_OF_FULL = {"train@full-0", "evaluate@full-0", "curves@full", "galleries@full", "table", "figures"}


def git(work: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], work).stdout.strip()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_params(work: Path, change) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    change(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline, tmp_path_factory) -> SimpleNamespace:
    """A copy of the repository after one `snakemake --cores 2`, its log, and what the tests record."""
    tmp = tmp_path_factory.mktemp("dvc_sync")
    work = copy_pipeline(tiny_pipeline.work, tmp / "repo")
    return SimpleNamespace(work=work, remote=tmp / "remote", clone=tmp / "clone", log=tiny_pipeline.log, runs={})


@pytest.mark.slow
def test_a_snakemake_run_records_itself_in_dvc_lock(pipeline):
    work = pipeline.work
    assert "dvc.lock: recorded" in pipeline.log, pipeline.log[-3000:]
    assert (work / "dvc.lock").is_file()
    start = time.monotonic()
    status = run(["dvc", "status"], work)
    seconds = time.monotonic() - start
    assert stale_dvc_stages(status.stdout) == set(), status.stdout
    print(f"dvc status after the run: {seconds:.1f} s")
    assert seconds < 30, seconds  # seconds, not the minute of hashing without a lock
    # dvc commit --no-relink left Snakemake's files and modification times alone.
    dry = run(["snakemake", "-n"], work)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout

    # Run A: committed, and pushed to a local folder (the README's "DVC remote").
    run(["dvc", "remote", "add", "-d", "storage", str(pipeline.remote)], work)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "run A")
    run(["dvc", "push"], work)
    pipeline.runs["A"] = {"rev": git(work, "rev-parse", "HEAD"),
                          "table": (work / "results" / "table.csv").read_bytes(),
                          "model": digest(work / "models" / "full" / "seed0" / "model.pt")}


@pytest.mark.slow
def test_dvc_repro_after_a_one_variant_change_reruns_that_variant_only(pipeline):
    work = pipeline.work
    write_params(work, lambda params: params["variants"]["full"].update(train={"iters_per_epoch": 4}))
    status = run(["dvc", "status"], work)
    assert stale_dvc_stages(status.stdout) == {"train@full-0"}, status.stdout

    # dvc repro reruns exactly the affected stages (through Snakemake).
    repro = run(["dvc", "repro"], work)
    ran = set(re.findall(r"Running stage '([^']+)'", repro.stdout))
    assert ran == STAGES_OF_FULL, repro.stdout
    assert stale_dvc_stages(run(["dvc", "status"], work).stdout) == set()
    assert digest(work / "models" / "full" / "seed0" / "model.pt") != pipeline.runs["A"]["model"]

    git(work, "add", "-A")
    git(work, "commit", "-qm", "run B: full trains 4 iterations an epoch")
    run(["dvc", "push"], work)
    pipeline.runs["B"] = {"table": (work / "results" / "table.csv").read_bytes()}
    assert pipeline.runs["B"]["table"] != pipeline.runs["A"]["table"]


@pytest.mark.slow
def test_a_fresh_clone_pulls_the_run_and_checks_out_an_older_one(pipeline):
    clone = pipeline.clone
    run(["git", "clone", "-q", str(pipeline.work), str(clone)], pipeline.work)
    venv = REPO / ".venv"  # the README's `make install` (with this venv: -o, nothing to reinstall)
    run(["make", "-o", f"{venv}/.atreid-installed", "install", f"VENV={venv}"], clone)
    pulled = run(["dvc", "pull", "--allow-missing"], clone)  # the datasets were never pushed
    assert (clone / "results" / "table.csv").read_bytes() == pipeline.runs["B"]["table"], pulled.stdout
    assert not (clone / "data" / "atustc" / "index.csv").exists()
    # The clone builds its own datasets (here the generator's); they match dvc.lock, so DVC
    # reruns nothing after them.
    repro = run(["dvc", "repro"], clone)
    ran = set(re.findall(r"Running stage '([^']+)'", repro.stdout))
    assert ran == {"data", "benchmark_data@market1501"}, repro.stdout
    assert stale_dvc_stages(run(["dvc", "status"], clone).stdout) == set()
    # DVC wrote the files in its own order (new times): Snakemake accepts them once touched.
    run(["snakemake", "--touch", "--cores", "1"], clone)
    dry = run(["snakemake", "-n"], clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout
    assert stale_dvc_stages(run(["dvc", "status"], clone).stdout) == set()

    # An older run: the clone fetches what its cache lacks (dvc pull), the repository that
    # made the runs has it already (dvc checkout).
    for repo, restore in ((clone, "pull"), (pipeline.work, "checkout")):
        git(repo, "checkout", "-q", pipeline.runs["A"]["rev"])
        run(["dvc", restore], repo)
        assert (repo / "results" / "table.csv").read_bytes() == pipeline.runs["A"]["table"], restore
        assert digest(repo / "models" / "full" / "seed0" / "model.pt") == pipeline.runs["A"]["model"], restore
        assert stale_dvc_stages(run(["dvc", "status"], repo).stdout) == set(), restore
    git(pipeline.work, "checkout", "-q", "-")
    run(["dvc", "checkout"], pipeline.work)
    assert (pipeline.work / "results" / "table.csv").read_bytes() == pipeline.runs["B"]["table"]


@pytest.mark.slow
def test_dvc_push_never_uploads_a_dataset(pipeline, tmp_path):
    """`push: false` on every dataset output (dvc.yaml, data.dvc): `dvc push` to any
    remote uploads the models and results and no dataset."""
    work = pipeline.work
    shared = tmp_path / "shared"
    run(["dvc", "remote", "add", "--local", "shared", str(shared)], work)
    run(["dvc", "push", "-r", "shared"], work)
    pushed = {path.name for path in shared.rglob("*") if path.is_file()}
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    hashes = {stage: {out["path"]: out["md5"] for out in entry.get("outs", [])}
              for stage, entry in lock["stages"].items()}
    cache = work / ".dvc" / "cache" / "files" / "md5"

    def objects(md5: str) -> set[str]:
        """The names of an output's objects in a remote: its own, and a folder's files'."""
        names = {md5[2:]}
        if md5.endswith(".dir"):
            names |= {entry["md5"][2:] for entry in json.loads((cache / md5[:2] / md5[2:]).read_text())}
        return names

    assert objects(hashes["train@full-0"]["models/full/seed0/model.pt"]) <= pushed
    assert objects(hashes["galleries@full"]["results/galleries/full"]) <= pushed
    for stage in ("data", "benchmark_data@market1501"):
        for path, md5 in hashes[stage].items():
            assert not objects(md5) & pushed, path


@pytest.mark.slow
def test_a_partial_run_records_only_its_own_stages(pipeline):
    """`snakemake <one model>` records that training (and what it found current upstream),
    and leaves the stages after it to `dvc status`."""
    work = pipeline.work
    write_params(work, lambda params: params["variants"]["baseline"].update(train={"iters_per_epoch": 2}))
    built = run(["snakemake", "--cores", "2", "models/baseline/seed0/model.pt"], work)
    assert "left as they were" in built.stderr, built.stderr[-2000:]
    status = run(["dvc", "status"], work)
    assert stale_dvc_stages(status.stdout) == {"evaluate@baseline-0", "curves@baseline", "galleries@baseline",
                                               "figures"}, status.stdout


# ---- the hook's decisions, without a pipeline ----------------------------------------
def test_covered_needs_every_file_of_a_folder_or_the_folder_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    for name in ("a.json", "b.json"):
        (tmp_path / "run" / name).write_text("{}")
    assert covered("run", {"run/a.json", "run/b.json"})
    assert not covered("run", {"run/a.json"})  # b.json: not built by this run
    assert covered("run/a.json", {"run"}) and covered("run", {"run"})
    assert not covered("missing.json", {"missing.json"})


def test_no_record_inside_dvc_repro_or_with_other_settings(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    plain = SimpleNamespace(config_settings=SimpleNamespace(config={}, configfiles=[]))
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert skip_reason(plain, tmp_path) is None
    overridden = SimpleNamespace(config_settings=SimpleNamespace(config={"seeds": [3]}, configfiles=[]))
    assert "params.yaml" in skip_reason(overridden, tmp_path)
    preset = SimpleNamespace(config_settings=SimpleNamespace(config={}, configfiles=[Path("presets/paper.yaml")]))
    assert "--configfile" in skip_reason(preset, tmp_path)
    assert "not a DVC repository" in skip_reason(plain, tmp_path / "elsewhere")
    monkeypatch.setenv("DVC_STAGE", "train@full-0")
    assert skip_reason(plain, tmp_path) == ""  # DVC writes its own lock: silently


def test_a_dry_run_leaves_dvc_alone(tmp_path):
    """Snakemake calls no onsuccess handler for -n: no dvc.lock, and no dvc import."""
    work = copy_tracked_files(tmp_path / "repo")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    dry = run(["snakemake", "-n"], work)
    assert "dvc.lock" not in dry.stdout + dry.stderr and not (work / "dvc.lock").exists()
