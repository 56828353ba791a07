"""Shared base of the cross-dataset benchmark adapters.

An adapter reads one benchmark's *real release layout* (what the authors distribute,
never a reorganised copy) into the common index, one row per image:

``path``      relative to the dataset root (the folder holding the release's top-level
              entries, e.g. ``Market-1501-v15.09.15/``)
``person``    int identity (unique within the index)
``camera``    int camera id (IR cameras numbered apart from RGB ones where needed)
``modality``  ``"rgb"`` or ``"ir"``
``clothes``   int clothes id per person, ``-1`` when the benchmark has no clothes labels
``split``     ``"train"``, ``"val"``, ``"query"``, ``"gallery"``, ``"test"``, ...

plus adapter-specific columns a protocol needs (``extra_columns``). The base class
offers what every adapter shares, so adapters stay a regex and a parse method:

* :meth:`BenchmarkAdapter.find_root` / :meth:`check_required` - locate the release
  inside ``data/<name>/images`` and fail early, naming the missing file and the fix;
* :meth:`BenchmarkAdapter.build_index` - parse, validate and sort the index;
* :meth:`BenchmarkAdapter.verify` - counts per split against the published statistics
  (soft: differences beyond a tolerance are reported, never fatal) or, for synthetic
  miniatures, against the generator's own counts; optional decoding of every image;
* :meth:`BenchmarkAdapter.format_report` - the summary table.

Hard problems (missing folders/files, malformed names, unreadable list files, corrupt
images) raise :class:`~atreid.errors.AtreidError` naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pandas as pd

from atreid.errors import AtreidError

INDEX_COLUMNS: tuple[str, ...] = ("path", "person", "camera", "modality", "clothes", "split")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
STAT_FIELDS: tuple[str, ...] = ("ids", "images", "cameras", "rgb_images", "ir_images", "outfits",
                                "person_cameras")
SYNTHETIC_COUNTS = "synthetic_counts.json"
DEFAULT_TOLERANCE = 0.02       # relative difference reported for exact published figures
APPROX_TOLERANCE = 0.10        # for figures protocols.md marks "(approx.)"
SEARCH_DEPTH = 3               # folder levels searched for a release wrapped in other folders


def list_files(folder: Path, root: Path) -> list[str]:
    """Every file under ``folder`` as a path relative to ``root`` (POSIX), sorted.

    Sorting makes the index (and every seeded draw made from it) independent of the
    filesystem's listing order.
    """
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def is_image(rel: str) -> bool:
    return Path(rel).suffix.lower() in IMAGE_SUFFIXES


def read_id_list(path: Path) -> list[int]:
    """Integer ids separated by commas, spaces or newlines (SYSU/LLCM/LTCC id files)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AtreidError(f"{path}: cannot read id list ({exc}); re-extract the dataset") from None
    tokens = [t for t in re.split(r"[\s,]+", text.strip()) if t]
    try:
        return [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise AtreidError(f"{path}: {bad!r} is not an integer id; the file must list ids separated by "
                          "commas or newlines (re-extract the dataset)") from None


def read_path_list(path: Path) -> list[tuple[str, int | None]]:
    """``<relative path> [label]`` lines (RegDB idx, MSMT17 and LLCM lists); blank lines skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AtreidError(f"{path}: cannot read list file ({exc}); re-extract the dataset") from None
    entries: list[tuple[str, int | None]] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        label: int | None = None
        if len(parts) > 1:
            try:
                label = int(parts[1])
            except ValueError:
                raise AtreidError(f"{path}:{number}: label {parts[1]!r} is not an integer; expected "
                                  "'<image path> <label>' lines (re-extract the dataset)") from None
        rel = parts[0].replace("\\", "/")
        while rel.startswith("./"):
            rel = rel[2:]
        entries.append((rel.lstrip("/"), label))
    return entries


class BenchmarkAdapter:
    """One benchmark's release layout -> the common index (subclass per benchmark).

    Subclasses set the class attributes and implement :meth:`parse`.

    Attributes:
        name: registry name (``market1501``, ``cuhk03``, ...).
        title: human-readable name used in reports.
        reference: citation of the dataset paper.
        top_folders: names the release unpacks to (first = the official one, used by the
            synthetic miniature); other spellings users commonly have are accepted.
        subdir: path of the dataset root below the top folder ("" = the top folder).
        required: entries that must exist below the root (a trailing ``/`` = folder).
        layout: one line describing the expected layout, quoted in error messages.
        splits: split values in report order.
        stat_groups: extra report rows: name -> splits they pool.
        published: published statistics: group -> {field: value}.
        approximate: (group, field) pairs of ``published`` that are approximate.
        extra_columns: adapter-specific index columns.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    top_folders: ClassVar[tuple[str, ...]] = ()
    subdir: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()
    layout: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "query", "gallery")
    stat_groups: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    published: ClassVar[Mapping[str, Mapping[str, int]]] = {}
    approximate: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    extra_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        # Images a release ships but the index leaves out by convention (e.g. Market-1501's
        # junk id -1), filled by parse() and shown in the report: reason -> count.
        self.dropped: dict[str, int] = {}

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

    def find_root(self, images_dir: str | Path) -> Path:
        """The dataset root inside ``images_dir`` (where every required entry exists).

        Tries the release's usual top folders first, then any folder up to
        :data:`SEARCH_DEPTH` levels down (a copy wrapped in other folders still works).
        """
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise AtreidError(f"{images_dir}: folder not found; run the prepare step for {self.name} "
                              f"(snakemake {images_dir}) or check data.benchmarks.{self.name}.source")
        candidates = self.root_candidates(images_dir)
        for candidate in candidates:
            if candidate.is_dir() and not self.missing_required(candidate):
                return candidate
        found = self._search(images_dir)
        if found is not None:
            return found
        # Report against the most plausible candidate: the first existing one.
        existing = [c for c in candidates if c.is_dir()]
        best = existing[0] if existing else candidates[0]
        self.check_required(best)
        return best  # pragma: no cover - check_required raised

    def _search(self, images_dir: Path) -> Path | None:
        """Breadth-first search (sorted, bounded depth) for a folder holding the release."""
        level = [images_dir]
        for _ in range(SEARCH_DEPTH):
            following = []
            for folder in level:
                for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
                    candidate = child / self.subdir if self.subdir else child
                    if candidate.is_dir() and not self.missing_required(candidate):
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
        """Rows of the index (dicts with INDEX_COLUMNS + extra_columns) and soft warnings."""
        raise NotImplementedError

    def malformed(self, root: Path, rel: str, pattern: str) -> AtreidError:
        """The error for a file whose name does not follow the release's naming scheme."""
        return AtreidError(f"{root / rel}: file name does not match {self.title}'s {pattern}; "
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

    def build_index(self, images_dir: str | Path) -> tuple[pd.DataFrame, Path, list[str]]:
        """Parse the release in ``images_dir``; return (index sorted by path, root, warnings)."""
        root = self.find_root(images_dir)
        rows, warnings = self.parse(root)
        columns = list(INDEX_COLUMNS) + list(self.extra_columns)
        index = pd.DataFrame(rows, columns=columns)
        if index.empty:
            raise AtreidError(f"{root}: no images found for {self.title}; expected layout {self.layout}")
        duplicated = index["path"][index["path"].duplicated()]
        if len(duplicated):
            raise AtreidError(f"{root / duplicated.iloc[0]}: listed twice by {self.title}'s split files; "
                              "the list files are inconsistent, re-extract the dataset")
        bad_modality = set(index["modality"]) - {"rgb", "ir"}
        if bad_modality:  # pragma: no cover - adapter bug guard
            raise AssertionError(f"{self.name}: invalid modalities {bad_modality}")
        for column in ("person", "camera", "clothes"):
            index[column] = index[column].astype("int64")
        index = index.sort_values("path", kind="stable").reset_index(drop=True)
        return index, root, warnings

    # ---- verification -----------------------------------------------------------------
    def groups(self) -> dict[str, tuple[str, ...]]:
        groups = {split: (split,) for split in self.splits}
        groups.update(self.stat_groups)
        return groups

    def group_rows(self, index: pd.DataFrame, name: str) -> pd.DataFrame:
        """Rows of one report group (a split, a pooled group, or ``all``)."""
        if name == "all":
            return index
        return index[index["split"].isin(self.groups()[name])]

    def statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Counts per report group: ids, images, cameras, RGB/IR images, outfits, (person, camera)."""
        result = {}
        for name in [*self.groups(), "all"]:
            frame = self.group_rows(index, name)
            known = frame[frame["clothes"] >= 0]
            result[name] = {
                "ids": int(frame["person"].nunique()),
                "images": int(len(frame)),
                "cameras": int(frame["camera"].nunique()),
                "rgb_images": int((frame["modality"] == "rgb").sum()),
                "ir_images": int((frame["modality"] == "ir").sum()),
                "outfits": int(known[["person", "clothes"]].drop_duplicates().shape[0]),
                "person_cameras": int(frame[["person", "camera"]].drop_duplicates().shape[0]),
            }
        return result

    def extra_statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]:
        """Adapter-specific counts merged into the statistics (override when needed)."""
        return {}

    def compare(self, statistics: Mapping[str, Mapping[str, int]], expected: Mapping[str, Mapping[str, int]],
                *, exact: bool) -> list[dict[str, Any]]:
        """Differences beyond the tolerance (exact figures 2 %, approximate ones 10 %; synthetic 0)."""
        differences = []
        for group, fields in expected.items():
            for field, want in fields.items():
                have = statistics.get(group, {}).get(field)
                if have is None:
                    continue
                tolerance = 0.0 if exact else (APPROX_TOLERANCE if (group, field) in self.approximate
                                               else DEFAULT_TOLERANCE)
                rel = abs(have - want) / max(abs(want), 1)
                if rel > tolerance:
                    differences.append({"group": group, "field": field, "expected": want, "actual": have,
                                        "relative_difference": round(rel, 4), "tolerance": tolerance})
        return differences

    def verify(self, images_dir: str | Path, *, expected: str = "official", decode_workers: int = 0
               ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Parse and check a copy; return (index, report).

        Args:
            images_dir: ``data/<name>/images`` (holding the release's top folder).
            expected: ``"official"`` (the published statistics), ``"synthetic"`` (the
                miniature generator's ``synthetic_counts.json``) or ``"none"``.
            decode_workers: decode every image in this many processes (0 = skip).
        """
        images_dir = Path(images_dir)
        index, root, warnings = self.build_index(images_dir)
        if decode_workers > 0:
            from atreid.data.atustc import find_corrupt_images

            corrupt = find_corrupt_images(root, index["path"].tolist(), decode_workers)
            if corrupt:
                first = sorted(corrupt)[0]
                more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
                raise AtreidError(f"{root / first}{more}: unreadable or corrupt image ({corrupt[first]}); "
                                  "re-extract the dataset or replace the file")
        statistics = self.statistics(index)
        for group, fields in self.extra_statistics(index).items():
            statistics.setdefault(group, {}).update(fields)
        if expected == "synthetic":
            counts_file = images_dir / SYNTHETIC_COUNTS
            if not counts_file.is_file():
                raise AtreidError(f"{counts_file}: missing; data.benchmarks.{self.name}.expected_counts is "
                                  "'synthetic' but this copy was not generated here; set it to 'official' or 'none'")
            want = json.loads(counts_file.read_text())["statistics"]
        elif expected == "official":
            want = {g: dict(f) for g, f in self.published.items()}
        elif expected == "none":
            want = {}
        else:
            raise AtreidError(f"expected counts {expected!r} unknown; valid: official, synthetic, none")
        differences = self.compare(statistics, want, exact=expected == "synthetic")
        for diff in differences:
            warnings.append(f"{diff['group']} {diff['field']}: {diff['actual']:,} "
                            f"(expected {diff['expected']:,}, tolerance {diff['tolerance']:.0%})")
        if expected == "official" and not self.published:
            warnings.append(f"no published statistics recorded for {self.title}; counts not compared")
        report = {
            "benchmark": self.name,
            "title": self.title,
            "root": str(root),
            "expected_source": expected,
            "statistics": statistics,
            "expected": want,
            "approximate": sorted(f"{g}.{f}" for g, f in self.approximate),
            "count_differences": differences,
            "warnings": warnings,
            "dropped": dict(self.dropped),
            "decoded": decode_workers > 0,
            "ok": True,
        }
        return index, report

    def format_report(self, report: Mapping[str, Any]) -> str:
        """The summary table (torchreid's ``show_summary``) plus expected figures and warnings."""
        stats = report["statistics"]
        fields = [f for f in STAT_FIELDS if any(f in row for row in stats.values())]
        extra = sorted({f for row in stats.values() for f in row} - set(STAT_FIELDS))
        columns = fields + extra
        width = max(12, *(len(g) + 2 for g in stats))
        header = f"{'group':<{width}}" + "".join(f"{c:>16}" for c in columns)
        lines = [f"{report['title']} verification: {report['root']}", "", header, "-" * len(header)]
        for group, row in stats.items():
            cells = "".join(f"{row[c]:>16,}" if c in row else f"{'':>16}" for c in columns)
            lines.append(f"{group:<{width}}{cells}")
        lines.append("")
        for reason, count in report.get("dropped", {}).items():
            lines.append(f"left out by convention: {count:,} images ({reason})")
        if report["expected"]:
            source = report["expected_source"]
            lines.append(f"expected counts ({source}):")
            approximate = set(report["approximate"]) if source == "official" else set()
            for group, want in report["expected"].items():
                items = ", ".join(f"{k} {v:,}" + (" (approx.)" if f"{group}.{k}" in approximate else "")
                                  for k, v in want.items())
                lines.append(f"  {group}: {items}")
            lines.append("")
        lines += [f"WARNING: {w}" for w in report["warnings"]] or ["no warnings"]
        return "\n".join(lines) + "\n"


TEXT_COLUMNS = ("path", "modality", "split", "train_trials", "test_trials")


def read_benchmark_index(path: str | Path) -> pd.DataFrame:
    """Read ``data/<name>/index.csv`` (clear error when missing); list columns stay text."""
    path = Path(path)
    if not path.is_file():
        raise AtreidError(f"{path}: index not found; run `snakemake {path}` to build it")
    header = pd.read_csv(path, nrows=0).columns
    dtypes = {c: str for c in TEXT_COLUMNS if c in header}
    return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={c: [] for c in header})
