"""Evaluate one trained model on benchmarks: model loaded once, features once per benchmark,
every protocol, one dict per benchmark.

Benchmarks are chosen by name from :data:`EVALUATORS`; each entry knows which images
its protocols use and how to score them, so adding a benchmark adds an entry here (and
its adapter/protocol data), never a branch elsewhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch

from atreid.constants import SCENARIOS
from atreid.errors import AtreidError
from atreid.eval.cross_dataset import cross_dataset_evaluators
from atreid.engine.device import resolve_device
from atreid.eval.features import cached_features
from atreid.eval.outcomes import ATUSTC_CELLS, OUTCOMES_KEY, OutcomeRecorder
from atreid.provenance import evaluation_provenance

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("atreid.eval")

Evaluator = Callable[..., dict[str, Any]]


def atustc_test_features(model: torch.nn.Module, model_path: Path, data_dir: Path, settings: dict[str, Any],
                         image_size: list[int], device: torch.device, cache_dir: Path | None
                         ) -> tuple[torch.Tensor, "pd.DataFrame", Path]:
    """Features of every AT-USTC test image (flags 2-9), the test index and the image root.

    Shared by the evaluation and the retrieval galleries, so both read the same cache entry.
    """
    from atreid.data.atustc import find_dataset_root, read_index

    images = data_dir / "atustc" / "images"
    root = find_dataset_root(images)
    index = read_index(data_dir / "atustc" / "index.csv")
    test = index[index["flag"] >= 2].reset_index(drop=True)
    features = cached_features(model, model_path, root, test["path"].tolist(), cache_dir=cache_dir,
                               image_size=image_size, batch_size=settings["batch_size"], flip=settings["flip"],
                               device=device, compile=settings.get("compile", False))
    return features, test, root


def _evaluate_atustc(model: torch.nn.Module, model_path: Path, data_dir: Path, settings: dict[str, Any],
                     image_size: list[int], device: torch.device, cache_dir: Path | None) -> dict[str, Any]:
    from atreid.eval.protocols import evaluate_atustc
    from atreid.eval.rerank import RERANK_SUFFIX, rerank_options

    features, test, _ = atustc_test_features(model, model_path, data_dir, settings, image_size, device, cache_dir)
    rerank = rerank_options(settings.get("rerank"))
    recorder = OutcomeRecorder()
    results = evaluate_atustc(features, test, chunk_size=settings["chunk_size"], device=device, rerank=rerank,
                              recorder=recorder)
    summary, chance = {}, {}
    for name in ("Any-Time", *SCENARIOS):
        for metric in ("R1", "mAP"):
            summary[f"{name}_{metric}"] = results[name][metric]
            chance[f"{name}_{metric}"] = results[name]["chance"][metric]
    if rerank is not None:  # `<column>@rr` beside the plain columns (a random ranking's chance is the same)
        for name in ("Any-Time", *SCENARIOS):
            for metric in ("R1", "mAP"):
                summary[f"{name}_{metric}{RERANK_SUFFIX}"] = results[name]["rerank"][metric]
                chance[f"{name}_{metric}{RERANK_SUFFIX}"] = results[name]["rerank"]["chance"][metric]
    synthetic = (data_dir / "atustc" / "images" / "synthetic_counts.json").is_file()
    return {"protocols": results, "summary": summary, "chance_summary": chance, "synthetic": synthetic,
            "num_images": len(test), OUTCOMES_KEY: recorder.table("atustc", ATUSTC_CELLS)}


EVALUATORS: dict[str, Evaluator] = {"atustc": _evaluate_atustc}
# The cross-dataset benchmarks: one generic evaluator per registered benchmark.
EVALUATORS.update(cross_dataset_evaluators())


def _check_names(names: Iterable[str]) -> None:
    unknown = [name for name in names if name not in EVALUATORS]
    if unknown:
        raise AtreidError(f"unknown benchmark {unknown[0]!r} in eval.benchmarks;"
                          f" valid: {', '.join(sorted(EVALUATORS))}")


def evaluate_benchmarks(names: Iterable[str], *, model_path: Path, data_dir: Path, settings: dict[str, Any],
                        cache_dir: Path | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Load ``model_path`` once and score it on each benchmark of ``names`` in turn.

    Yields ``(name, metrics)`` as each benchmark finishes, so a caller can write (and
    free) each result before the next one is computed. Every name is checked before the
    model is loaded. The metrics dict of a benchmark is the same as
    :func:`evaluate_benchmark` returns for it alone.
    """
    from atreid.engine.checkpoint import load_trained_model

    names = list(names)
    _check_names(names)
    device = resolve_device(settings.get("device", "auto"), setting="eval.device")
    model, payload = load_trained_model(model_path, device)
    model_settings = payload["settings"]
    for name in names:
        metrics = EVALUATORS[name](model, model_path, data_dir, settings, model_settings["model"]["image_size"],
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
