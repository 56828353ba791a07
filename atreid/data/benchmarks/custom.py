"""Your own dataset: images listed in a CSV file (``custom``).

Layout (any folder, imported like a benchmark release)::

    atreid.csv             one row per image: path, person, camera, modality, clothes, split
    atreid_counts.json     optional: the counts the verification compares with
    <the images>           anywhere below the folder, at the paths atreid.csv gives

Columns of ``atreid.csv`` (a header row names them, in any order; other columns are
ignored):

``path``      the image, relative to the folder holding atreid.csv (no ``..``, not absolute)
``person``    whole number >= 0, the identity
``camera``    whole number >= 0
``modality``  ``rgb`` or ``ir``
``clothes``   whole number >= 0 per person, or ``-1`` / empty when unknown
``split``     ``train``, ``query`` or ``gallery``; a person is in train or in the test
              splits (query, gallery), never both

The evaluation scores the protocol family the dataset chooses by name
(``data.benchmarks.custom.protocol``: ``standard``, ``cross_modality`` or
``clothes_changing``, see :data:`atreid.data.protocols.PROTOCOL_FAMILIES`); the index
step checks that the chosen family finds queries and a gallery, and records it in the
verification report. Every problem stops the step with one line naming the file (and
line) and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import pandas as pd

from atreid.data.benchmarks.base import INDEX_COLUMNS, STAT_FIELDS, Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import DEFAULT_FAMILY, BenchmarkProtocols, protocol_family, select
from atreid.errors import AtreidError

CSV_NAME = "atreid.csv"
COUNTS_NAME = "atreid_counts.json"
SPLITS: tuple[str, ...] = ("train", "query", "gallery")
TEST_SPLITS: tuple[str, ...] = ("query", "gallery")
MODALITIES: tuple[str, ...] = ("rgb", "ir")
PROTOCOL_KEY = "data.benchmarks.custom.protocol"
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_INT_RE = re.compile(r"^[+-]?\d+$")


def _line(position: int) -> int:
    """The CSV line of data row ``position`` (line 1 is the header)."""
    return position + 2


def _and_more(count: int) -> str:
    return f" (and {count - 1} more row{'s' if count > 2 else ''})" if count > 1 else ""


def _unsafe(path: str) -> str | None:
    """Why ``path`` may not be used (None: a safe relative path)."""
    if not path:
        return "is empty"
    if path.startswith("/") or _DRIVE_RE.match(path):
        return "is absolute"
    if ".." in PurePosixPath(path).parts:
        return "leaves the dataset folder (..)"
    return None


class CsvTable:
    """The rows of ``atreid.csv`` as text, with errors naming the file and the line."""

    def __init__(self, csv: Path) -> None:
        self.csv = csv
        try:
            frame = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AtreidError(f"{csv}: cannot read it as CSV ({reason}); write a header row "
                              f"({', '.join(INDEX_COLUMNS)}) and one row per image") from None
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
        if missing:
            raise AtreidError(f"{csv}: missing column(s) {', '.join(missing)}; the header row must name "
                              f"{', '.join(INDEX_COLUMNS)} (other columns are ignored)")
        if frame.empty:
            raise AtreidError(f"{csv}: lists no images; add one row per image ({', '.join(INDEX_COLUMNS)})")
        self.frame = frame[list(INDEX_COLUMNS)].apply(lambda column: column.str.strip())

    def fail(self, bad: pd.Series, message: str, fix: str) -> None:
        """Raise for the first row flagged in ``bad``: ``<csv>:<line>: <message> (and N more rows); <fix>``.

        ``message`` is formatted with the first bad row's fields (``{path}``, ``{person}``, ...).
        """
        positions = [i for i, flagged in enumerate(bad.to_numpy()) if flagged]
        if positions:
            first = self.frame.iloc[positions[0]].to_dict()
            raise AtreidError(f"{self.csv}:{_line(positions[0])}: {message.format(**first)}"
                              f"{_and_more(len(positions))}; {fix}")

    def integers(self, column: str, minimum: int, *, empty: int | None = None) -> pd.Series:
        """``column`` as int64, refusing anything but whole numbers >= ``minimum``."""
        values = self.frame[column]
        if empty is not None:
            values = values.mask(values == "", str(empty))
        self.fail(~values.str.match(_INT_RE), column + " {" + column + "!r} is not a whole number",
                  f"{column} ids must be whole numbers" + (" (-1 or empty: unknown)" if empty is not None else ""))
        numbers = values.astype("int64")
        self.fail(numbers < minimum, f"{column} {{{column}}} is below {minimum}",
                  f"{column} ids must be {minimum} or more")
        return numbers


@register_benchmark
class CustomDataset(Benchmark):
    """Your own dataset, read from ``atreid.csv`` (see the module docstring).

    Args:
        protocol: the protocol family the evaluation scores (``standard``,
            ``cross_modality`` or ``clothes_changing``); checked against the rows.
    """

    name = "custom"
    # The family its index step records (verification.json) replaces these for the evaluation.
    protocols = protocol_family(DEFAULT_FAMILY, "custom")
    title = "Custom dataset"
    reference = "your own data, listed in atreid.csv"
    top_folders = ("custom",)
    required = (CSV_NAME,)
    layout = (f"<your folder>/{CSV_NAME} (columns {', '.join(INDEX_COLUMNS)}) and the images it lists, "
              "at paths relative to that folder")
    splits = SPLITS
    stat_groups = {"test": TEST_SPLITS}

    def __init__(self, protocol: str = DEFAULT_FAMILY) -> None:
        super().__init__()
        self.protocol = protocol
        self.published: dict[str, dict[str, int]] = {}  # the dataset's own atreid_counts.json

    # ---- parsing ----------------------------------------------------------------------
    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        try:
            spec = protocol_family(self.protocol, self.name)
        except AtreidError as exc:
            raise AtreidError(f"{PROTOCOL_KEY}: {exc}; fix it in params.yaml") from None
        table = CsvTable(root / CSV_NAME)
        index = self.read_rows(table, root)
        self.check_splits(table, index)
        self.check_protocol(table, index, spec)
        counts = root / COUNTS_NAME
        self.published = self.read_counts(counts) if counts.is_file() else {}
        return index.to_dict("records"), []

    def read_rows(self, table: CsvTable, root: Path) -> pd.DataFrame:
        """The typed index rows; refuses unsafe, duplicate and missing paths and bad values."""
        frame = table.frame
        paths = frame["path"].str.replace("\\", "/", regex=False).str.replace(r"^(\./)+", "", regex=True)
        why = paths.map(_unsafe)
        table.fail(why.notna(), "path {path!r} " + (why.dropna().iloc[0] if why.notna().any() else ""),
                   f"write each path relative to the folder holding {CSV_NAME}, without '..'")
        duplicated = paths.duplicated()
        if duplicated.any():
            first = int(duplicated.to_numpy().argmax())
            earlier = int((paths == paths.iloc[first]).to_numpy().argmax())
            table.fail(duplicated, f"path {{path!r}} listed twice (first on line {_line(earlier)})",
                       "list each image once")
        modality = frame["modality"].str.lower()
        table.fail(~modality.isin(MODALITIES), "modality {modality!r} unknown",
                   f"write {' or '.join(MODALITIES)}")
        split = frame["split"].str.lower()
        table.fail(~split.isin(SPLITS), "split {split!r} unknown", f"write {', '.join(SPLITS)}")
        index = pd.DataFrame({
            "path": paths,
            "person": table.integers("person", 0),
            "camera": table.integers("camera", 0),
            "modality": modality,
            "clothes": table.integers("clothes", -1, empty=-1),
            "split": split,
        })
        missing = [i for i, rel in enumerate(paths) if not (root / rel).is_file()]
        if missing:
            first = missing[0]
            raise AtreidError(f"{table.csv}: {len(missing)} listed image(s) not found, the first "
                              f"{root / paths.iloc[first]} (line {_line(first)}); fix the paths (relative to "
                              f"{root}) or remove those rows")
        return index

    def check_splits(self, table: CsvTable, index: pd.DataFrame) -> None:
        """Train and test persons apart; a query and a gallery to evaluate."""
        train = set(index.loc[index["split"] == "train", "person"])
        testing = index["split"].isin(TEST_SPLITS)
        both = testing & index["person"].isin(train)
        if both.any():
            shared = sorted(set(index.loc[both, "person"]))
            table.fail(both, f"person {{person}} is in train and in {{split}} ({len(shared)} such "
                             f"person{'s' if len(shared) > 1 else ''})",
                       "a person is in train or in the test splits (query, gallery), never both: "
                       "move their rows or give them another id")
        for split in TEST_SPLITS:
            if not (index["split"] == split).any():
                raise AtreidError(f"{table.csv}: no {split} rows; the evaluation needs query and gallery "
                                  "rows (persons not in train)")

    def check_protocol(self, table: CsvTable, index: pd.DataFrame, spec: BenchmarkProtocols) -> None:
        """Every protocol of the chosen family finds queries and a gallery; clothes-changing
        protocols need the clothes of every image they compare."""
        clothes_rules = any(p.rule.clothes != "any" for p in spec.protocols)
        for protocol in spec.protocols:
            for role, selection in (("queries", protocol.query), ("gallery images", protocol.gallery)):
                chosen = select(index, selection)
                if chosen.empty:
                    wanted = ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in selection.items())
                    raise AtreidError(f"{table.csv}: protocol {self.protocol} ({protocol.name}) finds no "
                                      f"{role} ({wanted}); add such rows or choose another protocol "
                                      f"({PROTOCOL_KEY})")
                if clothes_rules:
                    unknown = pd.Series(False, index=index.index)
                    unknown[chosen.index] = chosen["clothes"] < 0
                    table.fail(unknown, f"clothes unknown (-1) for {{path!r}}, one of protocol "
                                        f"{self.protocol}'s {role}",
                               f"give every query and gallery image its clothes id, or choose protocol "
                               f"standard ({PROTOCOL_KEY})")

    def read_counts(self, path: Path) -> dict[str, dict[str, int]]:
        """``{group: {field: count}}`` of the dataset's own counts file."""
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AtreidError(f"{path}: cannot read it as JSON ({exc}); write "
                              '{"train": {"ids": 10, "images": 200}, ...} or delete it') from None
        groups = [*self.groups(), "all"]
        if not isinstance(counts, Mapping):
            raise AtreidError(f"{path}: expected {{group: {{field: count}}}}, e.g. "
                              '{"train": {"ids": 10, "images": 200}}; fix or delete it')
        for group, fields in counts.items():
            if group not in groups:
                raise AtreidError(f"{path}: unknown group {group!r}; valid: {', '.join(groups)}")
            if not isinstance(fields, Mapping):
                raise AtreidError(f"{path}: {group}: expected {{field: count}}, e.g. {{\"images\": 200}}")
            for field, value in fields.items():
                if field not in STAT_FIELDS:
                    raise AtreidError(f"{path}: {group}.{field}: unknown field; valid: {', '.join(STAT_FIELDS)}")
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise AtreidError(f"{path}: {group}.{field}: {value!r} is not a count (a whole number >= 0)")
        return {group: dict(fields) for group, fields in counts.items()}

    # ---- verification -----------------------------------------------------------------
    def verify(self, images_dir: str | Path, *, expected: str = "none", decode_workers: int = 0
               ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """As :meth:`Benchmark.verify`; ``expected="official"`` compares with the
        dataset's own ``atreid_counts.json``. The report records the protocol family."""
        if expected == "official":
            counts = self.find_root(images_dir) / COUNTS_NAME
            if not counts.is_file():
                raise AtreidError(f"{counts}: missing; data.benchmarks.custom.expected_counts is 'official' "
                                  f"(the counts your dataset states in {COUNTS_NAME}): write that file or set "
                                  "expected_counts: none")
        index, report = super().verify(images_dir, expected=expected, decode_workers=decode_workers)
        report["protocol"] = self.protocol
        return index, report
