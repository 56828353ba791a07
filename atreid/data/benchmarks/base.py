"""The base class of every benchmark (AT-USTC and the cross-dataset benchmarks).

A benchmark reads one dataset's *real release layout* (what the authors distribute,
never a reorganised copy) into the common index, one row per image:

``path``      relative to the dataset root (the folder holding the release's top-level
              entries, e.g. ``Market-1501-v15.09.15/``)
``person``    int identity (unique within the index)
``camera``    int camera id (IR cameras numbered apart from RGB ones where needed)
``modality``  ``"rgb"`` or ``"ir"``
``clothes``   int clothes id per person, ``-1`` when the benchmark has no clothes labels
``split``     ``"train"``, ``"val"``, ``"query"``, ``"gallery"``, ``"test"``, ...

plus benchmark-specific columns a protocol needs (``extra_columns``). AT-USTC keeps its
own columns (``columns``: flags instead of ``split``, see ``benchmarks/atustc.py``). The
base class offers what every benchmark shares, so a benchmark's parsing stays a regex and a row mapping:

* :meth:`Benchmark.find_root` / :meth:`check_required` - locate the release
  inside ``data/<name>/images`` and fail early, naming the missing file and the fix;
* :meth:`Benchmark.walk` - the folder walk (split folders -> regex -> rows);
* :meth:`Benchmark.build_index` - parse, validate and sort the index;
* :meth:`Benchmark.verify` - the one verification of every dataset: decoding of
  every image (:func:`find_corrupt_images`), the benchmark's hard checks
  (:meth:`check_index`), counts per report group (``stat_fields`` x :meth:`groups`)
  against the published statistics (soft: differences beyond the benchmark's tolerance are
  reported, never fatal) or, for synthetic copies, against the generator's own counts;
* :meth:`Benchmark.format_report` - the summary table.

Hard problems (missing folders/files, malformed names, unreadable list files, corrupt
images) raise :class:`~atreid.errors.AtreidError` naming the file and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import pandas as pd

from atreid.data.benchmarks.files import (
    SYNTHETIC_COUNTS,
    DamagedCopyError,
    find_corrupt_images,
    is_image,
    list_files,
)
from atreid.data.protocols import BenchmarkProtocols
from atreid.errors import AtreidError

INDEX_COLUMNS: tuple[str, ...] = ("path", "person", "camera", "modality", "clothes", "split")
STAT_FIELDS: tuple[str, ...] = ("ids", "images", "cameras", "rgb_images", "ir_images", "outfits",
                                "person_cameras")
DEFAULT_TOLERANCE = 0.02       # relative difference reported for exact published figures
APPROX_TOLERANCE = 0.10        # for figures protocols.md marks "(approx.)"
SEARCH_DEPTH = 3               # folder levels searched for a release wrapped in other folders

# Report statistics by name: frame of one report group -> count. Adapters choose theirs
# (``stat_fields``); ``outfits`` counts only known clothes (-1 = the benchmark has none).
STATISTICS: dict[str, Callable[[pd.DataFrame], Any]] = {
    "ids": lambda frame: frame["person"].nunique(),
    "images": len,
    "cameras": lambda frame: frame["camera"].nunique(),
    "rgb_images": lambda frame: (frame["modality"] == "rgb").sum(),
    "ir_images": lambda frame: (frame["modality"] == "ir").sum(),
    "outfits": lambda frame: frame.loc[frame["clothes"] >= 0, ["person", "clothes"]].drop_duplicates().shape[0],
    "person_cameras": lambda frame: frame[["person", "camera"]].drop_duplicates().shape[0],
    "rgb_cameras": lambda frame: frame.loc[frame["modality"] == "rgb", "camera"].nunique(),
    "ir_cameras": lambda frame: frame.loc[frame["modality"] == "ir", "camera"].nunique(),
    "clips": lambda frame: frame["clip"].nunique(),
}


class Benchmark:
    """One dataset's release layout -> the common index (subclass per dataset).

    Subclasses set the class attributes and implement :meth:`parse` (usually one
    :meth:`walk` over the split folders with the release's regex and a row mapping).

    Attributes:
        name: registry name (``market1501``, ``cuhk03``, ``atustc``, ...).
        title: human-readable name used in reports.
        reference: citation of the dataset paper.
        protocols: its evaluation protocols (:mod:`atreid.data.protocols`); a benchmark
            whose user chooses a protocol family (``custom``) declares the default one,
            and its index step records the choice in ``verification.json``.
        miniature: the plan of the synthetic miniature that stands in for it in the demo
            (:mod:`atreid.data.synthetic.miniatures`; None: it has none, its source is
            needed).
        own_rules: prepared, indexed and sampled by its own rules (``rules/data.smk``,
            settings under ``settings``); the others share ``rules/benchmarks.smk``.
        settings: the params.yaml entry of the dataset, quoted in error messages
            ("" = ``data.benchmarks.<name>``).
        top_folders: names the release unpacks to (first = the official one, used by the
            synthetic miniature); other spellings users commonly have are accepted.
        subdir: path of the dataset root below the top folder ("" = the top folder).
        required: entries that must exist below the root (a trailing ``/`` = folder).
        layout: one line describing the expected layout, quoted in error messages.
        columns: the common index columns (AT-USTC has its own).
        extra_columns: benchmark-specific index columns.
        splits: split values in report order.
        stat_groups: extra report rows: name -> values of ``group_column`` they pool.
        group_column: the index column report groups select on.
        stat_fields: the counts of each report group (names of :data:`STATISTICS`).
        disjoint_groups: two sets of report groups that must not share a person (a hard
            check; () = not checked).
        published: published statistics: group -> {field: value}.
        approximate: (group, field) pairs of ``published`` that are approximate.
        count_tolerance, approximate_tolerance, synthetic_tolerance: relative count
            differences reported for exact published figures, approximate ones and the
            synthetic generator's own counts.
        difference_text: the warning of one count difference (formatted with its record).
        report_keys: the keys of the verification report.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    protocols: ClassVar[BenchmarkProtocols]
    miniature: ClassVar[Callable[..., Any] | None] = None
    own_rules: ClassVar[bool] = False
    settings: ClassVar[str] = ""
    top_folders: ClassVar[tuple[str, ...]] = ()
    subdir: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()
    layout: ClassVar[str] = ""
    columns: ClassVar[tuple[str, ...]] = INDEX_COLUMNS
    extra_columns: ClassVar[tuple[str, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("train", "query", "gallery")
    stat_groups: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    group_column: ClassVar[str] = "split"
    stat_fields: ClassVar[tuple[str, ...]] = STAT_FIELDS
    disjoint_groups: ClassVar[tuple[tuple[str, ...], tuple[str, ...]] | tuple[()]] = ()
    published: ClassVar[Mapping[str, Mapping[str, int]]] = {}
    approximate: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    count_tolerance: ClassVar[float] = DEFAULT_TOLERANCE
    approximate_tolerance: ClassVar[float] = APPROX_TOLERANCE
    synthetic_tolerance: ClassVar[float] = 0.0
    difference_text: ClassVar[str] = "{group} {field}: {actual:,} (expected {expected:,}, tolerance {tolerance:.0%})"
    report_keys: ClassVar[tuple[str, ...]] = ("benchmark", "title", "root", "expected_source", "statistics",
                                              "expected", "approximate", "count_differences", "warnings",
                                              "dropped", "decoded", "ok")

    def __init__(self) -> None:
        # Images a release ships but the index leaves out by convention (e.g. Market-1501's
        # junk id -1), filled by parse() and shown in the report: reason -> count.
        self.dropped: dict[str, int] = {}
        # Files parse() passed over (not images), for reports that list them.
        self.ignored: list[str] = []

    @property
    def settings_key(self) -> str:
        return self.settings or f"data.benchmarks.{self.name}"

    # ---- locating the release ---------------------------------------------------------
    def root_candidates(self, images_dir: Path) -> list[Path]:
        """Folders that may be the dataset root, most likely first."""
        images_dir = Path(images_dir)
        sub = Path(self.subdir) if self.subdir else Path()
        candidates = [images_dir / top / sub for top in self.top_folders]
        candidates.append(images_dir / sub)
        unique: list[Path] = []
        for c in candidates:
            if c not in unique:
                unique.append(c)
        return unique

    def missing_required(self, root: Path) -> list[str]:
        missing = []
        for entry in self.required:
            target = root / entry.rstrip("/")
            ok = target.is_dir() if entry.endswith("/") else target.is_file()
            if not ok:
                missing.append(entry)
        return missing

    def is_root(self, folder: Path) -> bool:
        """Whether ``folder`` holds the release (every required entry exists)."""
        return folder.is_dir() and not self.missing_required(folder)

    def find_root(self, images_dir: str | Path) -> Path:
        """The dataset root inside ``images_dir`` (where every required entry exists).

        Tries the release's usual top folders first, then any folder up to
        :data:`SEARCH_DEPTH` levels down (a copy wrapped in other folders still works).
        """
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise AtreidError(f"{images_dir}: folder not found; run the prepare step for {self.name} "
                              f"(snakemake {images_dir}) or check {self.settings_key}.source")
        candidates = self.root_candidates(images_dir)
        for candidate in candidates:
            if self.is_root(candidate):
                return candidate
        found = self._search(images_dir)
        if found is not None:
            return found
        # Report against the most plausible candidate: the first existing one.
        existing = [c for c in candidates if c.is_dir()]
        self.check_required(existing[0] if existing else candidates[0])
        top = self.top_folders[0] if self.top_folders else self.title
        raise AtreidError(f"{images_dir}: no {top}/ folder found; the dataset must unpack to "
                          f"{self.layout} (check {self.settings_key}.source)")

    def _search(self, images_dir: Path) -> Path | None:
        """Breadth-first search (sorted, bounded depth) for a folder holding the release."""
        level = [images_dir]
        for _ in range(SEARCH_DEPTH):
            following = []
            for folder in level:
                for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
                    candidate = child / self.subdir if self.subdir else child
                    if self.is_root(candidate):
                        return candidate
                    following.append(child)
            level = following
        return None

    def check_required(self, root: Path) -> None:
        """Raise naming the first missing required file/folder and the expected layout."""
        missing = self.missing_required(root)
        if missing:
            more = f" (and {len(missing) - 1} more: {', '.join(missing[1:4])})" if len(missing) > 1 else ""
            raise AtreidError(f"{root / missing[0].rstrip('/')}: required {self.title} "
                              f"{'folder' if missing[0].endswith('/') else 'file'} missing{more}; "
                              f"expected layout {self.layout} (re-extract the official release)")

    # ---- parsing ----------------------------------------------------------------------
    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        """Rows of the index (dicts with ``columns`` + ``extra_columns``) and soft warnings."""
        raise NotImplementedError

    def walk(self, root: Path, folders: Mapping[str, Any], regex: re.Pattern[str], pattern: str,
             row: Callable[[re.Match[str], str, Any], dict[str, Any] | None], *, on_path: bool = False,
             flat: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
        """The folder walk every release shares: split folders -> regex -> index rows.

        For each ``folder -> split`` in order, every file below ``root / folder`` (sorted;
        ``""`` = the whole root): a non-image, or with ``flat`` a file in a subfolder, is
        ignored; an image whose name (with ``on_path``: whose path relative to ``root``)
        does not match ``regex`` is malformed; any other gives ``row(match, rel, split)``,
        its index row (None: left out by convention).

        Args:
            pattern: the naming scheme, quoted in the error for malformed names.

        Returns:
            (rows, ignored files). Malformed names raise naming the first and how many more.
        """
        rows: list[dict[str, Any]] = []
        ignored: list[str] = []
        bad: list[str] = []
        for folder, split in folders.items():
            start = len(folder) + 1 if folder else 0
            for rel in list_files(root / folder, root):
                if not is_image(rel) or (flat and "/" in rel[start:]):
                    ignored.append(rel)
                    continue
                found = regex.match(rel if on_path else Path(rel).name)
                if found is None:
                    bad.append(rel)
                    continue
                record = row(found, rel, split)
                if record is not None:
                    rows.append(record)
        if bad:
            raise self.malformed(root, bad[0], pattern, more=len(bad) - 1)
        return rows, ignored

    def malformed(self, root: Path, rel: str, pattern: str, *, more: int = 0) -> AtreidError:
        """The error for a file whose name does not follow the release's naming scheme."""
        others = f" (and {more} more)" if more else ""
        return AtreidError(f"{root / rel}{others}: file name does not match {self.title}'s {pattern}; "
                           "rename or remove it (or re-extract the official release)")

    def missing_listed(self, root: Path, path: str, list_name: str) -> AtreidError:
        """The error for an image a split file lists but the copy lacks."""
        return AtreidError(f"{root / path}: listed in {list_name} but missing; the copy is incomplete, "
                           "re-extract the official release")

    def match(self, regex: re.Pattern[str], rel: str, root: Path, pattern: str, *,
              text: str | None = None) -> re.Match[str]:
        found = regex.match(Path(rel).name if text is None else text)
        if found is None:
            raise self.malformed(root, rel, pattern)
        return found

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """The index of ``rows``: the benchmark's columns, integer ids, sorted by path."""
        index = pd.DataFrame(rows, columns=[*self.columns, *self.extra_columns])
        for column in ("person", "camera", "clothes"):
            index[column] = index[column].astype("int64")
        return index.sort_values("path", kind="stable").reset_index(drop=True)

    def build_index(self, images_dir: str | Path) -> tuple[pd.DataFrame, Path, list[str]]:
        """Parse the release in ``images_dir``; return (index sorted by path, root, warnings)."""
        root = self.find_root(images_dir)
        rows, warnings = self.parse(root)
        index = self.frame(rows)
        if index.empty:
            raise AtreidError(f"{root}: no images found for {self.title}; expected layout {self.layout}")
        duplicated = index["path"][index["path"].duplicated()]
        if len(duplicated):
            raise AtreidError(f"{root / duplicated.iloc[0]}: listed twice by {self.title}'s split files; "
                              "the list files are inconsistent, re-extract the dataset")
        bad_modality = set(index["modality"]) - {"rgb", "ir"}
        if bad_modality:  # pragma: no cover - benchmark bug guard
            raise AssertionError(f"{self.name}: invalid modalities {bad_modality}")
        return index, root, warnings

    # ---- verification -----------------------------------------------------------------
    def groups(self) -> dict[str, tuple[Any, ...]]:
        """Report groups: name -> the values of ``group_column`` they pool."""
        groups: dict[str, tuple[Any, ...]] = {split: (split,) for split in self.splits}
        groups.update(self.stat_groups)
        return groups

    def group_rows(self, index: pd.DataFrame, name: str) -> pd.DataFrame:
        """Rows of one report group (a split, a pooled group, or ``all``)."""
        if name == "all":
            return index
        return index[index[self.group_column].isin(self.groups()[name])]

    def split_names(self, index: pd.DataFrame) -> list[str]:
        """The splits of an index by the names commands take (``--split``)."""
        return sorted(set(index[self.group_column]))

    def row_splits(self, index: pd.DataFrame) -> pd.Series:
        """The split of every row, by the names of :meth:`split_names`."""
        return index[self.group_column]

    def statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Counts (``stat_fields``) per report group, then ``all``."""
        result = {}
        for name in [*self.groups(), "all"]:
            frame = self.group_rows(index, name)
            result[name] = {field: int(STATISTICS[field](frame)) for field in self.stat_fields}
        return result

    def extra_statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Adapter-specific counts merged into the statistics (override when needed)."""
        return {}

    def all_statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]:
        """:meth:`statistics` with :meth:`extra_statistics` merged in (what reports show)."""
        statistics = self.statistics(index)
        for group, fields in self.extra_statistics(index).items():
            statistics.setdefault(group, {}).update(fields)
        return statistics

    def check_index(self, index: pd.DataFrame, root: Path) -> None:
        """Hard checks of a parsed copy (raise :class:`AtreidError`); by default that no
        person is in both sides of ``disjoint_groups``. Adapters add their own."""
        if not self.disjoint_groups:
            return
        sides = [set(pd.concat([self.group_rows(index, g) for g in side])["person"]) for side in self.disjoint_groups]
        shared = sorted(int(p) for p in sides[0] & sides[1])
        if shared:
            raise AtreidError(f"{root}: persons {shared[:5]} appear in both training and test splits; "
                              "the copy mixes splits, re-import it")

    def tolerance(self, group: str, field: str, *, exact: bool) -> float:
        if exact:
            return self.synthetic_tolerance
        return self.approximate_tolerance if (group, field) in self.approximate else self.count_tolerance

    def difference(self, group: str, field: str, expected: int, actual: int, relative: float,
                   tolerance: float) -> dict[str, Any]:
        """The report record of one count difference."""
        return {"group": group, "field": field, "expected": expected, "actual": actual,
                "relative_difference": relative, "tolerance": tolerance}

    def compare(self, statistics: Mapping[str, Mapping[str, int]], expected: Mapping[str, Mapping[str, int]],
                *, exact: bool) -> list[dict[str, Any]]:
        """Differences beyond the tolerance (exact figures 2 %, approximate ones 10 %; synthetic 0)."""
        differences = []
        for group, fields in expected.items():
            for field, want in fields.items():
                have = statistics.get(group, {}).get(field)
                if have is None:
                    continue
                tolerance = self.tolerance(group, field, exact=exact)
                rel = abs(have - want) / max(abs(want), 1)
                if rel > tolerance:
                    differences.append(self.difference(group, field, want, have, round(rel, 4), tolerance))
        return differences

    def synthetic_expected(self, counts: Mapping[str, Any]) -> dict[str, dict[str, int]]:
        """The expected statistics in a generator's ``synthetic_counts.json``."""
        return counts["statistics"]

    def expected_counts(self, images_dir: Path, expected: str | Mapping[str, Mapping[str, int]]
                        ) -> tuple[dict[str, dict[str, int]], str]:
        """(expected statistics, their source) for ``expected`` (a source name or the counts)."""
        if not isinstance(expected, str):
            return {g: dict(f) for g, f in expected.items()}, "given"
        if expected == "synthetic":
            counts_file = images_dir / SYNTHETIC_COUNTS
            if not counts_file.is_file():
                raise AtreidError(f"{counts_file}: missing; {self.settings_key}.expected_counts is 'synthetic' "
                                  "but this copy was not generated here; set it to 'official' or 'none'")
            return self.synthetic_expected(json.loads(counts_file.read_text())), expected
        if expected == "official":
            return {g: dict(f) for g, f in self.published.items()}, expected
        if expected == "none":
            return {}, expected
        raise AtreidError(f"expected counts {expected!r} unknown; valid: official, synthetic, none")

    def verify(self, images_dir: str | Path, *, expected: str | Mapping[str, Mapping[str, int]] = "official",
               decode_workers: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Parse and check a copy; return (index, report).

        Args:
            images_dir: ``data/<name>/images`` (holding the release's top folder).
            expected: ``"official"`` (the published statistics), ``"synthetic"`` (the
                generator's ``synthetic_counts.json``), ``"none"``, or the counts themselves
                (group -> {field: value}).
            decode_workers: decode every image in this many processes (0 = skip).
        """
        images_dir = Path(images_dir)
        index, root, warnings = self.build_index(images_dir)
        if decode_workers > 0:
            corrupt = find_corrupt_images(root, index["path"].tolist(), decode_workers)
            if corrupt:
                first = sorted(corrupt)[0]
                more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
                raise DamagedCopyError(f"{root / first}{more}: unreadable or corrupt image ({corrupt[first]})",
                                       "re-extract the dataset or replace the file")
        self.check_index(index, root)
        statistics = self.all_statistics(index)
        want, source = self.expected_counts(images_dir, expected)
        differences = self.compare(statistics, want, exact=source == "synthetic")
        warnings += [self.difference_text.format(**diff) for diff in differences]
        if source == "official" and not self.published:
            warnings.append(f"no published statistics recorded for {self.title}; counts not compared")
        report = {
            "benchmark": self.name,
            "title": self.title,
            "root": str(root),
            "expected_source": source,
            "statistics": statistics,
            "expected": want,
            "approximate": sorted(f"{g}.{f}" for g, f in self.approximate),
            "tolerance": self.count_tolerance,
            "count_differences": differences,
            "warnings": warnings,
            "dropped": dict(self.dropped),
            "ignored_files": self.ignored[:100],
            "decoded": decode_workers > 0,
            "ok": True,
        }
        return index, {key: report[key] for key in self.report_keys}

    def format_report(self, report: Mapping[str, Any]) -> str:
        """Title, summary table (torchreid's ``show_summary``), notes, then the warnings."""
        lines = [f"{self.title} verification: {report['root']}", ""]
        lines += self.table_lines(report) + self.note_lines(report)
        lines += [f"WARNING: {w}" for w in report["warnings"]] or ["no warnings"]
        return "\n".join(lines) + "\n"

    def table_lines(self, report: Mapping[str, Any]) -> list[str]:
        """One row per report group, then the images left out by convention."""
        stats = report["statistics"]
        fields = [f for f in self.stat_fields if any(f in row for row in stats.values())]
        extra = sorted({f for row in stats.values() for f in row} - set(self.stat_fields))
        columns = fields + extra
        width = max(12, *(len(g) + 2 for g in stats))
        header = f"{'group':<{width}}" + "".join(f"{c:>16}" for c in columns)
        lines = [header, "-" * len(header)]
        for group, row in stats.items():
            cells = "".join(f"{row[c]:>16,}" if c in row else f"{'':>16}" for c in columns)
            lines.append(f"{group:<{width}}{cells}")
        lines.append("")
        for reason, count in report.get("dropped", {}).items():
            lines.append(f"left out by convention: {count:,} images ({reason})")
        return lines

    def note_lines(self, report: Mapping[str, Any]) -> list[str]:
        """The expected figures the copy was compared with."""
        if not report["expected"]:
            return []
        source = report["expected_source"]
        lines = [f"expected counts ({source}):"]
        approximate = set(report["approximate"]) if source == "official" else set()
        for group, want in report["expected"].items():
            items = ", ".join(f"{k} {v:,}" + (" (approx.)" if f"{group}.{k}" in approximate else "")
                              for k, v in want.items())
            lines.append(f"  {group}: {items}")
        return lines + [""]
