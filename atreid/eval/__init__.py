"""Evaluation: pure retrieval metrics (:mod:`.metrics`) and protocols as data (:mod:`.protocols`)."""

from atreid.eval.metrics import (
    Labels,
    RemovalRule,
    RetrievalResult,
    cosine_distance,
    evaluate_distmat,
    evaluate_retrieval,
)

__all__ = ["Labels", "RemovalRule", "RetrievalResult", "cosine_distance", "evaluate_distmat", "evaluate_retrieval"]
