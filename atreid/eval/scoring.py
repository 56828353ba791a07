"""Scoring a benchmark's protocols on precomputed features (no file I/O here).

Two ways to report, chosen by the benchmark's :class:`~atreid.data.protocols.BenchmarkProtocols`
(``scoring``), with the same per-protocol computation (:func:`evaluate_protocol`):

* ``"scenarios"`` (AT-USTC, :func:`evaluate_scenarios`): each protocol once, Any-Time =
  the plain mean of the six R1 and of the six mAP, and the scenario-agnostic mixed test,
  whose groups average the cases weighted by their valid-query counts;
* ``"trials"`` (the cross-dataset benchmarks, :func:`score_protocols`): each protocol
  over its trials (:mod:`atreid.eval.trials`), per trial and as their mean, plus the
  combinations (e.g. both directions).

Returned dicts give R-k, mAP and mINP in PERCENT (0-100, like the paper tables);
:class:`~atreid.eval.metrics.RetrievalResult` itself holds fractions. A protocol with
no valid query reports ``None`` for its metrics (JSON null), never a made-up 0.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from atreid.constants import MODALITY_CODES
from atreid.data.protocols import BenchmarkProtocols, Protocol, RemovalRule
from atreid.errors import AtreidError
from atreid.eval.metrics import Labels, RetrievalResult, evaluate_reranked, evaluate_retrieval
from atreid.eval.rerank import RERANK_SUFFIX
from atreid.eval.trials import trial_sets

log = logging.getLogger("atreid.eval.scoring")

LABEL_COLUMNS: tuple[str, ...] = ("person", "camera", "modality", "clothes")
REPORTED_RANKS: tuple[int, ...] = (1, 5, 10)


def labels_of(frame: pd.DataFrame, clothes_column: str = "clothes") -> Labels:
    """:class:`~atreid.eval.metrics.Labels` of index rows (modality names -> codes)."""
    def column(values: pd.Series) -> np.ndarray:
        return np.array(values, dtype=np.int64)  # a writable copy (pandas may hand out read-only views)

    return Labels(person=column(frame["person"]), camera=column(frame["camera"]),
                  modality=column(frame["modality"].map(MODALITY_CODES)), clothes=column(frame[clothes_column]))


def check_index(index: pd.DataFrame, spec: BenchmarkProtocols) -> None:
    """Raise :class:`AtreidError` unless ``index`` has the columns and values ``spec`` reads."""
    selected = {c for p in (*spec.protocols, *spec.mixed_cases) for c in (*p.query, *p.gallery)}
    wanted = [*LABEL_COLUMNS, *sorted(selected - set(LABEL_COLUMNS))]
    missing = [c for c in wanted if c not in index.columns]
    if missing:
        raise AtreidError(f"{spec.benchmark} index lacks column(s) {', '.join(missing)}; "
                          f"regenerate it with the data step (columns: {', '.join(wanted)})")
    bad = sorted(set(index["modality"].unique()) - set(MODALITY_CODES))
    if bad:
        raise AtreidError(f"{spec.benchmark} index: unknown modality value(s) {bad}; "
                          f"expected {', '.join(MODALITY_CODES)}")


def evaluate_protocol(features: torch.Tensor, index: pd.DataFrame, protocol: Protocol, *,
                      labels: Labels | None = None, max_rank: int = 20, chunk_size: int = 1024,
                      device: torch.device | str | None = None,
                      rerank: Mapping[str, Any] | None = None) -> RetrievalResult:
    """Score one protocol (every selected row, no trial draw) from ``(N, heads, D)``
    features aligned with ``index`` rows.

    With ``rerank`` (``{"k1", "k2", "lambda"}``, see :func:`atreid.eval.rerank.rerank_options`)
    the ranking uses the k-reciprocal re-ranked distances of the protocol's query and
    gallery lists, with the same removal rule.
    """
    labels = labels_of(index, protocol.clothes_column) if labels is None else labels
    q_rows, g_rows = protocol.rows(index)
    q_feat = features[torch.as_tensor(q_rows, device=features.device), protocol.head]
    g_feat = features[torch.as_tensor(g_rows, device=features.device), protocol.head]
    if rerank is not None:
        return evaluate_reranked(q_feat, g_feat, labels.take(q_rows), labels.take(g_rows), protocol.rule,
                                 k1=rerank["k1"], k2=rerank["k2"], lambda_value=rerank["lambda"],
                                 max_rank=max_rank, chunk_size=chunk_size, device=device)
    return evaluate_retrieval(q_feat, g_feat, labels.take(q_rows), labels.take(g_rows), protocol.rule,
                              max_rank=max_rank, chunk_size=chunk_size, device=device)


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * float(value)


def result_to_dict(result: RetrievalResult) -> dict[str, Any]:
    """JSON-able summary in percent: ``cmc`` (list), ``R1``/``R5``/``R10``, ``mAP``, ``mINP``, counts."""
    cmc = [_percent(v) for v in result.cmc]
    out: dict[str, Any] = {"cmc": cmc}
    for k in REPORTED_RANKS:
        out[f"R{k}"] = cmc[k - 1] if k <= len(cmc) else None
    out.update({"mAP": _percent(result.mAP), "mINP": _percent(result.mINP), "num_valid": int(result.num_valid),
                "num_queries": int(result.num_queries),
                "chance": {"R1": _percent(result.chance_R1), "mAP": _percent(result.chance_mAP)}})
    return out


def weighted_average(results: Sequence[RetrievalResult]) -> RetrievalResult:
    """Pool results by valid-query count (the mixed-test groups)."""
    valid = sum(r.num_valid for r in results)
    queries = sum(r.num_queries for r in results)
    max_rank = len(results[0].cmc)
    if valid == 0:
        nan = math.nan
        return RetrievalResult(np.full(max_rank, nan), nan, nan, 0, queries)
    used = [r for r in results if r.num_valid]
    cmc = sum(r.cmc * r.num_valid for r in used) / valid
    m_ap = sum(r.mAP * r.num_valid for r in used) / valid
    m_inp = sum(r.mINP * r.num_valid for r in used) / valid
    chance_r1 = sum(r.chance_R1 * r.num_valid for r in used) / valid
    chance_ap = sum(r.chance_mAP * r.num_valid for r in used) / valid
    return RetrievalResult(np.asarray(cmc, dtype=np.float64), float(m_ap), float(m_inp), valid, queries,
                           float(chance_r1), float(chance_ap))


def plain_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values, or None if any is missing (Any-Time needs all six)."""
    if any(v is None for v in values):
        return None
    return float(sum(values) / len(values))


# ---- "scenarios": AT-USTC -------------------------------------------------------------------
def evaluate_scenarios(features: torch.Tensor, index: pd.DataFrame, spec: BenchmarkProtocols, *,
                       chunk_size: int = 1024, device: torch.device | str | None = None, max_rank: int = 20,
                       rerank: Mapping[str, Any] | None = None, recorder: Any = None) -> dict[str, Any]:
    """The scenarios of ``spec``, Any-Time and the mixed test, as a JSON-able dict.

    Args:
        features: ``(N, 6, D)`` post-BN head features, row ``i`` of ``index``'s image.
        index: the test rows, with the label columns and every column the protocols
            select on (AT-USTC: ``flag``); row order = feature order.
        spec: the benchmark's protocols (``scoring="scenarios"``).
        chunk_size: queries per chunk (memory bound).
        device: where to compute (None: the features' device).
        max_rank: CMC length (at least 10 for R10).
        rerank: None (plain ranking only) or ``{"k1", "k2", "lambda"}``: every scenario,
            mixed case and group, and Any-Time, also gets ``"rerank"``, the same dict for
            the k-reciprocal re-ranked distances (the plain numbers are unchanged).
        recorder: an :class:`atreid.eval.outcomes.OutcomeRecorder` that keeps the
            scenarios' per-query outcomes (plain and re-ranked), or None.

    Returns:
        ``{scenario: {cmc, R1, R5, R10, mAP, mINP, num_valid, num_queries}, ...,
        "Any-Time": {R1, mAP}, "mixed": {"cases": {name: {...}}, "groups": {name: {...}}}}``
        with metrics in percent.
    """
    features = torch.as_tensor(features)
    if features.ndim != 3 or features.shape[0] != len(index):
        raise ValueError(f"features must be (N={len(index)}, heads, D), got {tuple(features.shape)}")
    check_index(index, spec)
    labels = labels_of(index)
    index = index.reset_index(drop=True)
    scenarios = spec.protocols

    def run(protocol: Protocol, options: Mapping[str, Any] | None = None) -> RetrievalResult:
        return evaluate_protocol(features, index, protocol, labels=labels, max_rank=max_rank,
                                 chunk_size=chunk_size, device=device, rerank=options)

    def any_time(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        out = {metric: plain_mean([results[p.name][metric] for p in scenarios]) for metric in ("R1", "mAP")}
        out["chance"] = {metric: plain_mean([results[p.name]["chance"][metric] for p in scenarios])
                         for metric in ("R1", "mAP")}
        return out

    out: dict[str, Any] = {}
    for protocol in scenarios:
        result = run(protocol)
        out[protocol.name] = result_to_dict(result)
        if recorder is not None:
            recorder.add(protocol.name, result)
    out["Any-Time"] = any_time(out)
    cases = {protocol.name: run(protocol) for protocol in spec.mixed_cases}
    out["mixed"] = {
        "cases": {name: result_to_dict(result) for name, result in cases.items()},
        "groups": {group: result_to_dict(weighted_average([cases[name] for name in names]))
                   for group, names in spec.mixed_groups.items()},
    }
    if rerank is not None:
        for protocol in scenarios:
            result = run(protocol, rerank)
            out[protocol.name]["rerank"] = result_to_dict(result)
            if recorder is not None:
                recorder.add(protocol.name, result, ranking="rerank")
        out["Any-Time"]["rerank"] = any_time({p.name: out[p.name]["rerank"] for p in scenarios})
        reranked = {protocol.name: run(protocol, rerank) for protocol in spec.mixed_cases}
        for name, result in reranked.items():
            out["mixed"]["cases"][name]["rerank"] = result_to_dict(result)
        for group, names in spec.mixed_groups.items():
            out["mixed"]["groups"][group]["rerank"] = result_to_dict(weighted_average([reranked[n] for n in names]))
    return out


def scenario_summary(results: Mapping[str, Any], spec: BenchmarkProtocols, *, chance: bool = False
                     ) -> dict[str, float | None]:
    """``<name>_<metric>`` for Any-Time and every scenario (with re-ranking, also
    ``<name>_<metric>@rr``); with ``chance``, what a random ranking scores instead."""
    names = ("Any-Time", *(p.name for p in spec.protocols))
    summary = {f"{name}_{metric}": (results[name]["chance"] if chance else results[name])[metric]
               for name in names for metric in ("R1", "mAP")}
    if "rerank" in results["Any-Time"]:  # `<column>@rr` beside the plain columns
        for name in names:
            reranked = results[name]["rerank"]
            for metric in ("R1", "mAP"):
                summary[f"{name}_{metric}{RERANK_SUFFIX}"] = (reranked["chance"] if chance else reranked)[metric]
    return summary


# ---- "trials": the cross-dataset benchmarks -------------------------------------------------
def _rule_dict(rule: RemovalRule) -> dict[str, Any]:
    out = dataclasses.asdict(rule)
    out["excluded_camera_pairs"] = [list(pair) for pair in rule.excluded_camera_pairs]
    return out


def _mean(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over trials (or protocols) of every metric, CMC point-wise.

    As for single results, a metric is None (JSON null) when any entry has none (a trial
    without a valid query), never a made-up number.
    """
    out: dict[str, Any] = {"cmc": [plain_mean(list(points)) for points in zip(*(e["cmc"] for e in entries))]}
    for key in ("R1", "R5", "R10", "mAP", "mINP", "num_valid", "num_queries"):
        out[key] = plain_mean([e[key] for e in entries])
    out["chance"] = {key: plain_mean([e["chance"][key] for e in entries]) for key in ("R1", "mAP")}
    if entries and all("rerank" in e for e in entries):  # re-ranked numbers: the same mean
        out["rerank"] = _mean([e["rerank"] for e in entries])
    return out


def score_protocols(features: Any, rows: pd.DataFrame, spec: BenchmarkProtocols, *, chunk_size: int = 1024,
                    device: Any = None, protocols: Sequence[str] | None = None,
                    rerank: Mapping[str, Any] | None = None, recorder: Any = None) -> dict[str, Any]:
    """Run every protocol and trial of ``spec`` on precomputed features.

    Args:
        features: ``(N, 6, D)`` head features of ``rows`` (same order).
        rows: index rows the features belong to (at least every candidate row).
        spec: the benchmark's protocols.
        protocols: restrict to these protocol names (default: all).
        rerank: None or ``{"k1", "k2", "lambda"}``: every trial (and so every mean) also
            gets ``"rerank"``, the same metrics for the k-reciprocal re-ranked distances
            of that trial's query and gallery lists, with the same removal rule.
        recorder: an :class:`atreid.eval.outcomes.OutcomeRecorder` that keeps every
            trial's per-query outcomes, or None.

    Returns:
        ``{protocol: {"head", "description", "rule", "trials": [...], "mean": {...}}}``
        plus one ``{"members", "mean"}`` entry per combination; metrics in percent
        (:func:`result_to_dict`), per trial and as the mean of the trials.
    """
    features = torch.as_tensor(features)
    if features.ndim != 3 or features.shape[0] != len(rows):
        raise ValueError(f"features {tuple(features.shape)} do not match {len(rows)} index rows")
    rows = rows.reset_index(drop=True)
    position = pd.Series(np.arange(len(rows)), index=rows["path"].to_numpy())
    wanted = set(protocols) if protocols is not None else None
    results: dict[str, Any] = {}
    for protocol in spec.protocols:
        if wanted is not None and protocol.name not in wanted:
            continue
        rule = protocol.rule
        trials = []
        for trial in range(protocol.trials):
            query, gallery, info = trial_sets(rows, protocol, trial)
            q_pos = torch.from_numpy(position[query["path"]].to_numpy(np.int64, copy=True))
            g_pos = torch.from_numpy(position[gallery["path"]].to_numpy(np.int64, copy=True))
            q_feat, g_feat = features[q_pos, protocol.head], features[g_pos, protocol.head]
            q_labels = labels_of(query, protocol.clothes_column)
            g_labels = labels_of(gallery, protocol.clothes_column)
            result = evaluate_retrieval(q_feat, g_feat, q_labels, g_labels, rule, chunk_size=chunk_size, device=device)
            entry = {**info, **result_to_dict(result), "num_gallery": int(len(gallery))}
            if recorder is not None:
                recorder.add(protocol.name, result, trial=trial)
            if rerank is not None:
                reranked = evaluate_reranked(q_feat, g_feat, q_labels, g_labels, rule, k1=rerank["k1"], k2=rerank["k2"],
                                             lambda_value=rerank["lambda"], chunk_size=chunk_size, device=device)
                entry["rerank"] = result_to_dict(reranked)
                if recorder is not None:
                    recorder.add(protocol.name, reranked, trial=trial, ranking="rerank")
            if entry["num_valid"] == 0:
                log.warning("%s %s trial %d: no query has a positive left", spec.benchmark, protocol.name, trial)
            trials.append(entry)
        results[protocol.name] = {"head": protocol.head, "description": protocol.description,
                                  "rule": _rule_dict(protocol.rule),
                                  "clothes_column": protocol.clothes_column,
                                  "trials": trials, "mean": _mean(trials)}
    for combo, members in spec.combined.items():
        if all(m in results for m in members):
            results[combo] = {"members": list(members), "mean": _mean([results[m]["mean"] for m in members])}
    return results


def summary_of(results: Mapping[str, Any], spec: BenchmarkProtocols, *, chance: bool = False) -> dict[str, float]:
    """The benchmark's headline numbers (percent): its main protocol's mean R1 and mAP
    (with ``chance``: what a random ranking scores there instead)."""
    main = results[spec.main]["mean"]
    out = {metric: (main["chance"] if chance else main)[metric] for metric in ("R1", "mAP")}
    if "rerank" in main:  # eval.rerank: `<metric>@rr` beside the plain ones
        reranked = main["rerank"]["chance"] if chance else main["rerank"]
        out.update({f"{metric}{RERANK_SUFFIX}": reranked[metric] for metric in ("R1", "mAP")})
    return out
