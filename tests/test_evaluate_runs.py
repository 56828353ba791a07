"""One evaluation process per run: `atreid evaluate` with several --benchmark loads the model
once and writes, per benchmark, the same metrics file a single-benchmark call writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atreid.cli import main
from atreid.config import load_params, resolve_variant
from tests.conftest import REPO, settings_file

BENCHMARKS = ("market1501", "ltcc")
SETTINGS = {"batch_size": 32, "flip": False, "chunk_size": 64, "device": "cpu"}


def cli(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny random model (models/full/seed0/model.pt) and two benchmark miniatures."""
    from atreid.data.benchmarks import get_benchmark
    from atreid.data.synthetic.miniatures import generate_miniature
    from atreid.engine.checkpoint import model_from_settings, save_trained_model
    from atreid.io import atomic_write_csv

    root = tmp_path_factory.mktemp("evaluate")
    for name in BENCHMARKS:
        images = root / "data" / name / "images"
        generate_miniature(get_benchmark(name), images, seed=0, image_height=64, image_width=32)
        index, _, _ = get_benchmark(name).build_index(images)
        atomic_write_csv(root / "data" / name / "index.csv", index)
    settings = resolve_variant(load_params(REPO / "params.yaml"), "full", 0)
    settings["model"].update({"image_size": [64, 32], "pretrained": "none"})
    labels = {"persons": [1, 2, 3], "outfits": [[1, 1], [2, 1], [3, 1]], "outfit_to_person": [0, 1, 2]}
    torch.manual_seed(0)
    model = model_from_settings(settings, 3, 3)
    save_trained_model(root / "models" / "full" / "seed0" / "model.pt", model=model, settings=settings,
                       labels=labels, epoch=1)
    return root


def evaluate(project: Path, *args: object) -> int:
    return cli("evaluate", "--model", project / "models" / "full" / "seed0" / "model.pt",
               "--data-dir", project / "data", "--settings", settings_file(project / "eval.json", SETTINGS), *args)


def test_one_process_writes_what_single_benchmark_calls_write(project, caplog):
    single = project / "single"
    for name in BENCHMARKS:
        assert evaluate(project, "--benchmark", name, "--cache-dir", single / "cache",
                        "--out", single / f"{name}.json") == 0
    run_dir = project / "results" / "metrics" / "full" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "notes.txt").write_text("not ours")  # a user's file: left alone
    (run_dir / ".ltcc.json.abcdefgh.tmp").write_text("{")  # what a killed earlier run left: removed
    caplog.set_level("INFO")
    args = [a for name in BENCHMARKS for a in ("--benchmark", name)]
    assert evaluate(project, *args, "--cache-dir", project / "cache", "--out-dir", run_dir) == 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["ltcc.json", "ltcc.outcomes.npz", "market1501.json",
                                                         "market1501.outcomes.npz", "notes.txt"]
    for name in BENCHMARKS:
        together = json.loads((run_dir / f"{name}.json").read_text())
        alone = json.loads((single / f"{name}.json").read_text())
        assert together == alone, name
        assert together["benchmark"] == name and together["settings"]["seed"] == 0
    # The same feature cache entries (one per benchmark's image list).
    assert sorted(p.name for p in (project / "cache").glob("*.pt")) == sorted(
        p.name for p in (single / "cache").glob("*.pt"))
    assert len(list((project / "cache").glob("*.pt"))) == len(BENCHMARKS)
    progress = [r.getMessage() for r in caplog.records if r.name == "atreid.evaluate"]
    assert [m.split()[0] for m in progress] == ["[1/2]", "[2/2]"], progress


def test_the_model_is_loaded_once(project, monkeypatch, tmp_path):
    import atreid.eval.runner as runner

    loads = []
    original = runner.load_trained_model

    def counting(*args, **kwargs):
        loads.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "load_trained_model", counting)
    outs = [a for name in BENCHMARKS for a in ("--benchmark", name, "--out", tmp_path / f"{name}.json")]
    assert evaluate(project, *outs) == 0
    assert len(loads) == 1 and all((tmp_path / f"{name}.json").is_file() for name in BENCHMARKS)


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "ltcc", "--benchmark", "ltcc", "--out-dir", "x"], "given twice"),
    (["--benchmark", "ltcc", "--benchmark", "prcc", "--out", "a.json"], "one --out per --benchmark"),
    (["--benchmark", "ltcc", "--benchmark", "prcc", "--out", "a.json", "--out", "a.json"], "the same"),
    (["--benchmark", "ltcc"], "either --out"),
    (["--benchmark", "ltcc", "--out", "a.json", "--out-dir", "x"], "either --out"),
    (["--benchmark", "ltcc", "--benchmark", "nope", "--out-dir", "x"], "unknown benchmark 'nope'"),
])
def test_bad_output_lists_are_one_line_and_write_nothing(project, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert evaluate(project, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert list(tmp_path.iterdir()) == []


def _second_run(project: Path) -> Path:
    """Evaluate both models: full/seed0 (the fixture's) and a differently initialised baseline/seed0."""
    from atreid.engine.checkpoint import model_from_settings, save_trained_model

    metrics = project / "compare" / "metrics"
    if metrics.is_dir():
        return metrics
    settings = resolve_variant(load_params(REPO / "params.yaml"), "baseline", 0)
    settings["model"].update({"image_size": [64, 32], "pretrained": "none"})
    labels = {"persons": [1, 2, 3], "outfits": [[1, 1], [2, 1], [3, 1]], "outfit_to_person": [0, 1, 2]}
    torch.manual_seed(1)
    save_trained_model(project / "models" / "baseline" / "seed0" / "model.pt",
                       model=model_from_settings(settings, 3, 3), settings=settings, labels=labels, epoch=1)
    for variant in ("full", "baseline"):
        assert cli("evaluate", "--model", project / "models" / variant / "seed0" / "model.pt",
                   *[a for name in BENCHMARKS for a in ("--benchmark", name)], "--data-dir", project / "data",
                   "--settings", settings_file(project / "eval.json", SETTINGS), "--cache-dir", project / "cache",  # full: shared with the test above
                   "--out-dir", metrics / variant / "seed0") == 0
    return metrics


def test_every_table_number_is_recomputed_from_the_outcomes(project):
    import pandas as pd

    from atreid.eval.outcomes import check_summary, outcomes_path, read_outcomes, summary_from_outcomes
    from atreid.report.table import build_table

    metrics_dir = _second_run(project)
    files = sorted(metrics_dir.glob("*/seed0/*.json"))
    assert len(files) == 2 * len(BENCHMARKS)
    recomputed_dir = project / "compare" / "recomputed"
    for path in files:
        metrics = json.loads(path.read_text())
        outcomes = read_outcomes(outcomes_path(path))
        assert check_summary(metrics, outcomes) == [], path
        metrics["summary"] = summary_from_outcomes(outcomes)
        metrics["chance_summary"] = summary_from_outcomes(outcomes, chance=True)
        copy = recomputed_dir / path.relative_to(metrics_dir)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(json.dumps(metrics))
    pd.testing.assert_frame_equal(build_table(files), build_table(sorted(recomputed_dir.glob("*/seed0/*.json"))))


def test_table_intervals_and_markdown(project, tmp_path):
    metrics_dir = _second_run(project)
    files = sorted(metrics_dir.glob("*/seed0/*.json"))
    out = tmp_path / "table.csv"
    assert cli("table", *files, "--intervals", "--resamples", "200", "--out", out, "--markdown",
               tmp_path / "table.md") == 0
    import pandas as pd

    table = pd.read_csv(out)
    for column in ("market1501:R1", "market1501:mAP", "ltcc:R1", "ltcc:mAP"):
        for _, row in table[table["variant"] != "chance"].iterrows():
            assert row[f"{column}:lo"] <= row[f"{column}:hi"], (column, row["variant"])
            assert 0 <= row[f"{column}:lo"] and row[f"{column}:hi"] <= 100
        # the columns sit beside their mean and std
        columns = list(table.columns)
        assert columns[columns.index(column) + 1:columns.index(column) + 4] == [f"{column}:std", f"{column}:lo",
                                                                                f"{column}:hi"]
    again = tmp_path / "again.csv"
    assert cli("table", *files, "--intervals", "--resamples", "200", "--out", again, "--markdown",
               tmp_path / "again.md") == 0
    assert again.read_bytes() == out.read_bytes()  # seeded: the same intervals every time
    markdown = (tmp_path / "table.md").read_text()
    row = table[table["variant"] == "full"].iloc[0]
    assert f"{row['ltcc:R1']:.2f} [{row['ltcc:R1:lo']:.2f}, {row['ltcc:R1:hi']:.2f}] ± 0.00" in markdown


def test_compare_pairs_runs_and_refuses_other_queries(project, tmp_path, capsys):
    import shutil


    from atreid.eval.outcomes import read_outcomes, write_outcomes, Outcomes, queries_fingerprint

    metrics_dir = _second_run(project)
    base, full = metrics_dir / "baseline" / "seed0", metrics_dir / "full" / "seed0"
    assert cli("compare", base, full, "--resamples", "200", "--out", tmp_path / "comparison.md") == 0
    text = (tmp_path / "comparison.md").read_text()
    assert "## full (seed0) vs baseline (seed0)" in text
    assert "| market1501 | market1501 |" in text and "| ltcc | ltcc |" in text
    # A run scored on other queries (one query fewer) cannot be paired.
    other = tmp_path / "other" / "seed0"
    shutil.copytree(full, other)
    outcomes = read_outcomes(other / "ltcc.outcomes.npz")
    arrays = {name: values[1:] for name, values in outcomes.arrays.items()}
    meta = dict(outcomes.meta, queries_sha256=queries_fingerprint(outcomes.meta["units"], arrays))
    write_outcomes(other / "ltcc.outcomes.npz", Outcomes(meta, arrays))
    capsys.readouterr()
    assert cli("compare", base, other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot pair" in err[0] and "different queries" in err[0], err
    # ... nor one whose metrics name another data source.
    shutil.copy(full / "ltcc.outcomes.npz", other / "ltcc.outcomes.npz")
    metrics = json.loads((other / "ltcc.json").read_text())
    metrics["provenance"]["data"] = {"source": "LTCC.zip", "sha256": "0" * 64}
    (other / "ltcc.json").write_text(json.dumps(metrics))
    assert cli("compare", base, other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different data sources" in err[0], err
