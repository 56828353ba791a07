"""Evaluation protocols as data: which index rows are queries and gallery, what each
query must not see, and which head's feature ranks them.

One type for every benchmark: a :class:`Protocol` selects its queries and its gallery by
index columns (column -> accepted values: AT-USTC selects by ``flag``, the others by
``split``, and any benchmark by ``modality``, ``camera``, ...), applies one
:class:`RemovalRule` per query, and may repeat itself over trials (seeded gallery draws
or fixed split files, :mod:`atreid.eval.trials`). A benchmark's module declares its
:class:`BenchmarkProtocols` (``protocols`` of its class); the evaluation
(:mod:`atreid.eval.scoring`) has no per-benchmark branch. This module imports neither
torch nor the evaluation, so the data layer (the ``custom`` benchmark's checks) and the
evaluation read the same definitions.

Facts (protocols.md) and the reference's defects that are deliberately NOT reproduced:

* every random draw is seeded (trial ``t`` of a protocol with gallery draws uses
  ``numpy.random.default_rng(t)``), the reference's indoor SYSU-MM01 draws are not;
* candidates are sorted by path before drawing, so draws are identical on any machine
  and for any file listing order;
* cross-modality directions are named by what the query is: ``IR->RGB`` = infrared
  queries against an RGB gallery (the reference calls that "v2i"), ``RGB->IR`` the other.

Your own dataset (``custom``) chooses a protocol family by name (:data:`PROTOCOL_FAMILIES`:
``standard`` as Market-1501, ``cross_modality`` as LLCM, ``clothes_changing`` as
VC-Clothes); its index step records the choice in ``verification.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import numpy as np
import pandas as pd

from atreid.constants import MODALITY_CODES, MODALITY_NAMES, SCENARIOS
from atreid.errors import AtreidError

ModalityRule = Literal["any", "same", "cross"]
ClothesRule = Literal["any", "same", "changed"]
_MODALITY_RULES = ("any", "same", "cross")
_CLOTHES_RULES = ("any", "same", "changed")


@dataclass(frozen=True)
class RemovalRule:
    """What each query must not see in its gallery. Entries no field removes stay.

    Args:
        same_camera: remove the query person's images from the query's camera.
        modality: applies to every gallery entry, any person: ``"same"`` removes
            other-modality entries (keep only same-modality pairs), ``"cross"`` removes
            same-modality entries (cross-modality pairs only), ``"any"`` removes nothing.
        same_person_modality: applies to the query person's entries only: ``"same"``
            removes those of the other modality, ``"cross"`` those of the query's own
            modality (the mixed AT-USTC test's AD cases).
        same_person_removed_modality: a fixed modality code (``atreid.constants.RGB``
            = 0 or ``IR`` = 1) or None: the query person's entries of THAT modality are
            removed, whatever the query's own modality (the mixed AT-USTC test's DT
            cases remove the person's IR images, NT cases its RGB images). Other
            persons' entries stay.
        clothes: ``"same"`` (same-clothes positives) removes the query person's entries
            in other clothes; ``"changed"`` (changed-clothes positives) removes those in
            the query's clothes; ``"any"`` removes nothing.
        excluded_camera_pairs: ``(query camera, gallery camera)`` pairs; a query from
            the first camera loses every gallery entry from the second, any person
            (SYSU-MM01 single-shot all-search: ``((3, 2),)``).
    """

    same_camera: bool = True
    modality: ModalityRule = "any"
    same_person_modality: ModalityRule = "any"
    clothes: ClothesRule = "any"
    excluded_camera_pairs: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    same_person_removed_modality: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in _MODALITY_RULES:
            raise ValueError(f"RemovalRule.modality={self.modality!r}; valid: {', '.join(_MODALITY_RULES)}")
        if self.same_person_modality not in _MODALITY_RULES:
            raise ValueError(f"RemovalRule.same_person_modality={self.same_person_modality!r}; "
                             f"valid: {', '.join(_MODALITY_RULES)}")
        if self.clothes not in _CLOTHES_RULES:
            raise ValueError(f"RemovalRule.clothes={self.clothes!r}; valid: {', '.join(_CLOTHES_RULES)}")
        removed = self.same_person_removed_modality
        if removed is not None:
            if isinstance(removed, bool) or not isinstance(removed, (int, np.integer)) \
                    or not 0 <= int(removed) < len(MODALITY_NAMES):
                codes = ", ".join(f"{code} ({name})" for code, name in enumerate(MODALITY_NAMES))
                raise ValueError(f"RemovalRule.same_person_removed_modality={removed!r}; valid: {codes} or None")
            object.__setattr__(self, "same_person_removed_modality", int(removed))
        # Normalise to a hashable tuple of int pairs so equal rules compare equal.
        pairs = tuple((int(a), int(b)) for a, b in self.excluded_camera_pairs)
        object.__setattr__(self, "excluded_camera_pairs", pairs)


Selection = Mapping[str, tuple[Any, ...]]


def selection_mask(index: pd.DataFrame, selection: Selection) -> np.ndarray:
    """Boolean mask of the rows of ``index`` whose columns take one of the accepted values."""
    mask = np.ones(len(index), dtype=bool)
    for column, accepted in selection.items():
        if column not in index.columns:
            raise AtreidError(f"index has no {column!r} column needed by the protocol; rebuild the index "
                              "(snakemake -R index_benchmark)")
        mask &= index[column].isin(list(accepted)).to_numpy()
    return mask


def select(index: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """Rows of ``index`` whose columns take one of the accepted values (all columns must match)."""
    return index[selection_mask(index, selection)]


@dataclass(frozen=True)
class Protocol:
    """One query/gallery protocol of a benchmark.

    Args:
        name: protocol name (unique within its benchmark; an AT-USTC scenario name for
            the six scenarios).
        head: index of the head whose post-BN feature is compared (``SCENARIOS`` order).
        query: selection of the queries: index column -> accepted values.
        gallery: selection of the gallery candidates (before any per-trial draw).
        rule: what each query must not see.
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
    query: Selection
    gallery: Selection
    rule: RemovalRule = field(default_factory=RemovalRule)
    description: str = ""
    trials: int = 1
    gallery_shots: int | None = None
    trial_column: str | None = None
    clothes_column: str = "clothes"

    def __post_init__(self) -> None:
        for side in ("query", "gallery"):
            bad = set(getattr(self, side).get("modality", ())) - set(MODALITY_CODES)
            if bad:
                raise ValueError(f"Protocol {self.name}: {side} modality {sorted(bad)}; "
                                 f"valid: {', '.join(MODALITY_CODES)}")
        if not 0 <= self.head < len(SCENARIOS):
            raise ValueError(f"Protocol {self.name}: head={self.head} is not in 0..{len(SCENARIOS) - 1}")

    def columns(self) -> set[str]:
        """Index columns this protocol reads."""
        used = {"path", "person", "camera", "modality", self.clothes_column, *self.query, *self.gallery}
        if self.trial_column:
            used.add(self.trial_column)
        return used

    def rows(self, index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Row positions of the queries and of the gallery candidates in ``index`` (ascending)."""
        return np.flatnonzero(selection_mask(index, self.query)), np.flatnonzero(selection_mask(index, self.gallery))


@dataclass(frozen=True)
class BenchmarkProtocols:
    """Every protocol of one benchmark, and which result is its headline number.

    Args:
        benchmark: registry name.
        protocols: the protocols, in report order.
        main: the protocol (or combination) whose mean R1/mAP is the benchmark's summary.
        combined: name -> protocols whose means are averaged (e.g. both directions).
        scoring: how the evaluation reports them (``atreid.eval.runner``): ``"trials"``
            (per protocol and trial, the summary of ``main``) or ``"scenarios"`` (the six
            AT-USTC scenarios, Any-Time and the mixed test of ``mixed_cases``).
        mixed_cases: the scenario-agnostic test's cases (``"scenarios"`` only).
        mixed_groups: group -> mixed cases it pools, weighted by valid queries.
    """

    benchmark: str
    protocols: tuple[Protocol, ...]
    main: str
    combined: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    scoring: Literal["trials", "scenarios"] = "trials"
    mixed_cases: tuple[Protocol, ...] = ()
    mixed_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

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

    def get(self, name: str) -> Protocol:
        for protocol in self.protocols:
            if protocol.name == name:
                return protocol
        valid = ", ".join([p.name for p in self.protocols] + list(self.combined))
        raise AtreidError(f"unknown protocol {name!r} for {self.benchmark}; valid: {valid}")

    def columns(self) -> set[str]:
        """Index columns any protocol reads."""
        return set().union(*(p.columns() for p in (*self.protocols, *self.mixed_cases)))


# ---- what the benchmarks share -----------------------------------------------------------
# Heads (atreid.constants.SCENARIOS order): 0 DT-ST, 1 DT-LT, 4 AD-ST, 5 AD-LT.
HEAD_DT_ST, HEAD_DT_LT, HEAD_AD_ST, HEAD_AD_LT = (SCENARIOS.index(s) for s in ("DT-ST", "DT-LT", "AD-ST", "AD-LT"))

# Every rule removes same person & same camera unless it says otherwise.
VM_ALL = RemovalRule()                         # "vm/all": both RGB (by selection), no clothes rule
VM_CC = RemovalRule(clothes="changed")         # "vm/cc": changed-clothes positives only
VM_SC = RemovalRule(clothes="same")            # "vm/sc": same-clothes positives only
CM_ALL = RemovalRule(modality="cross")         # "cm/all": cross-modality pairs only

RGB_ONLY = ("rgb",)
QUERY = {"split": ("query",), "modality": RGB_ONLY}
GALLERY = {"split": ("gallery",), "modality": RGB_ONLY}
TRIALS = 10


def standard(benchmark: str, title: str) -> BenchmarkProtocols:
    """Market-style single-modality benchmarks: query x gallery, vm/all, head 0."""
    return BenchmarkProtocols(benchmark, (
        Protocol("standard", HEAD_DT_ST, QUERY, GALLERY, VM_ALL,
                 f"{title}: query x gallery, RGB, same person+camera removed"),
    ), main="standard")


def cross_modality(benchmark: str, query_split: str = "test", gallery_split: str = "test") -> BenchmarkProtocols:
    """LLCM-style cross-modality: both directions, 1 random image of the other modality
    per (person, camera) as the gallery, 10 seeded trials, head 4 (AD-ST).

    LLCM draws queries and gallery from its one ``test`` split; a dataset with query and
    gallery splits (``custom``) names them.
    """
    def side(split: str, modality: str) -> dict[str, tuple[str, ...]]:
        return {"split": (split,), "modality": (modality,)}

    return BenchmarkProtocols(benchmark, (
        Protocol("IR->RGB", HEAD_AD_ST, side(query_split, "ir"), side(gallery_split, "rgb"), CM_ALL,
                 "IR queries x 1 random RGB image per (person, camera), 10 seeded trials",
                 trials=TRIALS, gallery_shots=1),
        Protocol("RGB->IR", HEAD_AD_ST, side(query_split, "rgb"), side(gallery_split, "ir"), CM_ALL,
                 "RGB queries x 1 random IR image per (person, camera), 10 seeded trials",
                 trials=TRIALS, gallery_shots=1),
    ), main="both-directions", combined={"both-directions": ("IR->RGB", "RGB->IR")})


def clothes_changing(benchmark: str) -> BenchmarkProtocols:
    """VC-Clothes-style clothes-changing: every RGB query x every RGB gallery image, scored
    once with changed-clothes positives (``cc``, head 1, the main one) and once with
    same-clothes positives (``sc``, head 0)."""
    return BenchmarkProtocols(benchmark, (
        Protocol("cc", HEAD_DT_LT, QUERY, GALLERY, VM_CC, "full query x full gallery, changed-clothes positives"),
        Protocol("sc", HEAD_DT_ST, QUERY, GALLERY, VM_SC, "full query x full gallery, same-clothes positives"),
    ), main="cc")


# Protocol families a dataset chooses by name (your own dataset, ``custom``: its
# data.benchmarks entry's ``protocol``): the builders of the release benchmarks, so a
# chosen family scores exactly as Market-1501, LLCM or VC-Clothes are scored.
PROTOCOL_FAMILIES: dict[str, Callable[[str], BenchmarkProtocols]] = {
    "standard": lambda benchmark: standard(benchmark, benchmark),
    "cross_modality": lambda benchmark: cross_modality(benchmark, "query", "gallery"),
    "clothes_changing": clothes_changing,
}
DEFAULT_FAMILY = "standard"


def protocol_family(name: str, benchmark: str) -> BenchmarkProtocols:
    """The protocols of family ``name`` for ``benchmark`` (unknown names list the valid ones)."""
    try:
        builder = PROTOCOL_FAMILIES[name]
    except KeyError:
        raise AtreidError(f"unknown protocol {name!r} for {benchmark}; valid: {', '.join(PROTOCOL_FAMILIES)}") from None
    return builder(benchmark)
