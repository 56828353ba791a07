"""AT-USTC, the training dataset: layout, flags, published counts, its six scenarios and
the mixed test, frame sampling.

Reference: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(IJCAI 2025). Released by signed agreement only: the pipeline imports a user's copy
(``atreid.data.archive``) or generates the embedded synthetic copy
(``atreid.data.synthetic.atustc``) in exactly the same layout::

    AT-USTC/pPPP-dDD-cCC/camKK-fF-NNNN.jpg     e.g. p001-d01-c01/cam01-f0-0050.jpg

person PPP, capture date DD, clothes CC (per person), camera KK (1-8 RGB, 9-16 IR),
split flag F (0 train, 1 validation, 2-5 queries, 6-9 galleries, see
``atreid.constants.FLAG_NAMES``) and frame index NNNN inside the clip (a clip is one
person, date, clothes and camera).

It takes the path every benchmark takes (find the root, walk, decode, hard checks,
counts, report) and differs in what it records, not in how: its index keeps the flag
(no ``split`` column), its report groups pool flags (train, val, query, gallery, test,
then one group per flag), its counts are the paper's (ids, outfits, RGB/IR cameras,
clips, images), and its report keeps the shape the pipeline has always written
(``verification.json``/``.txt``). Its own rules (``rules/data.smk``) prepare, index and
sample it, with its settings under ``data.atustc``.

Protocols (facts in ``shared/reference/protocols.md``): the ST lists are queries with
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
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from atreid.constants import FLAG_NAMES, IR, IR_CAMERAS, RGB, RGB_CAMERAS, SCENARIOS
from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.files import DamagedCopyError
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import BenchmarkProtocols, Protocol, RemovalRule

TOP_FOLDER = "AT-USTC"
LAYOUT = f"{TOP_FOLDER}/pPPP-dDD-cCC/camKK-fF-NNNN.jpg"
# One image path relative to the AT-USTC folder: person 001-999, camera 01-16, flag 0-9.
PATH_RE = re.compile(r"^(?P<clip_dir>p(?P<person>(?!000)\d{3})-d(?P<date>\d{2})-c(?P<clothes>\d{2}))/"
                     r"cam(?P<camera>0[1-9]|1[0-6])-f(?P<flag>\d)-(?P<frame>\d{4})\.jpg$")
INDEX_COLUMNS = ["path", "person", "date", "clothes", "camera", "modality", "flag", "frame", "clip"]

# Splits of the verification report: name -> flags.
SPLITS: dict[str, tuple[int, ...]] = {
    "train": (0,),
    "val": (1,),
    "query": (2, 3, 4, 5),
    "gallery": (6, 7, 8, 9),
    "test": (2, 3, 4, 5, 6, 7, 8, 9),
}
STAT_FIELDS = ("ids", "outfits", "rgb_cameras", "ir_cameras", "clips", "images")

# Published statistics of the released AT-USTC (protocols.md). Only ids and images are
# published per split; the verification compares these with a tolerance (whether the
# validation images are inside the 286,087 training images is unverified).
OFFICIAL_COUNTS: dict[str, dict[str, int]] = {
    "train": {"ids": 135, "images": 286_087},
    "val": {"ids": 135, "images": 55_060},
    "test": {"ids": 135, "images": 117_512},
}
COUNT_TOLERANCE = 0.02  # relative difference reported as a soft problem, never fatal


PATTERN = "pPPP-dDD-cCC/camKK-fF-NNNN.jpg layout (camera 01-16, flag 0-9)"


def modality_of_camera(camera: int) -> str:
    """'rgb' for cameras 1-8, 'ir' for 9-16."""
    if camera in RGB_CAMERAS:
        return "rgb"
    if camera in IR_CAMERAS:
        return "ir"
    raise ValueError(f"camera {camera} is outside 1-16")


def index_row(found: re.Match[str]) -> dict[str, Any]:
    """The index row of a :data:`PATH_RE` match."""
    camera = int(found["camera"])
    return {
        "path": found.string,
        "person": int(found["person"]),
        "date": int(found["date"]),
        "clothes": int(found["clothes"]),
        "camera": camera,
        "modality": modality_of_camera(camera),
        "flag": int(found["flag"]),
        "frame": int(found["frame"]),
        "clip": f"{found['clip_dir']}-cam{camera:02d}",
    }


def parse_relative_path(rel: str) -> dict[str, Any] | None:
    """Fields of one image path relative to the dataset root, or None if malformed."""
    found = PATH_RE.match(rel)
    return None if found is None else index_row(found)


# ---- protocols ------------------------------------------------------------------------------
# The two AT-USTC list pairs: (query flags, gallery flags).
ST_LISTS: tuple[tuple[int, ...], tuple[int, ...]] = ((2, 4), (6, 8))
LT_LISTS: tuple[tuple[int, ...], tuple[int, ...]] = ((3, 5), (7, 9))

_SAME_CLOTHES = "same"  # short-term: same-clothes positives
_CHANGED_CLOTHES = "changed"  # long-term: changed-clothes positives


def _lists(flags: tuple[tuple[int, ...], tuple[int, ...]], modality: str | None = None
           ) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    """(query, gallery) selections of a list pair, of one modality or both."""
    only = {} if modality is None else {"modality": (modality,)}
    return {"flag": flags[0], **only}, {"flag": flags[1], **only}


def _scenario(name: str, lists: tuple[tuple[int, ...], tuple[int, ...]], modality: str | None,
              rule: RemovalRule) -> Protocol:
    return Protocol(name, SCENARIOS.index(name), *_lists(lists, modality), rule)


# The six AT-USTC scenarios, in SCENARIOS (= head) order.
SCENARIO_PROTOCOLS: tuple[Protocol, ...] = (
    _scenario("DT-ST", ST_LISTS, "rgb", RemovalRule(clothes=_SAME_CLOTHES)),
    _scenario("DT-LT", LT_LISTS, "rgb", RemovalRule(clothes=_CHANGED_CLOTHES)),
    _scenario("NT-ST", ST_LISTS, "ir", RemovalRule(clothes=_SAME_CLOTHES)),
    _scenario("NT-LT", LT_LISTS, "ir", RemovalRule(clothes=_CHANGED_CLOTHES)),
    _scenario("AD-ST", ST_LISTS, None, RemovalRule(modality="cross", clothes=_SAME_CLOTHES)),
    _scenario("AD-LT", LT_LISTS, None, RemovalRule(modality="cross", clothes=_CHANGED_CLOTHES)),
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


def _mixed(name: str, lists: tuple[tuple[int, ...], tuple[int, ...]], rule: RemovalRule) -> Protocol:
    return Protocol(name, _MIXED_HEAD, *_lists(lists), rule)


MIXED_CASES: tuple[Protocol, ...] = (
    _mixed("DT-ST", ((2,), (6, 8)), RemovalRule(same_person_removed_modality=_DROP_IR, clothes=_SAME_CLOTHES)),
    _mixed("DT-LT", ((3,), (7, 9)), RemovalRule(same_person_removed_modality=_DROP_IR, clothes=_CHANGED_CLOTHES)),
    _mixed("NT-ST", ((4,), (6, 8)), RemovalRule(same_person_removed_modality=_DROP_RGB, clothes=_SAME_CLOTHES)),
    _mixed("NT-LT", ((5,), (7, 9)), RemovalRule(same_person_removed_modality=_DROP_RGB, clothes=_CHANGED_CLOTHES)),
    _mixed("AD-ST", ST_LISTS, RemovalRule(same_person_modality="cross", clothes=_SAME_CLOTHES)),
    _mixed("AD-LT", LT_LISTS, RemovalRule(same_person_modality="cross", clothes=_CHANGED_CLOTHES)),
)
MIXED_GROUPS: dict[str, tuple[str, ...]] = {
    "Daytime": ("DT-ST", "DT-LT"),
    "Nighttime": ("NT-ST", "NT-LT"),
    "All-day": ("AD-ST", "AD-LT"),
    "Short-term": ("DT-ST", "NT-ST", "AD-ST"),
    "Long-term": ("DT-LT", "NT-LT", "AD-LT"),
    "Anytime": SCENARIOS,
}
PROTOCOLS = BenchmarkProtocols("atustc", SCENARIO_PROTOCOLS, main="DT-ST", scoring="scenarios",
                               mixed_cases=MIXED_CASES, mixed_groups=MIXED_GROUPS)


@register_benchmark
class ATUSTC(Benchmark):
    name = "atustc"
    title = "AT-USTC"
    reference = "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification, IJCAI 2025"
    own_rules = True
    protocols = PROTOCOLS
    settings = "data.atustc"
    top_folders = (TOP_FOLDER,)
    layout = LAYOUT
    columns = tuple(INDEX_COLUMNS)
    splits = ()
    group_column = "flag"
    stat_groups = {**SPLITS, **{f"flag{flag}": (flag,) for flag in FLAG_NAMES}}
    stat_fields = STAT_FIELDS
    disjoint_groups = (("train", "val"), ("test",))
    published = OFFICIAL_COUNTS
    count_tolerance = COUNT_TOLERANCE
    synthetic_tolerance = COUNT_TOLERANCE
    difference_text = "{split} {field}: {actual} (expected {expected})"
    report_keys = ("root", "statistics", "expected", "tolerance", "count_differences", "warnings",
                   "ignored_files", "ok")

    def is_root(self, folder: Path) -> bool:
        return folder.is_dir() and folder.name == TOP_FOLDER

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        rows, self.ignored = self.walk(root, {"": None}, PATH_RE, PATTERN, lambda found, rel, split: index_row(found),
                                       on_path=True)
        warnings = []
        if not any(row["flag"] == 1 for row in rows):
            warnings.append("no validation images (flag 1); training does not use them")
        if self.ignored:
            warnings.append(f"{len(self.ignored)} non-image files ignored, e.g. {self.ignored[0]}")
        return rows, warnings

    def check_index(self, index: pd.DataFrame, root: Path) -> None:
        """Every split flag but validation present, then no person in training and test."""
        present = set(index["flag"].unique().tolist())
        missing = [f for f in FLAG_NAMES if f != 1 and f not in present]
        if missing:
            names = ", ".join(f"flag {f} ({FLAG_NAMES[f]})" for f in missing)
            raise DamagedCopyError(f"{root}: empty or missing split: {names}; the copy is incomplete",
                                   "re-import it")
        super().check_index(index, root)

    def difference(self, group: str, field: str, expected: int, actual: int, relative: float,
                   tolerance: float) -> dict[str, Any]:
        return {"split": group, "field": field, "expected": expected, "actual": actual,
                "relative_difference": relative}

    def synthetic_expected(self, counts: Mapping[str, Any]) -> dict[str, dict[str, int]]:
        """The generator writes the statistics at the top level; the splits are compared."""
        return {split: counts[split] for split in ("train", "val", "query", "gallery") if split in counts}

    def table_lines(self, report: Mapping[str, Any]) -> list[str]:
        """The paper's statistics table, then one line per flag."""
        stats = report["statistics"]
        header = f"{'split':<10}" + "".join(f"{f:>12}" for f in self.stat_fields)
        lines = [header, "-" * len(header)]
        for split in ("train", "val", "query", "gallery", "test", "all"):
            lines.append(f"{split:<10}" + "".join(f"{stats[split][f]:>12,}" for f in self.stat_fields))
        lines += ["", "per flag:"]
        for flag, name in FLAG_NAMES.items():
            s = stats[f"flag{flag}"]
            lines.append(f"  {flag} {name:<14} ids {s['ids']:>5}  clips {s['clips']:>6}  images {s['images']:>8,}")
        return lines + [""]

    def note_lines(self, report: Mapping[str, Any]) -> list[str]:
        if not report["expected"]:
            return []
        return [f"expected counts compared with tolerance {report['tolerance']:.0%}"]

    def split_names(self, index: pd.DataFrame) -> list[str]:
        """train, val, query and gallery (the flags' splits; ``test`` pools query and gallery)."""
        return [split for split in SPLITS if split != "test"]

    def row_splits(self, index: pd.DataFrame) -> pd.Series:
        split_of_flag = {flag: split for split in self.split_names(index) for flag in SPLITS[split]}
        return index["flag"].map(split_of_flag)


# ---- frame sampling ---------------------------------------------------------------------------
def _evenly_spaced(n: int, keep: int) -> np.ndarray:
    """Positions of ``keep`` frames evenly spaced over ``n`` (first and last included)."""
    if keep >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, keep)).astype(int))


def sample_frames(index: pd.DataFrame, frames_per_clip: int | str) -> pd.DataFrame:
    """Keep ``frames_per_clip`` training frames (flag 0) per clip, evenly spaced in frame order.

    ``"all"`` keeps every frame (the released dataset); 18 reproduces the IJCAI version.
    Deterministic: depends only on the index.
    """
    train = index[index["flag"] == 0].sort_values(["clip", "frame", "path"], kind="stable")
    if frames_per_clip == "all":
        kept = train
    else:
        keep = int(frames_per_clip)
        parts = []
        for _, clip in train.groupby("clip", sort=True):
            parts.append(clip.iloc[_evenly_spaced(len(clip), keep)])
        kept = pd.concat(parts) if parts else train.iloc[:0]
    return kept.sort_values("path", kind="stable").reset_index(drop=True)
