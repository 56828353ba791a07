"""End to end: the whole workflow through Snakemake and DVC on the smallest configuration.

The session's tiny pipeline (tests/conftest.py `tiny_pipeline`: `snakemake --cores 2`
in a copy of the repository with a tiny params.yaml, variants full and baseline) is
inspected where it was built, then changed in a copy:
1. it built everything (table, plots, galleries); the table has a row per variant with
   every scenario filled; `snakemake --report` writes the HTML report;
2. a second `snakemake -n` has nothing to do;
3. `dvc commit` records the run; `dvc status` is clean;
4. a change to one variant's setting makes `snakemake -n` list exactly that variant's
   training and evaluation (and the table), and `dvc status` exactly its training stage
   (that `dvc repro` then reruns exactly those stages: tests/test_dvc_sync.py);
5. (the pretraining stage is part of the first run: every run starts from its file)
6. adding a seed to `seeds` makes `snakemake -n` list one training and one evaluation job
   per variant for the new seed only, and `dvc status` only the new seed's stages; after
   the run the table holds the mean ± std over the two runs (n = 2);
7. changing a pretraining setting makes the pretraining and every run after it out of date.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from atreid.constants import SCENARIOS
from tests.e2e import copy_pipeline, jobs_of_dry_run, run, stale_dvc_stages


@pytest.fixture(scope="module")
def workdir(tiny_pipeline, tmp_path_factory) -> Path:
    return copy_pipeline(tiny_pipeline.work, tmp_path_factory.mktemp("e2e") / "repo")


@pytest.mark.slow
def test_the_whole_chain_built_table_figures_and_search_page(tiny_pipeline):
    """The default target (table, plots, galleries) as `snakemake --cores 2` left it."""
    workdir = tiny_pipeline.work  # read-only
    table = pd.read_csv(workdir / "results" / "table.csv")
    assert sorted(table["variant"][:-1]) == ["baseline", "full"] and table["variant"].iloc[-1] == "chance"
    chance = table.iloc[-1]  # what a random ranking of the same lists scores
    for column in ("Any-Time_R1", "DT-ST_R1", "AD-LT_mAP", "market1501:R1"):
        assert 0 < chance[column] < 50, column
    for column in ("Any-Time_R1", "Any-Time_mAP", "DT-ST_R1", "DT-LT_R1", "NT-ST_R1", "NT-LT_R1", "AD-ST_R1",
                   "AD-LT_R1"):
        assert table[column].notna().all() and ((table[column] >= 0) & (table[column] <= 100)).all()
    assert table["market1501:R1"].notna().all()
    assert table["synthetic"].all()
    assert table["n"].tolist() == [1, 1, 1] and (table["Any-Time_R1:std"] == 0.0).all()  # one run each
    assert (workdir / "results" / "table.md").is_file()
    # Every run started from the pretrain_backbone stage's weights (params.yaml: synthetic).
    assert (workdir / "models" / "pretrained" / "backbone.pth").is_file()
    assert len(pd.read_csv(workdir / "models" / "pretrained" / "history.csv")) == 1
    for variant in ("full", "baseline"):  # one evaluation process per run wrote every benchmark's file
        assert sorted(p.name for p in (workdir / "results" / "metrics" / variant / "seed0").iterdir()) == [
            "atustc.json", "atustc.outcomes.npz", "market1501.json", "market1501.outcomes.npz"]
        assert (workdir / "models" / variant / "seed0" / "model.pt").is_file()
        train_log = (workdir / "logs" / "train" / variant / "seed0.log").read_text()
        assert "pretrained weights models/pretrained/backbone.pth" in train_log, train_log
        log = (workdir / "logs" / "evaluate" / variant / "seed0.log").read_text()
        assert "[1/2]" in log and "[2/2]" in log, log
    for figure in ("plots/cmc_atustc.png", "plots/comparison.png", "plots/training_full.png",
                   "galleries/full/AD-LT.png", "galleries/baseline/DT-ST.png", "search/search.png"):
        assert (workdir / "results" / figure).read_bytes().startswith(b"\x89PNG"), figure
    # make run leaves a ready search page: queries of the query split, one per person
    search = json.loads((workdir / "results" / "search" / "search.json").read_text())
    persons = [q["labels"]["person"] for q in search["queries"]]
    assert len(search["queries"]) == 4 and len(set(persons)) == 4, persons
    assert "<html" in (workdir / "results" / "search" / "index.html").read_text()


@pytest.mark.slow
def test_report_then_only_the_changed_variant_is_out_of_date(workdir):
    run(["snakemake", "--report", "results/report.html"], workdir)
    assert "comparison.png" in (workdir / "results" / "report.html").read_text(errors="replace")

    # A second run has nothing to do.
    dry = run(["snakemake", "-n"], workdir)
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # Record the run with DVC: everything is up to date.
    # --no-relink keeps the files (and their mtimes) as Snakemake wrote them.
    run(["dvc", "commit", "-f", "-q", "--no-relink"], workdir)
    status = run(["dvc", "status", "dvc.yaml"], workdir)
    assert stale_dvc_stages(status.stdout) == set(), status.stdout

    # Change one setting of one variant.
    before = (workdir / "params.yaml").read_text()
    params = yaml.safe_load(before)
    params["variants"]["full"]["train"] = {"iters_per_epoch": 4}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    dry = run(["snakemake", "-n"], workdir)
    assert jobs_of_dry_run(dry.stdout) == {
        "train_model": 1, "evaluate_run": 1, "make_table": 1, "plot_training": 1, "cmc_table": 1,
        "plot_galleries": 1, "plot_cmc": 1, "plot_comparison": 1, "search_page": 1, "compare_variants": 1,
        "plot_attention": 1, "all": 1}
    assert "models/full/seed0/model.pt" in dry.stdout and "models/baseline/seed0/model.pt" not in dry.stdout

    status = run(["dvc", "status", "dvc.yaml"], workdir)
    assert stale_dvc_stages(status.stdout) == {"train@full-0"}, status.stdout

    # The setting back: the run is current again, for Snakemake and for DVC.
    (workdir / "params.yaml").write_text(before)
    dry = run(["snakemake", "-n"], workdir)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert stale_dvc_stages(run(["dvc", "status", "dvc.yaml"], workdir).stdout) == set()


@pytest.mark.slow
def test_an_eval_setting_reruns_the_evaluations_and_no_training(workdir):
    """After the test before (all up to date). The evaluation jobs read their settings from
    one file (settings/evaluate.<digest>.json) that the change replaces by another."""
    before = (workdir / "params.yaml").read_text()
    params = yaml.safe_load(before)
    params["eval"]["batch_size"] = params["eval"]["batch_size"] + 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    dry = run(["snakemake", "-n", "-p"], workdir)
    jobs = jobs_of_dry_run(dry.stdout)
    assert jobs["evaluate_run"] == 2 and jobs["plot_galleries"] == 2 and jobs["make_table"] == 1, dry.stdout
    assert not {"train_model", "pretrain_backbone", "search_page"} & set(jobs), dry.stdout
    evaluate = next(line for line in dry.stdout.splitlines() if "atreid evaluate " in line)
    settings = evaluate.split("--settings ")[1].split()[0]
    assert settings.startswith("settings/evaluate.")
    assert json.loads((workdir / settings).read_text())["batch_size"] == params["eval"]["batch_size"]

    (workdir / "params.yaml").write_text(before)
    dry = run(["snakemake", "-n"], workdir)
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_adding_a_seed_runs_only_the_new_seeds_jobs(workdir):
    """After the test before (all up to date): a second seed adds its own runs only."""
    dry = run(["snakemake", "-n"], workdir)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    dry = run(["snakemake", "-n", "-p"], workdir)
    assert jobs_of_dry_run(dry.stdout) == {"train_model": 2, "evaluate_run": 2, "make_table": 1,
                                           "plot_comparison": 1, "compare_variants": 1, "all": 1}, dry.stdout
    outputs = " ".join(line for line in dry.stdout.splitlines() if line.strip().startswith("output:"))
    for variant in ("full", "baseline"):
        assert f"models/{variant}/seed1/model.pt" in outputs and f"results/metrics/{variant}/seed1/" in outputs
        assert f"/{variant}/seed0/" not in outputs  # nothing of the first seed is redone
    status = run(["dvc", "status", "dvc.yaml"], workdir)
    assert stale_dvc_stages(status.stdout) == {"train@full-1", "train@baseline-1", "evaluate@full-1",
                                               "evaluate@baseline-1"}, status.stdout

    run(["snakemake", "--cores", "2"], workdir)
    table = pd.read_csv(workdir / "results" / "table.csv").set_index("variant")
    assert table.loc["full", "n"] == 2 and table.loc["baseline", "n"] == 2 and table.loc["chance", "n"] == 1
    assert table.loc[["full", "baseline"], "Any-Time_R1:std"].notna().all()
    markdown = (workdir / "results" / "table.md").read_text()
    full_line = next(line for line in markdown.splitlines() if line.startswith("| full |"))
    assert full_line.startswith("| full | True | 2 | ") and " ± " in full_line, full_line
    summary = json.loads((workdir / "results" / "summary.json").read_text())
    # The declared DVC metric: Any-Time and the six scenarios, R1/mAP mean and std, per variant.
    assert set(summary) == {"full", "baseline"} and set(summary["full"]) == {"Any-Time", *SCENARIOS}
    assert summary["full"]["Any-Time"]["R1"] == table.loc["full", "Any-Time_R1"]
    assert summary["full"]["Any-Time"]["R1_std"] == table.loc["full", "Any-Time_R1:std"]


@pytest.mark.slow
def test_a_pretraining_change_reruns_it_and_everything_after(workdir):
    """After the second test (two seeds, all up to date)."""
    run(["dvc", "commit", "-f", "-q", "--no-relink"], workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["pretrain"]["iterations"] = 4
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = run(["snakemake", "-n"], workdir)
    assert jobs_of_dry_run(dry.stdout) == {
        "pretrain_backbone": 1, "train_model": 4, "evaluate_run": 4, "make_table": 1, "plot_training": 2,
        "cmc_table": 2, "plot_galleries": 2, "plot_cmc": 1, "plot_comparison": 1, "search_page": 1,
        "compare_variants": 1, "plot_attention": 2, "all": 1}, dry.stdout
    status = run(["dvc", "status", "dvc.yaml"], workdir)
    # DVC sees the pretraining's params; its dependants follow once its output changes.
    assert stale_dvc_stages(status.stdout) == {"pretrain"}, status.stdout
