"""A table you can trust (issue 23), end to end on the tiny pipeline.

A copy of the session's tiny pipeline (tests/conftest.py: full and baseline, AT-USTC and
Market-1501) whose own `atreid/` is the code that runs (PYTHONPATH), so the tests can edit
it. In order:
1. on a fresh copy with no data/ at all, `snakemake --cores 2 data/atustc/index.csv` ends
   without a traceback and says what it recorded; the whole run left `dvc status` clean;
2. every metrics file and table row says what it came from (synthetic data, the commit,
   the settings, the pretrained file), and table.md says so in plain words;
3. editing MoAE's routing reruns the MoAE variant's training and what follows, not the
   baseline's; `snakemake -n` names the file;
4. a run that leaves that training stale (`--rerun-triggers mtime`) leaves its dvc.lock
   entry stale too: `dvc status` reports it; a normal run then clears it;
5. editing a metric function reruns the evaluations and the table, no training; a
   comment or a docstring reruns nothing;
6. DVC's own verbs on this copy, with no remote configured: metrics, plots, params,
   experiments (run, show, apply, branch).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from atreid.provenance import git_state
from tests.e2e import (PIPELINE_VARIANTS, commit_all, copy_pipeline, copy_tracked_files, jobs_of_dry_run, run,
                       stale_dvc_stages, tiny_params)

VARIANTS = {"full": {"ncls": 6, "said": True, "moae": True, "hdw": True},
            "baseline": {"ncls": 6, "said": False, "moae": False, "hdw": False}}  # the tiny pipeline's
MOAE = "atreid/model/moae.py"
METRICS = "atreid/eval/metrics.py"
MOAE_ROUTING = ("        probs = self.gate_probs(cls).detach()\n", "        probs = self.gate_probs(cls).detach() * 1\n")
CHANCE = ("    return r / n, ", "    r = r + 0\n    return r / n, ")


def in_copy(cmd: list[str], work: Path, check: bool = True):
    """``cmd`` in ``work`` with ``work``'s own atreid package first on the path."""
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(work)
    try:
        return run(cmd, work, check=check)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous


def edit(work: Path, name: str, change: tuple[str, str]) -> None:
    file = work / name
    text = file.read_text()
    assert change[0] in text, change
    file.write_text(text.replace(change[0], change[1], 1))


def git(work: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], work).stdout.strip()


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline, tmp_path_factory) -> SimpleNamespace:
    assert PIPELINE_VARIANTS == VARIANTS
    work = copy_pipeline(tiny_pipeline.work, tmp_path_factory.mktemp("provenance") / "repo")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "run")  # the run, committed: `dvc metrics diff` compares with it
    return SimpleNamespace(work=work, log=tiny_pipeline.log)


@pytest.mark.slow
def test_a_fresh_copy_records_its_runs_without_a_traceback(pipeline, tmp_path):
    fresh = copy_tracked_files(tmp_path / "fresh")
    shutil.rmtree(fresh / "data")  # a fresh clone has no data/ at all
    tiny_params(fresh, VARIANTS, benchmarks=["atustc", "market1501"])
    commit_all(fresh)
    partial = in_copy(["snakemake", "--cores", "2", "data/atustc/index.csv"], fresh)
    for log in (partial.stderr, pipeline.log):
        assert "Traceback" not in log, log[-3000:]
        assert re.search(r"^dvc\.lock: recorded \d+ DVC stage", log, re.M), log[-2000:]
    assert "left as they were" in partial.stderr
    status = in_copy(["dvc", "status"], pipeline.work)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


@pytest.mark.slow
def test_every_number_says_what_it_came_from(pipeline):
    work = pipeline.work
    code = git_state()  # the session pipeline ran this checkout's atreid
    head = code["commit"]
    backbone = hashlib.sha256((work / "models" / "pretrained" / "backbone.pth").read_bytes()).hexdigest()
    for variant in VARIANTS:
        for benchmark in ("atustc", "market1501"):
            metrics = json.loads((work / "results" / "metrics" / variant / "seed0" / f"{benchmark}.json").read_text())
            provenance = metrics["provenance"]
            assert provenance["data"] == {"source": "synthetic", "generator": "atreid 0.1.0"}
            assert provenance["code"] == code
            model = provenance["model"]
            assert model["code"] == code
            assert model["data"]["source"] == "synthetic" and model["pretrained_sha256"] == backbone
            assert len(model["settings_sha256"]) == 64 and "torch" in model["packages"]
    table = pd.read_csv(work / "results" / "table.csv").set_index("variant")
    assert (table.loc[list(VARIANTS), "data_source"] == "synthetic").all()
    assert (table.loc[list(VARIANTS), "commit"] == head[:12] + ("+dirty" if code["dirty"] else "")).all()
    assert (table.loc[list(VARIANTS), "pretrained_sha256"] == backbone[:12]).all()
    assert table.loc["full", "settings_sha256"] != table.loc["baseline", "settings_sha256"]
    markdown = (work / "results" / "table.md").read_text()
    assert "**Synthetic data**: the rows baseline, full come from the embedded synthetic dataset" in markdown
    assert f"- full: commit {table.loc['full', 'commit']}, settings {table.loc['full', 'settings_sha256']}" in markdown


@pytest.mark.slow
def test_an_edit_of_moae_s_routing_reruns_the_moae_variant_only(pipeline):
    work = pipeline.work
    edit(work, MOAE, MOAE_ROUTING)
    dry = in_copy(["snakemake", "-n"], work)
    jobs = jobs_of_dry_run(dry.stdout)
    assert jobs.get("train_model") == 1 and jobs.get("evaluate_run") == 1 and "pretrain_backbone" not in jobs, jobs
    assert "models/full/seed0/model.pt" in dry.stdout and "models/baseline/seed0/model.pt," not in dry.stdout
    assert re.search(r"Params have changed since last execution: .*before: 'atreid/model/moae\.py@[0-9a-f]{16}' "
                     r"now: 'atreid/model/moae\.py@[0-9a-f]{16}'", dry.stdout), dry.stdout
    # DVC sees code per file: both trainings list moae.py (Snakemake decides inside the stage).
    stale = stale_dvc_stages(in_copy(["dvc", "status"], work).stdout)
    assert {"train@full-0", "train@baseline-0"} <= stale


@pytest.mark.slow
def test_a_run_that_leaves_a_training_stale_leaves_its_lock_entry_stale(pipeline):
    work = pipeline.work
    # Snakemake told to judge by file times only: the edited training is not rerun, and the
    # run's dvc.lock recording must not claim it was built from the edited code.
    ran = in_copy(["snakemake", "--cores", "2", "--forcerun", "make_table", "--rerun-triggers", "mtime"], work)
    assert "Traceback" not in ran.stderr
    stale = stale_dvc_stages(in_copy(["dvc", "status"], work).stdout)
    assert {"train@full-0", "evaluate@full-0"} <= stale and "train@baseline-0" not in stale, stale
    before = (work / "models" / "baseline" / "seed0" / "model.pt").stat().st_mtime_ns
    in_copy(["snakemake", "--cores", "2"], work)
    assert (work / "models" / "baseline" / "seed0" / "model.pt").stat().st_mtime_ns == before  # not retrained
    assert "Data and pipelines are up to date" in in_copy(["dvc", "status"], work).stdout


@pytest.mark.slow
def test_metric_code_reruns_the_evaluations_and_comments_rerun_nothing(pipeline):
    work = pipeline.work
    edit(work, METRICS, CHANCE)
    dry = in_copy(["snakemake", "-n"], work)
    jobs = jobs_of_dry_run(dry.stdout)
    assert jobs.get("evaluate_run") == 2 and jobs.get("make_table") == 1, jobs
    assert not {"train_model", "prepare_atustc", "index_atustc", "pretrain_backbone"} & set(jobs), jobs
    assert "atreid/eval/metrics.py@" in dry.stdout
    edit(work, METRICS, (CHANCE[1], CHANCE[0]))  # back: nothing to do
    edit(work, MOAE, ("    def gate_choice(", "    # a comment\n    def gate_choice("))
    edit(work, METRICS, ('"""', '"""A docstring edit. '))
    dry = in_copy(["snakemake", "-n"], work)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout
    git(work, "add", "-A")
    git(work, "commit", "-qm", "edits")


@pytest.mark.slow
def test_dvc_s_own_verbs_work_without_a_remote(pipeline):
    work = pipeline.work
    shown = in_copy(["dvc", "metrics", "show"], work)
    assert "results/summary.json" in shown.stdout and "full.Any-Time.R1" in shown.stdout, shown.stdout
    assert "failed" not in shown.stdout + shown.stderr
    listed = in_copy(["dvc", "metrics", "diff", "--all"], work)
    assert re.search(r"results/summary\.json\s+full\.Any-Time\.R1\s", listed.stdout), listed.stdout
    assert len(listed.stdout.splitlines()) == 1 + 2 * 7 * 4  # a row per number: 2 variants x 7 protocols x 4

    plots = in_copy(["dvc", "plots", "show", "--json"], work)
    assert "WARNING" not in plots.stderr and "error" not in plots.stderr.lower(), plots.stderr
    shown_plots = json.loads(plots.stdout)["data"]
    assert set(shown_plots) == {"models/pretrained/history.csv", "models/full/seed0/history.csv",
                                "models/baseline/seed0/history.csv", "results/plots/cmc_full.csv",
                                "results/plots/cmc_baseline.csv"}, set(shown_plots)
    titles = {name: plot[0]["content"]["title"]["text"] for name, plot in shown_plots.items()}
    assert titles["models/full/seed0/history.csv"] == "Training loss of full, seed 0"
    cmc = shown_plots["results/plots/cmc_full.csv"][0]["content"]
    assert cmc["encoding"]["x"]["field"] == "rank" and '"field": "AD-LT"' in json.dumps(cmc)
    assert '"field": "loss"' in json.dumps(shown_plots["models/full/seed0/history.csv"][0]["content"])

    # An experiment with one documented key changed (no `+`), compared, applied, branched:
    # the example of docs/provenance-dvc.md (an evaluation setting: it reruns the evaluations).
    experiment = in_copy(["dvc", "exp", "run", "-n", "reranked", "-S", "eval.rerank.enabled=true"], work)
    ran = set(re.findall(r"Running stage '([^']+)'", experiment.stdout))
    assert {"evaluate@full-0", "evaluate@baseline-0", "table"} <= ran, experiment.stdout[-2000:]
    assert yaml.safe_load((work / "params.yaml").read_text())["eval"]["rerank"]["enabled"] is True
    diff = in_copy(["dvc", "params", "diff"], work)
    assert re.search(r"params\.yaml\s+eval\.rerank\.enabled\s+false\s+true", diff.stdout, re.I), diff.stdout
    compared = in_copy(["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop",
                        ".*_std|.*-[LS]T\\.|.*mAP|models|results|atreid|Created", "--csv"], work)
    header = compared.stdout.splitlines()[0].split(",")
    assert header[:1] == ["Experiment"] and "full.Any-Time.R1@rr" in header and "eval.rerank.enabled" in header, header
    assert len(header) <= 8, header  # what the README's filter keeps: fits a terminal
    git(work, "checkout", "-q", "--", "params.yaml", "dvc.lock")
    in_copy(["dvc", "checkout", "-q"], work)
    in_copy(["dvc", "exp", "apply", "reranked"], work)
    assert yaml.safe_load((work / "params.yaml").read_text())["eval"]["rerank"]["enabled"] is True
    in_copy(["dvc", "exp", "branch", "reranked", "exp-reranked"], work)
    assert "exp-reranked" in git(work, "branch")


@pytest.mark.slow
def test_make_dag_writes_the_graph_with_snakemake_9(pipeline):
    from tests.conftest import REPO

    venv = REPO / ".venv"
    # -o: the venv's install stamp counts as current (make must not reinstall atreid from this copy).
    made = run(["make", "-o", f"{venv}/.atreid-installed", "dag", f"VENV={venv}"], pipeline.work)
    dot = (pipeline.work / "docs" / "dag.dot").read_text()
    assert dot.startswith("digraph") and "train_model" in dot and "make_table" in dot, dot[:300]
    assert "docs/dag" in made.stdout
