"""atreid.workflow's plan without Snakemake: runs, files, each job's settings and their files.

rules/common.smk only binds these functions to the run's config; the Snakemake side of a
settings change (which jobs `snakemake -n` reruns) is tested end to end in
tests/test_workflow_e2e.py.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from atreid import workflow as plan
from atreid.config import deep_merge, load_params, schema_defaults, validate_params
from atreid.io import settings_sha256
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")


def params(**overrides) -> dict:
    """params.yaml with ``overrides`` (nested dicts) deep-merged and validated again."""
    return validate_params(deep_merge(load_params(REPO / "params.yaml"), overrides))


def test_runs_of_trained_and_imported_variants() -> None:
    config = params(seeds=[3, 1], variants={"ref": {"ncls": 6, "said": True, "moae": True, "hdw": True,
                                                    "reference_checkpoint": "w/epoch_best.t"}})
    assert plan.imported_variants(config) == ["ref"]
    assert "ref" not in plan.trained_variants(config) and "full" in plan.trained_variants(config)
    assert plan.runs_of(config, "full") == ["seed3", "seed1"] and plan.first_run(config, "full") == "seed3"
    assert plan.runs_of(config, "ref") == ["imported"]
    assert plan.all_runs(config) == ["imported", "seed1", "seed3"]
    assert plan.first_seed(config) == 3


def test_comparison_sides_put_the_reference_first_with_all_its_seeds() -> None:
    config = params(seeds=[0, 1])
    sides = plan.comparison_sides(config)
    assert sides[0] == "results/metrics/baseline/seed0,results/metrics/baseline/seed1"
    assert len(sides) == len(plan.variants(config)) and "results/metrics/full/seed0,results/metrics/full/seed1" in sides
    no_baseline = validate_params({**load_params(REPO / "params.yaml"),
                                   "variants": {"b": {"ncls": 6, "said": True, "moae": False, "hdw": False},
                                                "a": {"ncls": 6, "said": True, "moae": True, "hdw": True}}})
    # no baseline: the plan's first variant (sorted by name) is the reference
    assert plan.comparison_sides({**no_baseline, "seeds": [0]}) == ["results/metrics/a/seed0", "results/metrics/b/seed0"]


def test_metrics_files_follow_runs_and_benchmarks() -> None:
    config = params(seeds=[0, 1], eval={"benchmarks": ["atustc", "prcc"]})
    assert plan.run_metrics(config, "full", "seed1") == ["results/metrics/full/seed1/atustc.json",
                                                        "results/metrics/full/seed1/prcc.json"]
    assert len(plan.all_metrics(config)) == len(plan.variants(config)) * 2 * 2
    assert plan.first_run_metrics(config, "prcc") == [f"results/metrics/{v}/seed0/prcc.json"
                                                      for v in plan.variants(config)]


def test_training_data_follows_train_on() -> None:
    atustc = plan.training_data(PARAMS)
    assert atustc.index == "data/atustc/train_sampled.csv" and atustc.images_root == "data/atustc/images/AT-USTC"
    prcc = plan.training_data(params(data={"dir": "d", "train_on": "prcc"}))
    assert (prcc.index, prcc.labels, prcc.images_root) == ("d/prcc/train_labelled.csv", "d/prcc/labels.json",
                                                           "d/prcc/images")
    assert plan.data_paths(params(data={"dir": "d"})).verification == "d/atustc/verification.json"


def test_one_of_matches_exactly_the_names() -> None:
    import re

    pattern = plan.one_of(["seed1", "a.b"])
    assert re.fullmatch(pattern, "a.b") and not re.fullmatch(pattern, "axb") and not re.fullmatch(pattern, "seed")
    assert re.fullmatch(plan.one_of([]), "") is None


def test_training_threads_fixed_or_the_cores() -> None:
    every_core = params(train={"cpu_threads": 0})
    assert plan.training_threads(every_core, "full", cores=1) == 1
    assert plan.training_threads(every_core, "full", cores=10_000) == (os.cpu_count() or 1)
    fixed = params(train={"cpu_threads": 3})
    assert plan.training_threads(fixed, "full", cores=1) == 3  # fixed: independent of the cores given

    def no_cores() -> int:  # Snakemake's workflow.cores when a run sets no --cores (profiles/slurm)
        raise RuntimeError("Workflow requires a total number of cores to be defined")

    assert plan.training_threads(fixed, "full", cores=no_cores) == 3  # never asked for
    assert plan.training_threads(every_core, "full", cores=lambda: 1) == 1
    with pytest.raises(RuntimeError):
        plan.training_threads(every_core, "full", cores=no_cores)
    ddp = params(train={"cpu_threads": 1, "devices": 2})
    assert plan.training_threads(ddp, "full", cores=8) == 2 and plan.training_devices(ddp, "full", 0) == 2


def test_each_jobs_settings_depend_on_its_own_part_of_params() -> None:
    """Which settings a job receives decides what a change reruns: a variant's train
    setting changes only its runs' settings; an eval setting only the evaluations'."""
    base = params()
    other_variant = params(variants={"full": {"train": {"epochs": 99}}})
    other_eval = params(eval={"batch_size": 7})
    for variant in plan.trained_variants(base):
        for seed in base["seeds"]:
            same = plan.train_settings(base, variant, seed) == plan.train_settings(other_variant, variant, seed)
            assert same == (variant != "full")
            assert plan.train_settings(base, variant, seed) == plan.train_settings(other_eval, variant, seed)
    assert plan.eval_settings(base) == plan.eval_settings(other_variant)
    assert plan.eval_settings(other_eval)["batch_size"] == 7 and plan.eval_settings(base)["batch_size"] != 7
    # The seed is part of a run's settings; not of an import's.
    assert plan.train_settings(base, "full", 0)["seed"] == 0 and plan.train_settings(base, "full", 1)["seed"] == 1
    ref = params(variants={"ref": {"ncls": 6, "said": True, "moae": True, "hdw": True,
                                   "reference_checkpoint": "w.t"}})
    assert "seed" not in plan.import_settings(ref, "ref") and "train" not in plan.import_settings(ref, "ref")
    assert plan.import_settings(ref, "ref") == plan.import_settings(deep_merge(ref, {"seeds": [5]}), "ref")
    assert plan.pretrain_settings(base) == {"arch": base["model"]["arch"], "image_size": base["model"]["image_size"],
                                            "pretrain": base["pretrain"]}


def test_eval_settings_leave_out_what_is_not_the_jobs() -> None:
    settings = plan.eval_settings(PARAMS)
    assert not {"benchmarks", "paper_results", "rerank", "compile"} & set(settings)
    on = params(eval={"rerank": True, "compile": True})
    assert plan.eval_settings(on)["rerank"] == {"enabled": True, "k1": 20, "k2": 6, "lambda": 0.3}
    assert plan.eval_settings(on)["compile"] is True
    assert "rerank" not in plan.eval_settings(on, rerank=False)  # the galleries never re-rank


def test_benchmark_sources_take_the_schemas_defaults() -> None:
    config = params(data={"benchmarks": {"prcc": {"source": "/x/prcc.zip", "expected_counts": "official"}}})
    sources = plan.benchmark_sources(config, ["prcc", "ltcc"])
    assert sources["ltcc"] == schema_defaults("data", "benchmarks", "ltcc") == {
        "source": "synthetic", "sha256": None, "expected_counts": "synthetic", "count_differences": "error"}
    assert sources["prcc"]["source"] == "/x/prcc.zip" and sources["prcc"]["count_differences"] == "error"
    source, renderer = plan.benchmark_prepare_settings(config, sources["ltcc"])
    assert source == {"source": "synthetic", "sha256": None} and set(renderer) == {
        "seed", "image_height", "image_width", "jpeg_quality"}
    assert plan.benchmark_prepare_settings(config, sources["prcc"])[1] == {}


def test_write_settings_is_content_addressed_and_never_rewritten(tmp_path: Path) -> None:
    settings = plan.train_settings(PARAMS, "full", 0)
    path = Path(plan.write_settings("train/full/seed0", settings, folder=tmp_path))
    assert path.parent == tmp_path / "train" / "full"
    assert path.name == f"seed0.{settings_sha256(settings)[:12]}.json"
    assert json.loads(path.read_text()) == settings  # what the job reads is what was resolved
    # The same content again: the same file, untouched (its time does not move).
    os.utime(path, (1_000_000, 1_000_000))
    assert plan.write_settings("train/full/seed0", dict(reversed(list(settings.items()))), folder=tmp_path) == \
        path.as_posix()
    assert path.stat().st_mtime == 1_000_000
    # Other content: another file; the first one stays as it was.
    changed = plan.write_settings("train/full/seed0", {**settings, "seed": 1}, folder=tmp_path)
    assert changed != path.as_posix() and path.stat().st_mtime == 1_000_000
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, Path(changed).name])


def test_write_settings_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = Path(plan.write_settings("evaluate", {"batch_size": 1}, folder=tmp_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_settings_file_reaches_the_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every step reads --settings FILE; a missing or malformed file is one line naming it."""
    from atreid.cli import main

    missing = tmp_path / "nope.json"
    assert main(["pretrain-backbone", "--settings", str(missing), "--out", str(tmp_path / "b.pth"),
                 "--history", str(tmp_path / "h.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "no such settings file" in err[0]
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert main(["pretrain-backbone", "--settings", str(listed), "--out", str(tmp_path / "b.pth"),
                 "--history", str(tmp_path / "h.csv")]) == 2
    assert f"{listed}: expected a JSON object" in capsys.readouterr().err
