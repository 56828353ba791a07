"""Evaluate one trained model on benchmarks: model loaded once, features once per benchmark,
every protocol, one dict per benchmark.

A benchmark's module declares its protocols (``protocols`` of its class,
:mod:`atreid.data.protocols`); this module reads its index and images, extracts the
features of every image a protocol may use once (cached per model and image list), and
scores them the way the protocols say (``scoring``: ``"scenarios"`` or ``"trials"``,
:mod:`atreid.eval.scoring`). No benchmark has a branch of its own here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pandas as pd
import torch

from atreid.data.benchmarks import Benchmark, check_benchmark_names, get_benchmark
from atreid.data.benchmarks.files import SYNTHETIC_COUNTS, read_benchmark_index
from atreid.data.protocols import BenchmarkProtocols, protocol_family
from atreid.engine.checkpoint import load_trained_model
from atreid.errors import AtreidError
from atreid.engine.device import resolve_device
from atreid.eval.features import cached_features
from atreid.eval.outcomes import OUTCOMES_KEY, OutcomeRecorder, scenario_cells
from atreid.eval.rerank import rerank_options
from atreid.eval.scoring import evaluate_scenarios, scenario_summary, score_protocols, summary_of
from atreid.eval.trials import candidate_rows
from atreid.provenance import evaluation_provenance


def recorded_family(dataset_dir: Path) -> str | None:
    """The protocol family the index step recorded in ``<dataset_dir>/verification.json``
    (a dataset that chooses one, ``custom``), or None (the benchmark's own protocols)."""
    report = Path(dataset_dir) / "verification.json"
    if not report.is_file():
        return None
    try:
        return json.loads(report.read_text()).get("protocol")
    except (OSError, ValueError) as exc:
        raise AtreidError(f"{report}: unreadable ({exc}); rebuild it (snakemake -R index_benchmark)") from None


def protocols_of(name: str, data_dir: Path) -> BenchmarkProtocols:
    """The protocols benchmark ``name`` is scored with: its module's, or the family its
    index step recorded (``custom``)."""
    family = recorded_family(Path(data_dir) / name)
    return get_benchmark(name).protocols if family is None else protocol_family(family, name)


def test_rows(benchmark: Benchmark, data_dir: Path, spec: BenchmarkProtocols) -> tuple[pd.DataFrame, Path]:
    """Every index row any protocol of ``spec`` may use (sorted by path) and the image root."""
    folder = Path(data_dir) / benchmark.name
    root = benchmark.find_root(folder / "images")
    index = read_benchmark_index(folder / "index.csv")
    missing = spec.columns() - set(index.columns)
    if missing:
        raise AtreidError(f"{folder / 'index.csv'}: columns {sorted(missing)} missing; "
                          f"rebuild it (snakemake -R index_benchmark)")
    rows = candidate_rows(index, spec).reset_index(drop=True)
    if rows.empty:
        raise AtreidError(f"{folder / 'index.csv'}: no query or gallery images; "
                          "check the dataset copy and its verification report")
    return rows, root


def test_features(name: str, model: torch.nn.Module, model_path: Path, data_dir: Path, settings: Mapping[str, Any],
                  image_size: list[int], device: torch.device, cache_dir: Path | None
                  ) -> tuple[torch.Tensor, pd.DataFrame, Path]:
    """Features of every image benchmark ``name``'s protocols may use, those index rows and
    the image root. Shared by the evaluation and the retrieval galleries, so both read the
    same cache entry."""
    rows, root = test_rows(get_benchmark(name), data_dir, protocols_of(name, data_dir))
    features = cached_features(model, model_path, root, rows["path"].tolist(), cache_dir=cache_dir,
                               image_size=image_size, batch_size=settings["batch_size"], flip=settings["flip"],
                               device=device, compile=settings.get("compile", False))
    return features, rows, root


def evaluate_loaded(name: str, model: torch.nn.Module, model_path: Path, data_dir: Path, settings: Mapping[str, Any],
                    image_size: list[int], device: torch.device, cache_dir: Path | None) -> dict[str, Any]:
    """Score a loaded model on benchmark ``name``: ``{"protocols", "summary", "chance_summary",
    "synthetic", "num_images", ...}``."""
    spec = protocols_of(name, data_dir)
    features, rows, _ = test_features(name, model, model_path, data_dir, settings, image_size, device, cache_dir)
    rerank = rerank_options(settings.get("rerank"))
    synthetic = (Path(data_dir) / name / "images" / SYNTHETIC_COUNTS).is_file()
    recorder = OutcomeRecorder()  # every scored query's outcome, for the intervals (atreid.eval.outcomes)
    if spec.scoring == "scenarios":
        results = evaluate_scenarios(features, rows, spec, chunk_size=settings["chunk_size"], device=device,
                                     rerank=rerank, recorder=recorder)
        return {"protocols": results, "summary": scenario_summary(results, spec),
                "chance_summary": scenario_summary(results, spec, chance=True), "synthetic": synthetic,
                "num_images": len(rows),
                OUTCOMES_KEY: recorder.table(name, scenario_cells([p.name for p in spec.protocols]))}
    results = score_protocols(features, rows, spec, chunk_size=settings["chunk_size"], device=device, rerank=rerank,
                              recorder=recorder)
    main = list(spec.combined.get(spec.main, (spec.main,)))
    return {"protocols": results, "summary": summary_of(results, spec),
            "chance_summary": summary_of(results, spec, chance=True), "main_protocol": spec.main,
            "synthetic": synthetic, "num_images": len(rows), OUTCOMES_KEY: recorder.table(name, {"": main})}


def evaluate_benchmarks(names: Iterable[str], *, model_path: Path, data_dir: Path, settings: dict[str, Any],
                        cache_dir: Path | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Load ``model_path`` once and score it on each benchmark of ``names`` in turn.

    Yields ``(name, metrics)`` as each benchmark finishes, so a caller can write (and
    free) each result before the next one is computed. Every name is checked before the
    model is loaded. The metrics dict of a benchmark is the same as
    :func:`evaluate_benchmark` returns for it alone.
    """
    names = list(names)
    check_benchmark_names(names, "eval.benchmarks")
    device = resolve_device(settings.get("device", "auto"))
    model, payload = load_trained_model(model_path, device)
    model_settings = payload["settings"]
    for name in names:
        metrics = evaluate_loaded(name, model, model_path, data_dir, settings, model_settings["model"]["image_size"],
                                  device, cache_dir)
        metrics.update({"benchmark": name, "variant": model_settings["name"], "model": str(model_path),
                        "settings": model_settings, "eval": settings,
                        "provenance": evaluation_provenance(settings, data_folder=data_dir / name,
                                                            model=payload.get("provenance"))})
        yield name, metrics


def evaluate_benchmark(name: str, *, model_path: Path, data_dir: Path, settings: dict[str, Any],
                       cache_dir: Path | None = None) -> dict[str, Any]:
    """Load ``model_path`` and score it on benchmark ``name``; returns a JSON-able dict."""
    [(_, metrics)] = evaluate_benchmarks([name], model_path=model_path, data_dir=data_dir, settings=settings,
                                         cache_dir=cache_dir)
    return metrics
