"""results/table.csv: one row per variant, R1/mAP per protocol, tidy for pandas.

Columns: ``variant``, ``synthetic`` (True when the numbers come from the embedded
synthetic data), then ``<protocol>_<metric>`` for AT-USTC (``Any-Time_R1``, ``DT-ST_mAP``,
...) and ``<benchmark>:<key>`` for the cross-dataset benchmarks (``market1501:R1``,
``ltcc:mAP``: each benchmark's main protocol), plus ``avg5:R1`` / ``avg5:mAP``, the mean
over the paper's five cross-dataset benchmarks (:data:`PAPER_FIVE`) when a variant has
all five. All metrics are percentages. With ``paper=True`` the published numbers of the
same method (matched by its SAID/MoAE/HDW switches) are added as ``paper:<column>`` and
``diff:<column>``.

A last row, ``chance``, holds what a uniformly random ranking scores in expectation on
each protocol (``chance_summary`` of the metrics files: it depends only on the test
lists and removal rules, not on the model). "Well above chance" is measured against it.
"""

from __future__ import annotations

import json
from importlib import resources
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd

from atreid.constants import CHANCE_ROW
from atreid.errors import AtreidError


# The paper's cross-dataset table: its five benchmarks (our registry names) and the
# columns of paper_cross_dataset.csv they correspond to.
PAPER_FIVE: tuple[str, ...] = ("market1501", "cuhk03", "sysu_mm01", "prcc", "ltcc")
AVERAGE = "avg5"
PAPER_CROSS_COLUMNS: dict[str, str] = {"Market1501": "market1501", "CUHK03": "cuhk03", "SYSU-MM01": "sysu_mm01",
                                       "PRCC": "prcc", "LTCC": "ltcc", "Avg": AVERAGE}


def _column(benchmark: str, key: str) -> str:
    return key if benchmark == "atustc" else f"{benchmark}:{key}"


def _number(value: Any) -> float:
    """A metric rounded to 2 decimals; a missing one (None: no valid query) is NaN."""
    return float("nan") if value is None else round(float(value), 2)


def add_average(row: dict[str, Any], benchmarks: tuple[str, ...] = PAPER_FIVE, name: str = AVERAGE) -> None:
    """``<name>:R1`` / ``<name>:mAP``: the mean over ``benchmarks`` when the row has them all."""
    for metric in ("R1", "mAP"):
        values = [row.get(_column(b, metric)) for b in benchmarks]
        if all(v is not None for v in values):
            row[_column(name, metric)] = round(sum(values) / len(values), 2)


def load_metrics(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AtreidError(f"{path}: unreadable metrics file ({exc}); re-run its evaluation job") from None


def paper_rows() -> pd.DataFrame:
    """The published AT-USTC and cross-dataset numbers (shipped with the package)."""
    frames = []
    for name in ("paper_results.csv", "paper_cross_dataset.csv"):
        text = resources.files("atreid").joinpath("reference", name).read_text()
        frames.append(pd.read_csv(StringIO(text)))
    return pd.concat(frames, ignore_index=True)


def _paper_lookup(settings: dict[str, Any]) -> dict[str, float]:
    """Published numbers for the method with this variant's switches (empty if none)."""
    published = paper_rows()
    rows = published[published["table"].str.startswith("ablation")]
    rows = rows[(rows["said"] == int(settings["said"])) & (rows["moae"] == int(settings["moae"]))
                & (rows["hdw"] == int(settings["hdw"]))]
    if settings.get("ncls", 6) != 6:
        return {}
    out: dict[str, float] = {}
    for _, row in rows.iterrows():
        for key, value in row.items():
            if key in ("table", "method", "said", "moae", "hdw", "metric") or pd.isna(value):
                continue
            if row["table"] == "ablation_atustc":
                out[f"{key}_{row['metric']}"] = float(value)
            else:
                out[f"{PAPER_CROSS_COLUMNS.get(key, key.lower())}:{row['metric']}"] = float(value)
    return out


def build_table(metric_files: list[Path], *, paper: bool = False) -> pd.DataFrame:
    """Gather ``results/metrics/{variant}/{benchmark}.json`` files into one row per variant."""
    rows: dict[str, dict[str, Any]] = {}
    published: dict[str, dict[str, float]] = {}
    order: list[str] = []
    chance: dict[str, Any] = {"variant": CHANCE_ROW, "synthetic": False}
    for path in metric_files:
        metrics = load_metrics(path)
        variant = metrics["variant"]
        for key, value in metrics.get("chance_summary", {}).items():
            chance[_column(metrics["benchmark"], key)] = _number(value)
        chance["synthetic"] = bool(chance["synthetic"] or metrics.get("synthetic", False))
        if variant not in rows:
            rows[variant] = {"variant": variant, "synthetic": False}
            order.append(variant)
        row = rows[variant]
        row["synthetic"] = bool(row["synthetic"] or metrics.get("synthetic", False))
        for key, value in metrics["summary"].items():
            row[_column(metrics["benchmark"], key)] = _number(value)
        if paper:
            published[variant] = _paper_lookup(metrics["settings"])
    for variant in order:
        add_average(rows[variant])
    if paper:
        for variant in order:
            row = rows[variant]
            for column in [c for c in row if c not in ("variant", "synthetic")]:
                if column in published[variant]:
                    row[f"paper:{column}"] = published[variant][column]
                    row[f"diff:{column}"] = round(row[column] - published[variant][column], 2)
    table = [rows[v] for v in order]
    if any(key not in ("variant", "synthetic") for key in chance):  # some file had chance levels
        add_average(chance)
        table.append(chance)
    return pd.DataFrame(table)


def table_markdown(table: pd.DataFrame) -> str:
    """A Markdown rendering of the table (synthetic results clearly marked)."""
    if table.empty:
        return "No results.\n"
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    lines = [header, rule]
    for _, row in table.iterrows():
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    note = ""
    if table["synthetic"].any():
        note = ("\n> Results marked `synthetic: True` come from the embedded synthetic dataset and a tiny "
                "model: they test the pipeline, they are not comparable with the paper.\n")
    return "\n".join(lines) + "\n" + note
