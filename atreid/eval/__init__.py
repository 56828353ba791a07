"""Evaluation: pure retrieval metrics (:mod:`.metrics`), trials (:mod:`.trials`), scoring of a
benchmark's protocols (:mod:`.scoring`, definitions in :mod:`atreid.data.protocols`) and the runner.

The names below are loaded on first use, so that importing a torch-free submodule (such
as :mod:`.rerank_options`, read by the workflow at parse time) does not import torch.
"""

__all__ = ["Labels", "RemovalRule", "RetrievalResult", "cosine_distance", "evaluate_distmat", "evaluate_retrieval"]


def __getattr__(name: str):
    if name in __all__:
        # start-up: torch loaded only when this runs
        from atreid.eval import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'atreid.eval' has no attribute {name!r}")
