"""Evaluation protocols as data: which images are queries and gallery, what each query
must not see, and which head's feature ranks them.

Every protocol is one :class:`Protocol` record in a table below; the code that runs
them (:func:`evaluate_protocol`, :func:`evaluate_atustc`) has no per-protocol branch,
so adding a protocol (or a benchmark's table) is adding data.

AT-USTC (facts in ``shared/reference/protocols.md``): the ST lists are queries with
flags {2, 4} against a gallery with flags {6, 8}; the LT lists {3, 5} against {7, 9}.
DT keeps only RGB queries and RGB gallery images, NT only IR ones, AD removes every
same-modality pair. ST scores same-clothes positives, LT changed-clothes positives.
Same person & same camera is always removed. Head ``i`` serves ``SCENARIOS[i]``.
Any-Time is the plain mean of the six R1 and of the six mAP.

The scenario-agnostic mixed test (the reference's extra protocol) always uses head 5
and filters only same-person entries: same camera; DT cases the person's IR images and
NT cases its RGB images (a fixed modality, whatever the query's modality), AD cases the
person's images of the query's own modality; ST/LT clothes as above. Its groups average
the cases weighted by their valid-query counts (equivalently: pooling the groups' valid
queries).

Returned dicts give R-k, mAP and mINP in PERCENT (0-100, like the paper tables);
:class:`~atreid.eval.metrics.RetrievalResult` itself holds fractions. A protocol with
no valid query reports ``None`` for its metrics (JSON null), never a made-up 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from atreid.constants import IR, MODALITY_CODES, RGB, SCENARIOS
from atreid.errors import AtreidError
from atreid.eval.metrics import Labels, RemovalRule, RetrievalResult, evaluate_reranked, evaluate_retrieval

INDEX_COLUMNS: tuple[str, ...] = ("person", "camera", "modality", "clothes", "flag")
REPORTED_RANKS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class Protocol:
    """One query-list x gallery-list evaluation.

    Args:
        name: protocol name (an AT-USTC scenario name for the six scenarios).
        query_flags: index ``flag`` values whose images are queries.
        gallery_flags: index ``flag`` values whose images form the gallery.
        query_modality: keep only queries of this modality (``"rgb"``/``"ir"``), or None.
        gallery_modality: keep only gallery images of this modality, or None.
        rule: what each query must not see in the gallery.
        head: which of the model's six head features ranks this protocol.
    """

    name: str
    query_flags: tuple[int, ...]
    gallery_flags: tuple[int, ...]
    query_modality: str | None = None
    gallery_modality: str | None = None
    rule: RemovalRule = field(default_factory=RemovalRule)
    head: int = 0

    def __post_init__(self) -> None:
        for name in ("query_modality", "gallery_modality"):
            value = getattr(self, name)
            if value is not None and value not in MODALITY_CODES:
                raise ValueError(f"Protocol {self.name}: {name}={value!r}; valid: {', '.join(MODALITY_CODES)} or None")
        if not 0 <= self.head < len(SCENARIOS):
            raise ValueError(f"Protocol {self.name}: head={self.head} is not in 0..{len(SCENARIOS) - 1}")


# The two AT-USTC list pairs: (query flags, gallery flags).
ST_LISTS: tuple[tuple[int, ...], tuple[int, ...]] = ((2, 4), (6, 8))
LT_LISTS: tuple[tuple[int, ...], tuple[int, ...]] = ((3, 5), (7, 9))

_SAME_CLOTHES = "same"  # short-term: same-clothes positives
_CHANGED_CLOTHES = "changed"  # long-term: changed-clothes positives

# The six AT-USTC scenarios, in SCENARIOS (= head) order.
ATUSTC_SCENARIOS: tuple[Protocol, ...] = (
    Protocol("DT-ST", *ST_LISTS, "rgb", "rgb", RemovalRule(clothes=_SAME_CLOTHES), head=0),
    Protocol("DT-LT", *LT_LISTS, "rgb", "rgb", RemovalRule(clothes=_CHANGED_CLOTHES), head=1),
    Protocol("NT-ST", *ST_LISTS, "ir", "ir", RemovalRule(clothes=_SAME_CLOTHES), head=2),
    Protocol("NT-LT", *LT_LISTS, "ir", "ir", RemovalRule(clothes=_CHANGED_CLOTHES), head=3),
    Protocol("AD-ST", *ST_LISTS, rule=RemovalRule(modality="cross", clothes=_SAME_CLOTHES), head=4),
    Protocol("AD-LT", *LT_LISTS, rule=RemovalRule(modality="cross", clothes=_CHANGED_CLOTHES), head=5),
)

# The mixed (scenario-agnostic) test: head 5 throughout, only same-person entries are
# filtered (other persons' images of any modality stay). The reference's rule, as data:
# DT cases remove the query person's IR gallery images and NT cases its RGB ones, by a
# FIXED modality whatever the query's own modality (``same_person_removed_modality``);
# AD cases remove the person's images of the query's own modality (``"cross"``).
# (A rule "remove the modality other than the query's" would agree only while every
# DT-flagged query is RGB and every NT-flagged one IR; the fixed rule is the reference's.)
_MIXED_HEAD = SCENARIOS.index("AD-LT")
_DROP_IR = IR  # DT: the person's IR gallery images are removed
_DROP_RGB = RGB  # NT: the person's RGB gallery images are removed
MIXED_CASES: tuple[Protocol, ...] = (
    Protocol("DT-ST", (2,), (6, 8), rule=RemovalRule(same_person_removed_modality=_DROP_IR, clothes=_SAME_CLOTHES),
             head=_MIXED_HEAD),
    Protocol("DT-LT", (3,), (7, 9), rule=RemovalRule(same_person_removed_modality=_DROP_IR, clothes=_CHANGED_CLOTHES),
             head=_MIXED_HEAD),
    Protocol("NT-ST", (4,), (6, 8), rule=RemovalRule(same_person_removed_modality=_DROP_RGB, clothes=_SAME_CLOTHES),
             head=_MIXED_HEAD),
    Protocol("NT-LT", (5,), (7, 9), rule=RemovalRule(same_person_removed_modality=_DROP_RGB,
                                                     clothes=_CHANGED_CLOTHES),
             head=_MIXED_HEAD),
    Protocol("AD-ST", (2, 4), (6, 8), rule=RemovalRule(same_person_modality="cross", clothes=_SAME_CLOTHES),
             head=_MIXED_HEAD),
    Protocol("AD-LT", (3, 5), (7, 9), rule=RemovalRule(same_person_modality="cross", clothes=_CHANGED_CLOTHES),
             head=_MIXED_HEAD),
)
MIXED_GROUPS: dict[str, tuple[str, ...]] = {
    "Daytime": ("DT-ST", "DT-LT"),
    "Nighttime": ("NT-ST", "NT-LT"),
    "All-day": ("AD-ST", "AD-LT"),
    "Short-term": ("DT-ST", "NT-ST", "AD-ST"),
    "Long-term": ("DT-LT", "NT-LT", "AD-LT"),
    "Anytime": SCENARIOS,
}


def check_index(index: pd.DataFrame) -> None:
    """Raise :class:`AtreidError` unless ``index`` has the columns and values protocols read."""
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise AtreidError(f"AT-USTC index lacks column(s) {', '.join(missing)}; "
                          f"regenerate it with the data step (columns: {', '.join(INDEX_COLUMNS)})")
    bad = sorted(set(index["modality"].unique()) - set(MODALITY_CODES))
    if bad:
        raise AtreidError(f"AT-USTC index: unknown modality value(s) {bad}; expected {', '.join(MODALITY_CODES)}")


def index_labels(index: pd.DataFrame) -> Labels:
    """Per-row labels of an index table (modality names mapped to RGB=0 / IR=1)."""
    check_index(index)
    modality = index["modality"].map(MODALITY_CODES).to_numpy(dtype=np.int64)
    return Labels(index["person"].to_numpy(dtype=np.int64), index["camera"].to_numpy(dtype=np.int64), modality,
                  index["clothes"].to_numpy(dtype=np.int64))


def protocol_rows(index: pd.DataFrame, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of ``protocol``'s queries and gallery in ``index`` (ascending)."""
    flag = index["flag"].to_numpy()
    modality = index["modality"].to_numpy()

    def rows(flags: tuple[int, ...], wanted: str | None) -> np.ndarray:
        keep = np.isin(flag, flags)
        if wanted is not None:
            keep &= modality == wanted
        return np.flatnonzero(keep)

    return rows(protocol.query_flags, protocol.query_modality), rows(protocol.gallery_flags, protocol.gallery_modality)


def evaluate_protocol(features: torch.Tensor, index: pd.DataFrame, protocol: Protocol, *,
                      labels: Labels | None = None, max_rank: int = 20, chunk_size: int = 1024,
                      device: torch.device | str | None = None,
                      rerank: Mapping[str, Any] | None = None) -> RetrievalResult:
    """Score one protocol from ``(N, heads, D)`` features aligned with ``index`` rows.

    With ``rerank`` (``{"k1", "k2", "lambda"}``, see :func:`atreid.eval.rerank.rerank_options`)
    the ranking uses the k-reciprocal re-ranked distances of the protocol's query and
    gallery lists, with the same removal rule.
    """
    labels = index_labels(index) if labels is None else labels
    q_rows, g_rows = protocol_rows(index, protocol)
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


def evaluate_atustc(features: torch.Tensor, index: pd.DataFrame, *, chunk_size: int = 1024,
                    device: torch.device | str | None = None, max_rank: int = 20,
                    scenarios: Sequence[Protocol] = ATUSTC_SCENARIOS, mixed_cases: Sequence[Protocol] = MIXED_CASES,
                    mixed_groups: Mapping[str, Sequence[str]] = MIXED_GROUPS,
                    rerank: Mapping[str, Any] | None = None, recorder: Any = None) -> dict[str, Any]:
    """The six AT-USTC scenarios, Any-Time and the mixed test, as a JSON-able dict.

    Args:
        features: ``(N, 6, D)`` post-BN head features, row ``i`` of ``index``'s image.
        index: AT-USTC index rows (test flags 2-9), columns ``person``, ``camera``,
            ``modality`` ("rgb"/"ir"), ``clothes``, ``flag``; row order = feature order.
        chunk_size: queries per chunk (memory bound).
        device: where to compute (None: the features' device).
        max_rank: CMC length (at least 10 for R10).
        rerank: None (plain ranking only) or ``{"k1", "k2", "lambda"}``: every scenario,
            mixed case and group, and Any-Time, also gets ``"rerank"``, the same dict for
            the k-reciprocal re-ranked distances (the plain numbers are unchanged).
        recorder: an :class:`atreid.eval.outcomes.OutcomeRecorder` that keeps the six
            scenarios' per-query outcomes (plain and re-ranked), or None.

    Returns:
        ``{scenario: {cmc, R1, R5, R10, mAP, mINP, num_valid, num_queries}, ...,
        "Any-Time": {R1, mAP}, "mixed": {"cases": {name: {...}}, "groups": {name: {...}}}}``
        with metrics in percent.
    """
    features = torch.as_tensor(features)
    if features.ndim != 3 or features.shape[0] != len(index):
        raise ValueError(f"features must be (N={len(index)}, heads, D), got {tuple(features.shape)}")
    labels = index_labels(index)
    index = index.reset_index(drop=True)

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
    cases = {protocol.name: run(protocol) for protocol in mixed_cases}
    out["mixed"] = {
        "cases": {name: result_to_dict(result) for name, result in cases.items()},
        "groups": {group: result_to_dict(weighted_average([cases[name] for name in names]))
                   for group, names in mixed_groups.items()},
    }
    if rerank is not None:
        for protocol in scenarios:
            result = run(protocol, rerank)
            out[protocol.name]["rerank"] = result_to_dict(result)
            if recorder is not None:
                recorder.add(protocol.name, result, ranking="rerank")
        out["Any-Time"]["rerank"] = any_time({p.name: out[p.name]["rerank"] for p in scenarios})
        reranked = {protocol.name: run(protocol, rerank) for protocol in mixed_cases}
        for name, result in reranked.items():
            out["mixed"]["cases"][name]["rerank"] = result_to_dict(result)
        for group, names in mixed_groups.items():
            out["mixed"]["groups"][group]["rerank"] = result_to_dict(weighted_average([reranked[n] for n in names]))
    return out
