"""Cross-dataset evaluation (trained on AT-USTC, tested on other benchmarks).

Protocols are data: per benchmark, :data:`PROTOCOLS` lists its query/gallery selections
(column -> accepted values of the common index, see ``atreid.data.adapters``), the
:class:`~atreid.eval.protocols.RemovalRule` applied per query, the head whose feature is
used, and the trials (seeded gallery draws or fixed split files). One generic evaluator
(:func:`evaluate_cross_dataset`) runs them all: it extracts features once for every
image any protocol of the benchmark may use, then scores every protocol and trial with
:func:`~atreid.eval.metrics.evaluate_retrieval`.

Facts (protocols.md) and the reference's defects that are deliberately NOT reproduced:

* every random draw is seeded (trial ``t`` of a protocol with gallery draws uses
  ``numpy.random.default_rng(t)``), the reference's indoor SYSU-MM01 draws are not;
* candidates are sorted by path before drawing (one draw per (person, camera) group, in
  sorted group order), so draws are identical on any machine and for any file listing
  order, the reference draws in filesystem order;
* cross-modality directions are named by what the query is: ``IR->RGB`` = infrared
  queries against an RGB gallery (the reference calls that "v2i"), ``RGB->IR`` the other.

Where the reference and a dataset's own protocol differ, both are offered by name:
SYSU-MM01 multi-shot ``*-multi-shot-all`` (the reference: every gallery image, one
evaluation) and ``*-multi-shot-10x10`` (the SYSU authors: 10 images per (person,
camera), 10 seeded trials); DeepChange ``cc`` (the reference's year-less timestamp as
clothes proxy, the main protocol) and ``cc-year-aware``; LTCC ``cc`` (the reference's)
and ``cc-query-only``.

Adding a benchmark = its adapter (``atreid/data/adapters/<name>.py``), its entry in
:data:`PROTOCOLS` (a few lines of data) and its ``data.benchmarks`` entry in params.yaml.

Your own dataset (``custom``) chooses a protocol family by name instead
(:data:`PROTOCOL_FAMILIES`: ``standard`` as Market-1501, ``cross_modality`` as LLCM,
``clothes_changing`` as VC-Clothes); its index step records the choice in
``verification.json``, and :func:`evaluate_cross_dataset` scores that family.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from atreid.errors import AtreidError
from atreid.eval.metrics import RemovalRule
from atreid.eval.outcomes import OUTCOMES_KEY, OutcomeRecorder
from atreid.eval.rerank import RERANK_SUFFIX, rerank_options

log = logging.getLogger("atreid.eval.cross")

# Heads (atreid.constants.SCENARIOS order): 0 DT-ST, 1 DT-LT, 4 AD-ST.
HEAD_DT_ST, HEAD_DT_LT, HEAD_AD_ST = 0, 1, 4

RGB_ONLY = ("rgb",)


@dataclass(frozen=True)
class CrossProtocol:
    """One query/gallery protocol of a cross-dataset benchmark.

    Args:
        name: protocol name (unique within its benchmark).
        head: index of the head whose post-BN feature is compared.
        query: selection of the queries: index column -> accepted values.
        gallery: selection of the gallery candidates (before any per-trial draw).
        rule: what each query must not see (:class:`~atreid.eval.metrics.RemovalRule`).
        description: one line for reports.
        trials: number of trials (results are given per trial and as their mean).
        gallery_shots: if set, each trial draws this many gallery images per
            (person, camera) with ``numpy.random.default_rng(trial)``.
        trial_column: if set, trial ``t`` keeps only rows whose ``;``-separated list in
            this column names split ``t + 1`` (RegDB's ``test_trials``).
        clothes_column: index column used as the clothes label by the clothes rule.
    """

    name: str
    head: int
    query: Mapping[str, tuple[Any, ...]]
    gallery: Mapping[str, tuple[Any, ...]]
    rule: RemovalRule
    description: str
    trials: int = 1
    gallery_shots: int | None = None
    trial_column: str | None = None
    clothes_column: str = "clothes"

    def columns(self) -> set[str]:
        """Index columns this protocol reads."""
        used = {"path", "person", "camera", "modality", self.clothes_column, *self.query, *self.gallery}
        if self.trial_column:
            used.add(self.trial_column)
        return used


@dataclass(frozen=True)
class BenchmarkProtocols:
    """Every protocol of one benchmark, and which result is its headline number.

    Args:
        benchmark: registry name (as in ``atreid.data.adapters``).
        protocols: the protocols, in report order.
        main: the protocol (or combination) whose mean R1/mAP is the benchmark's summary.
        combined: name -> protocols whose means are averaged (e.g. both directions).
    """

    benchmark: str
    protocols: tuple[CrossProtocol, ...]
    main: str
    combined: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [p.name for p in self.protocols]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.benchmark}: duplicate protocol names {names}")
        for combo, members in self.combined.items():
            unknown = set(members) - set(names)
            if unknown or combo in names:
                raise ValueError(f"{self.benchmark}: combination {combo!r} is invalid ({sorted(unknown)})")
        if self.main not in names and self.main not in self.combined:
            raise ValueError(f"{self.benchmark}: main protocol {self.main!r} is not defined")

    def get(self, name: str) -> CrossProtocol:
        for protocol in self.protocols:
            if protocol.name == name:
                return protocol
        valid = ", ".join([p.name for p in self.protocols] + list(self.combined))
        raise AtreidError(f"unknown protocol {name!r} for {self.benchmark}; valid: {valid}")


# ---- rules shared by the benchmarks ------------------------------------------------------
# Every rule removes same person & same camera unless it says otherwise.
VM_ALL = RemovalRule()                         # "vm/all": both RGB (by selection), no clothes rule
VM_CC = RemovalRule(clothes="changed")         # "vm/cc": changed-clothes positives only
VM_SC = RemovalRule(clothes="same")            # "vm/sc": same-clothes positives only
CM_ALL = RemovalRule(modality="cross")         # "cm/all": cross-modality pairs only
# SYSU-MM01 single-shot all-search: a camera-3 query also drops every camera-2 gallery
# image (any person), as the dataset's evaluation code does.
CM_ALL_SYSU = RemovalRule(modality="cross", excluded_camera_pairs=((3, 2),))

QUERY = {"split": ("query",), "modality": RGB_ONLY}
GALLERY = {"split": ("gallery",), "modality": RGB_ONLY}
TRIALS = 10
MULTI_SHOTS = 10  # SYSU-MM01 authors' multi-shot: gallery images per (person, camera) per trial


def _standard(benchmark: str, title: str) -> BenchmarkProtocols:
    """Market-style single-modality benchmarks: query x gallery, vm/all, head 0."""
    return BenchmarkProtocols(benchmark, (
        CrossProtocol("standard", HEAD_DT_ST, QUERY, GALLERY, VM_ALL,
                 f"{title}: query x gallery, RGB, same person+camera removed"),
    ), main="standard")


def _sysu() -> BenchmarkProtocols:
    """SYSU-MM01: IR queries (cameras 3, 6) against an RGB gallery, head 4 (AD-ST).

    Multi-shot comes in two definitions, both offered by name:

    * ``*-multi-shot-10x10``: the SYSU-MM01 authors' original protocol, 10 random
      gallery images per (person, camera), 10 seeded trials (trial ``t`` seeds ``t``);
    * ``*-multi-shot-all``: the released AT-ReID reference code's ``sysu_multi``, EVERY
      gallery image of the chosen cameras in one evaluation (1 trial, no draw).

    The paper's table reports single-shot all-search only (the main protocol). The
    camera-3 -> camera-2 exclusion applies to single-shot all-search only, as in the
    reference.
    """
    query = {"split": ("query",)}                  # every IR image of the test persons (cameras 3, 6)
    all_search = {"split": ("gallery",)}           # RGB cameras 1, 2, 4, 5
    indoor = {"split": ("gallery",), "camera": (1, 2)}
    return BenchmarkProtocols("sysu_mm01", (
        CrossProtocol("all-search-single-shot", HEAD_AD_ST, query, all_search, CM_ALL_SYSU,
                 "IR queries x 1 random RGB image per (person, camera), 10 seeded trials; "
                 "camera-3 queries drop camera-2 gallery images", trials=TRIALS, gallery_shots=1),
        CrossProtocol("all-search-multi-shot-10x10", HEAD_AD_ST, query, all_search, CM_ALL,
                 "IR queries x 10 random RGB images per (person, camera), 10 seeded trials "
                 "(the SYSU-MM01 authors' multi-shot)", trials=TRIALS, gallery_shots=MULTI_SHOTS),
        CrossProtocol("all-search-multi-shot-all", HEAD_AD_ST, query, all_search, CM_ALL,
                 "IR queries x every RGB gallery image, one evaluation (the AT-ReID reference's multi-shot)"),
        CrossProtocol("indoor-single-shot", HEAD_AD_ST, query, indoor, CM_ALL,
                 "IR queries x 1 random image per (person, camera) of cameras 1-2, 10 seeded trials",
                 trials=TRIALS, gallery_shots=1),
        CrossProtocol("indoor-multi-shot-10x10", HEAD_AD_ST, query, indoor, CM_ALL,
                 "IR queries x 10 random images per (person, camera) of cameras 1-2, 10 seeded trials "
                 "(the SYSU-MM01 authors' multi-shot)", trials=TRIALS, gallery_shots=MULTI_SHOTS),
        CrossProtocol("indoor-multi-shot-all", HEAD_AD_ST, query, indoor, CM_ALL,
                 "IR queries x every gallery image of cameras 1-2, one evaluation "
                 "(the AT-ReID reference's multi-shot)"),
    ), main="all-search-single-shot")


def _regdb() -> BenchmarkProtocols:
    ir, rgb = {"split": ("test",), "modality": ("ir",)}, {"split": ("test",), "modality": ("rgb",)}
    return BenchmarkProtocols("regdb", (
        CrossProtocol("IR->RGB", HEAD_AD_ST, ir, rgb, CM_ALL,
                 "thermal queries x visible gallery of trial k's test files (k = 1..10)",
                 trials=TRIALS, trial_column="test_trials"),
        CrossProtocol("RGB->IR", HEAD_AD_ST, rgb, ir, CM_ALL,
                 "visible queries x thermal gallery of trial k's test files (k = 1..10)",
                 trials=TRIALS, trial_column="test_trials"),
    ), main="both-directions", combined={"both-directions": ("IR->RGB", "RGB->IR")})


def _cross_modality(benchmark: str, query_split: str = "test", gallery_split: str = "test") -> BenchmarkProtocols:
    """LLCM-style cross-modality: both directions, 1 random image of the other modality
    per (person, camera) as the gallery, 10 seeded trials, head 4 (AD-ST).

    LLCM draws queries and gallery from its one ``test`` split; a dataset with query and
    gallery splits (``custom``) names them.
    """
    def side(split: str, modality: str) -> dict[str, tuple[str, ...]]:
        return {"split": (split,), "modality": (modality,)}

    return BenchmarkProtocols(benchmark, (
        CrossProtocol("IR->RGB", HEAD_AD_ST, side(query_split, "ir"), side(gallery_split, "rgb"), CM_ALL,
                 "IR queries x 1 random RGB image per (person, camera), 10 seeded trials",
                 trials=TRIALS, gallery_shots=1),
        CrossProtocol("RGB->IR", HEAD_AD_ST, side(query_split, "rgb"), side(gallery_split, "ir"), CM_ALL,
                 "RGB queries x 1 random IR image per (person, camera), 10 seeded trials",
                 trials=TRIALS, gallery_shots=1),
    ), main="both-directions", combined={"both-directions": ("IR->RGB", "RGB->IR")})


def _llcm() -> BenchmarkProtocols:
    return _cross_modality("llcm")


def _prcc() -> BenchmarkProtocols:
    return BenchmarkProtocols("prcc", (
        CrossProtocol("cc", HEAD_DT_LT, {"split": ("query",), "camera": (3,)}, GALLERY, VM_CC,
                 "changed clothes: camera C queries x camera A gallery"),
        CrossProtocol("sc", HEAD_DT_ST, {"split": ("query",), "camera": (2,)}, GALLERY, VM_SC,
                 "same clothes: camera B queries x camera A gallery"),
    ), main="cc")


def _ltcc() -> BenchmarkProtocols:
    changing = (1,)
    return BenchmarkProtocols("ltcc", (
        CrossProtocol("general", HEAD_DT_LT, QUERY, GALLERY, VM_ALL,
                 "general setting: every query x every gallery image"),
        CrossProtocol("cc", HEAD_DT_LT, {**QUERY, "clothes_changing": changing}, {**GALLERY, "clothes_changing": changing},
                 VM_CC, "cloth-changing: queries AND gallery of clothes-changing persons only, "
                        "changed-clothes positives (the reference's setting)"),
        CrossProtocol("cc-query-only", HEAD_DT_LT, {**QUERY, "clothes_changing": changing}, GALLERY, VM_CC,
                 "cloth-changing, common practice: clothes-changing queries x the full gallery"),
    ), main="cc")


def _deepchange() -> BenchmarkProtocols:
    """DeepChange: test query x test gallery, changed-clothes positives, no camera rule, head 1.

    No clothes labels exist; the capture time is the clothes proxy (index columns of
    :mod:`atreid.data.adapters.deepchange`):

    * ``cc`` (main, the reference's): ``clothes`` = (YYYYMMDD mod 10000) * 1,000,000 +
      hhmmss, the time WITHOUT the year, so captures of one person at the same
      month-day-time in different years count as the same clothes (and are removed);
    * ``cc-year-aware``: ``clothes_with_year`` = YYYYMMDDhhmmss, the full timestamp;
    * ``cc-date``: the capture date, a coarser proxy (every same-day image removed).
    """
    no_camera = RemovalRule(clothes="changed", same_camera=False)
    return BenchmarkProtocols("deepchange", (
        CrossProtocol("cc", HEAD_DT_LT, QUERY, GALLERY, no_camera,
                 "test query x test gallery; clothes proxy = capture month-day-time without the year "
                 "(the reference's; same-moment positives removed); no camera rule"),
        CrossProtocol("cc-year-aware", HEAD_DT_LT, QUERY, GALLERY, no_camera,
                 "as cc with the full capture timestamp, year included, as the clothes proxy",
                 clothes_column="clothes_with_year"),
        CrossProtocol("cc-date", HEAD_DT_LT, QUERY, GALLERY, no_camera,
                 "as cc with the capture date as the clothes proxy (same-day positives removed)",
                 clothes_column="date"),
    ), main="cc")


def _clothes_changing(benchmark: str) -> BenchmarkProtocols:
    """VC-Clothes-style clothes-changing: every RGB query x every RGB gallery image, scored
    once with changed-clothes positives (``cc``, head 1, the main one) and once with
    same-clothes positives (``sc``, head 0)."""
    return BenchmarkProtocols(benchmark, (
        CrossProtocol("cc", HEAD_DT_LT, QUERY, GALLERY, VM_CC, "full query x full gallery, changed-clothes positives"),
        CrossProtocol("sc", HEAD_DT_ST, QUERY, GALLERY, VM_SC, "full query x full gallery, same-clothes positives"),
    ), main="cc")


def _vc_clothes() -> BenchmarkProtocols:
    return _clothes_changing("vc_clothes")


# Protocol families a dataset chooses by name (your own dataset, ``custom``: its
# data.benchmarks entry's ``protocol``): the builders of the release benchmarks, so a
# chosen family scores exactly as Market-1501, LLCM or VC-Clothes are scored.
PROTOCOL_FAMILIES: dict[str, Callable[[str], BenchmarkProtocols]] = {
    "standard": lambda benchmark: _standard(benchmark, benchmark),
    "cross_modality": lambda benchmark: _cross_modality(benchmark, "query", "gallery"),
    "clothes_changing": _clothes_changing,
}
DEFAULT_FAMILY = "standard"


def protocol_family(name: str, benchmark: str) -> BenchmarkProtocols:
    """The protocols of family ``name`` for ``benchmark`` (unknown names list the valid ones)."""
    try:
        builder = PROTOCOL_FAMILIES[name]
    except KeyError:
        raise AtreidError(f"unknown protocol {name!r} for {benchmark}; valid: {', '.join(PROTOCOL_FAMILIES)}") from None
    return builder(benchmark)


PROTOCOLS: dict[str, BenchmarkProtocols] = {p.benchmark: p for p in (
    protocol_family(DEFAULT_FAMILY, "custom"),  # the family its index step records replaces it
    _standard("market1501", "Market-1501"),
    _standard("cuhk03", "CUHK03-NP detected"),
    _standard("cuhk03_labeled", "CUHK03-NP labeled"),
    _standard("msmt17", "MSMT17"),
    _sysu(),
    _regdb(),
    _llcm(),
    _prcc(),
    _ltcc(),
    _deepchange(),
    _vc_clothes(),
)}


def get_protocols(benchmark: str, family: str | None = None) -> BenchmarkProtocols:
    """The protocols of ``benchmark``, or of the protocol ``family`` it chose (unknown names
    list the valid ones)."""
    if family is not None:
        return protocol_family(family, benchmark)
    try:
        return PROTOCOLS[benchmark]
    except KeyError:
        raise AtreidError(f"no cross-dataset protocols for {benchmark!r}; valid: {', '.join(sorted(PROTOCOLS))}") from None


def recorded_family(dataset_dir: Path) -> str | None:
    """The protocol family the index step recorded in ``<dataset_dir>/verification.json``
    (a dataset that chooses one, ``custom``), or None (the benchmark's own protocols)."""
    import json

    report = Path(dataset_dir) / "verification.json"
    if not report.is_file():
        return None
    try:
        return json.loads(report.read_text()).get("protocol")
    except (OSError, ValueError) as exc:
        raise AtreidError(f"{report}: unreadable ({exc}); rebuild it (snakemake -R index_benchmark)") from None


# ---- selections and trials ---------------------------------------------------------------
def _trial_members(values: pd.Series, split_number: int) -> pd.Series:
    def names(value: Any) -> bool:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return False
        return str(split_number) in {t.strip().split(".")[0] for t in str(value).split(";")}

    return values.map(names).astype(bool)


def select(index: pd.DataFrame, selection: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Rows of ``index`` whose columns take one of the accepted values (all columns must match)."""
    mask = pd.Series(True, index=index.index)
    for column, accepted in selection.items():
        if column not in index.columns:
            raise AtreidError(f"index has no {column!r} column needed by the protocol; rebuild the index "
                              "(snakemake -R index_benchmark)")
        mask &= index[column].isin(list(accepted))
    return index[mask]


def draw_per_person_camera(frame: pd.DataFrame, shots: int, seed: int) -> pd.DataFrame:
    """``shots`` random rows per (person, camera) group (all rows of smaller groups).

    Reproducible on any machine and independent of the row order: rows are sorted by
    path, groups visited in sorted (person, camera) order, one ``default_rng(seed)``
    stream drives every draw. The result is sorted by path.
    """
    ordered = frame.sort_values("path", kind="stable")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for _, group in ordered.groupby(["person", "camera"], sort=True):
        positions = group.index.to_numpy()
        if len(positions) <= shots:
            keep.extend(positions.tolist())
        else:
            picked = rng.choice(len(positions), size=shots, replace=False)
            keep.extend(positions[np.sort(picked)].tolist())
    return frame.loc[keep].sort_values("path", kind="stable")


def trial_sets(index: pd.DataFrame, protocol: CrossProtocol, trial: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(queries, gallery, trial description) of one trial of ``protocol``."""
    query = select(index, protocol.query)
    gallery = select(index, protocol.gallery)
    info: dict[str, Any] = {"trial": trial}
    if protocol.trial_column:
        split_number = trial + 1
        query = query[_trial_members(query[protocol.trial_column], split_number)]
        gallery = gallery[_trial_members(gallery[protocol.trial_column], split_number)]
        info["split_files"] = split_number
    if protocol.gallery_shots:
        gallery = draw_per_person_camera(gallery, protocol.gallery_shots, seed=trial)
        info["seed"] = trial
    return query.sort_values("path", kind="stable"), gallery.sort_values("path", kind="stable"), info


def candidate_rows(index: pd.DataFrame, spec: BenchmarkProtocols) -> pd.DataFrame:
    """Every row any protocol (any trial) of ``spec`` may use, sorted by path."""
    mask = pd.Series(False, index=index.index)
    for protocol in spec.protocols:
        mask |= index.index.isin(select(index, protocol.query).index)
        mask |= index.index.isin(select(index, protocol.gallery).index)
    return index[mask].sort_values("path", kind="stable")


# ---- scoring ------------------------------------------------------------------------------
def labels_of(frame: pd.DataFrame, clothes_column: str = "clothes"):
    """:class:`~atreid.eval.metrics.Labels` of index rows (modality names -> codes)."""
    from atreid.constants import MODALITY_CODES
    from atreid.eval.metrics import Labels

    def column(values: pd.Series) -> np.ndarray:
        return np.array(values, dtype=np.int64)  # a writable copy (pandas may hand out read-only views)

    return Labels(person=column(frame["person"]), camera=column(frame["camera"]),
                  modality=column(frame["modality"].map(MODALITY_CODES)), clothes=column(frame[clothes_column]))


def _rule_dict(rule: RemovalRule) -> dict[str, Any]:
    out = dataclasses.asdict(rule)
    out["excluded_camera_pairs"] = [list(pair) for pair in rule.excluded_camera_pairs]
    return out


def _mean(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over trials (or protocols) of every metric, CMC point-wise.

    As for single results, a metric is None (JSON null) when any entry has none (a trial
    without a valid query), never a made-up number.
    """
    from atreid.eval.protocols import plain_mean

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
        (``atreid.eval.protocols.result_to_dict``), per trial and as the mean of the trials.
    """
    import torch

    from atreid.eval.metrics import evaluate_reranked, evaluate_retrieval
    from atreid.eval.protocols import result_to_dict

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


def evaluate_cross_dataset(benchmark: str, model: Any, model_path: Path, data_dir: Path, settings: Mapping[str, Any],
                           image_size: Sequence[int], device: Any, cache_dir: Path | None) -> dict[str, Any]:
    """The evaluator of ``atreid.eval.runner.EVALUATORS`` for one cross-dataset benchmark.

    Reads ``data/<benchmark>/index.csv`` and ``images/``, extracts the features of every
    image any protocol may use once (cached per model and image list), scores every
    protocol and trial, and returns ``{"protocols", "summary", "synthetic", ...}``.
    """
    from atreid.data.adapters import get_adapter
    from atreid.data.adapters.base import SYNTHETIC_COUNTS, read_benchmark_index
    from atreid.eval.features import cached_features

    adapter = get_adapter(benchmark)
    spec = get_protocols(benchmark, recorded_family(Path(data_dir) / benchmark))
    images = Path(data_dir) / benchmark / "images"
    root = adapter.find_root(images)
    index = read_benchmark_index(Path(data_dir) / benchmark / "index.csv")
    missing = set().union(*(p.columns() for p in spec.protocols)) - set(index.columns)
    if missing:
        raise AtreidError(f"{Path(data_dir) / benchmark / 'index.csv'}: columns {sorted(missing)} missing; "
                          f"rebuild it (snakemake -R index_benchmark)")
    rows = candidate_rows(index, spec).reset_index(drop=True)
    if rows.empty:
        raise AtreidError(f"{Path(data_dir) / benchmark / 'index.csv'}: no query or gallery images; "
                          "check the dataset copy and its verification report")
    features = cached_features(model, model_path, root, rows["path"].tolist(), cache_dir=cache_dir,
                               image_size=image_size, batch_size=settings["batch_size"], flip=settings["flip"],
                               device=device, compile=settings.get("compile", False))
    recorder = OutcomeRecorder()
    results = score_protocols(features, rows, spec, chunk_size=settings["chunk_size"], device=device,
                              rerank=rerank_options(settings.get("rerank")), recorder=recorder)
    main = list(spec.combined.get(spec.main, (spec.main,)))
    return {"protocols": results, "summary": summary_of(results, spec),
            "chance_summary": summary_of(results, spec, chance=True), "main_protocol": spec.main,
            "synthetic": (images / SYNTHETIC_COUNTS).is_file(), "num_images": len(rows),
            OUTCOMES_KEY: recorder.table(benchmark, {"": main})}


def cross_dataset_evaluators() -> dict[str, Callable[..., dict[str, Any]]]:
    """Evaluator per benchmark with protocols, for ``atreid.eval.runner.EVALUATORS``."""
    return {name: functools.partial(evaluate_cross_dataset, name) for name in sorted(PROTOCOLS)}
