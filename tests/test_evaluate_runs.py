"""One evaluation process per run: `atreid evaluate` with several --benchmark loads the model
once and writes, per benchmark, the same metrics file a single-benchmark call writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atreid.cli import main
from atreid.config import load_params, resolve_variant
from tests.conftest import REPO

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
               "--data-dir", project / "data", "--settings", json.dumps(SETTINGS), *args)


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
    assert sorted(p.name for p in run_dir.iterdir()) == ["ltcc.json", "market1501.json", "notes.txt"]
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
