"""AT-USTC, the training dataset, as a registered adapter (``atustc``).

Reference: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(IJCAI 2025). Released by signed agreement only.

Layout (``AT-USTC/``)::

    pPPP-dDD-cCC/camKK-fF-NNNN.jpg     person, date, clothes / camera, split flag, frame

The path scheme, flags, frame sampling and labels live in :mod:`atreid.data.atustc`;
this adapter puts AT-USTC on the path every benchmark takes (find the root, walk,
decode, hard checks, counts, report). It differs from the benchmarks in what it
records, not in how: its index keeps the flag (no ``split`` column), its report groups
pool flags (train, val, query, gallery, test, then one group per flag), its counts are
the paper's (ids, outfits, RGB/IR cameras, clips, images), and its report keeps the
shape the pipeline has always written (``verification.json``/``.txt``). It is not a
cross-dataset benchmark: ``benchmark_names()`` leaves it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from atreid.constants import FLAG_NAMES
from atreid.data.adapters import get_adapter, register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter, DamagedCopyError
from atreid.data.atustc import (
    COUNT_TOLERANCE,
    INDEX_COLUMNS,
    LAYOUT,
    OFFICIAL_COUNTS,
    PATH_RE,
    SPLITS,
    STAT_FIELDS,
    TOP_FOLDER,
    index_row,
)

PATTERN = "pPPP-dDD-cCC/camKK-fF-NNNN.jpg layout (camera 01-16, flag 0-9)"


@register_benchmark
class ATUSTC(BenchmarkAdapter):
    name = "atustc"
    title = "AT-USTC"
    reference = "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification, IJCAI 2025"
    cross_dataset = False
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

    def walk_layout(self, root: Path, *, malformed: list[str] | None = None
                    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Rows of every image under ``root`` and the non-image files passed over."""
        return self.walk(root, {"": None}, PATH_RE, PATTERN, lambda found, rel, split: index_row(found),
                         on_path=True, malformed=malformed)

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        rows, self.ignored = self.walk_layout(root)
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


def verify_dataset(images_dir: str | Path, *, expected: Mapping[str, Mapping[str, int]] | None,
                   decode_workers: int = 1) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Parse and check an AT-USTC copy against ``expected`` counts (None: none); see
    :meth:`BenchmarkAdapter.verify`."""
    return get_adapter("atustc").verify(images_dir, expected=expected or {}, decode_workers=decode_workers)
