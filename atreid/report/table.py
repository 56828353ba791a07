"""results/table.csv: one row per variant, R1/mAP per protocol (mean ± std over its runs), tidy for pandas.

A variant has several runs (one per seed of ``seeds``; an imported variant one), each
evaluated into its own metrics files. Columns: ``variant``, ``synthetic`` (True when the
numbers come from the embedded synthetic data), ``n`` (the number of runs the row
aggregates), then for every metric the mean over the runs and, beside it,
``<column>:std``, the sample standard deviation (ddof=1) over the runs. With one run the
std is 0.0 (no spread was measured; ``n`` = 1 tells it apart), so the table has no NaN
for it. Metric columns are ``<protocol>_<metric>`` for AT-USTC (``Any-Time_R1``,
``DT-ST_mAP``, ...) and ``<benchmark>:<key>`` for the cross-dataset benchmarks
(``market1501:R1``, ``ltcc:mAP``: each benchmark's main protocol), plus ``avg5:R1`` /
``avg5:mAP``, the mean over the paper's five cross-dataset benchmarks
(:data:`PAPER_FIVE`) computed per run when the run has all five (so its std is the
spread of the runs' averages). With ``eval.rerank`` on, every metric column ``<column>``
of the summary also comes re-ranked as ``<column>@rr`` (``Any-Time_R1@rr``,
``market1501:mAP@rr``, ``avg5:R1@rr``), with its own ``<column>@rr:std``. All metrics are percentages; each run's values are
rounded to 2 decimals before the mean and std, which are rounded to 2 decimals too (one
run gives exactly its own numbers). A run without a value in a column (no valid query)
is left out of that column's mean. With ``paper=True`` the published numbers of the same
method (matched by its SAID/MoAE/HDW switches) are added as ``paper:<column>`` and
``diff:<column>`` (the mean minus the published number).

When a variant was trained on another dataset than AT-USTC (``data.train_on``, recorded in
its model's settings as ``train_on``), a ``trained_on`` column after ``synthetic`` names
each row's training dataset (the chance row: ``-``); a table of AT-USTC-trained variants
only has no such column, as before the setting existed.

A last row, ``chance``, holds what a uniformly random ranking scores in expectation on
each protocol (``chance_summary`` of the metrics files: it depends only on the test
lists and removal rules, not on the model or the seed). It is computed, not measured:
``n`` = 1 and every ``:std`` 0.0. "Well above chance" is measured against it.

:func:`table_markdown` renders each metric cell as ``mean ± std`` (the chance row: its
value alone).
"""

from __future__ import annotations

import json
import statistics
from importlib import resources
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd

from atreid.constants import CHANCE_ROW, SCENARIOS
from atreid.errors import AtreidError
from atreid.eval.bootstrap import percentile_interval
from atreid.eval.rerank_options import RERANK_SUFFIX
from atreid.io import settings_sha256
from atreid.provenance import describe_source
from atreid.report.intervals import variant_replicates


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
    """``<name>:R1`` / ``<name>:mAP`` (and ``<name>:R1@rr`` / ``<name>:mAP@rr`` with re-ranking):
    the mean over ``benchmarks`` when the row has them all."""
    for metric in ("R1", "mAP", "R1@rr", "mAP@rr"):
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


STD_SUFFIX = ":std"
RUNS_COLUMN = "n"
TRAINED_ON_COLUMN = "trained_on"
DEFAULT_TRAINED_ON = "atustc"  # what a model's settings without ``train_on`` were trained on
# Where each row's numbers come from (atreid/provenance.py), the row's last columns: the
# data's sources (training and every evaluated benchmark: ``synthetic`` or
# ``<archive>@<sha256[:12]>``), the training runs' git commits (``+dirty`` when tracked
# files differed from it), the variant's settings (without the seed) and the pretrained
# file. Several different values over a variant's runs are joined with `` / ``.
DATA_SOURCE_COLUMN = "data_source"
PROVENANCE_COLUMNS = (DATA_SOURCE_COLUMN, "commit", "settings_sha256", "pretrained_sha256")
_NOT_METRICS = ("variant", "synthetic", TRAINED_ON_COLUMN, RUNS_COLUMN, *PROVENANCE_COLUMNS)
UNRECORDED = "unrecorded"  # a model or metrics file from before provenance was recorded


def _data_sources(metrics: dict[str, Any]) -> list[str]:
    """The data a metrics file's numbers depend on: the training data, then the benchmark's."""
    provenance = metrics.get("provenance") or {}
    sources = [provenance.get("model", {}).get("data"), provenance.get("data")]
    return [describe_source(s) if s else UNRECORDED for s in sources]


def _run_provenance(metrics: dict[str, Any]) -> dict[str, str]:
    """A metrics file's values of :data:`PROVENANCE_COLUMNS` but the data source."""
    model = (metrics.get("provenance") or {}).get("model") or {}
    code = model.get("code") or {}
    commit = str(code["commit"])[:12] + ("+dirty" if code.get("dirty") else "") if code.get("commit") else UNRECORDED
    settings = {k: v for k, v in metrics.get("settings", {}).items() if k != "seed"}
    pretrained = model.get("pretrained_sha256")
    return {"commit": commit, "settings_sha256": settings_sha256(settings)[:12],
            "pretrained_sha256": str(pretrained)[:12] if pretrained else UNRECORDED}


def _joined(values: list[str]) -> str:
    return " / ".join(dict.fromkeys(values))


def run_key(path: Path, metrics: dict[str, Any]) -> str:
    """What tells the runs of a variant apart: the evaluated model file (one per run)."""
    return str(metrics.get("model") or Path(path).parent)


def aggregate_runs(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Mean and sample std (ddof=1; 0.0 for one run) per column over ``runs`` (column -> value).

    Returns ``{"n": len(runs), column: mean, column + ":std": std, ...}`` in the order the
    columns first appear. NaN values (no valid query) are left out of a column; a column
    with no value at all is NaN (std too).
    """
    columns: list[str] = []
    for run in runs:
        columns.extend(c for c in run if c not in columns)
    out: dict[str, Any] = {RUNS_COLUMN: len(runs)}
    for column in columns:
        values = [run[column] for run in runs if column in run and not pd.isna(run[column])]
        if not values:
            out[column], out[column + STD_SUFFIX] = float("nan"), float("nan")
            continue
        out[column] = round(statistics.fmean(values), 2)
        out[column + STD_SUFFIX] = round(statistics.stdev(values), 2) if len(values) > 1 else 0.0
    return out


def build_table(metric_files: list[Path], *, paper: bool = False, intervals: bool = False,
                resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Gather ``results/metrics/{variant}/{run}/{benchmark}.json`` files into one row per
    variant: the mean ± std over its runs (a run = one evaluated model file).

    With ``intervals``, every metric column also gets ``<column>:lo`` / ``<column>:hi``, the
    95 % person-cluster bootstrap interval of the mean (``resamples`` resamples, ``seed``)
    from the outcomes file beside each metrics file (:mod:`atreid.report.intervals`)."""
    entries = []
    runs: dict[str, dict[str, dict[str, Any]]] = {}  # variant -> run -> column -> value
    synthetic: dict[str, bool] = {}
    trained_on: dict[str, set[str]] = {}
    published: dict[str, dict[str, float]] = {}
    sources: dict[str, list[str]] = {}  # variant -> data sources, in the order met
    provenance: dict[str, dict[str, list[str]]] = {}  # variant -> column -> values over its runs
    chance: dict[str, Any] = {"variant": CHANCE_ROW, "synthetic": False}
    for path in metric_files:
        metrics = load_metrics(path)
        variant = metrics["variant"]
        entries.append((path, metrics, run_key(path, metrics)))
        for key, value in metrics.get("chance_summary", {}).items():
            chance[_column(metrics["benchmark"], key)] = _number(value)
        chance["synthetic"] = bool(chance["synthetic"] or metrics.get("synthetic", False))
        run = runs.setdefault(variant, {}).setdefault(run_key(path, metrics), {})
        synthetic[variant] = bool(synthetic.get(variant, False) or metrics.get("synthetic", False))
        trained_on.setdefault(variant, set()).add(metrics.get("settings", {}).get("train_on", DEFAULT_TRAINED_ON))
        sources.setdefault(variant, []).extend(_data_sources(metrics))
        for column, value in _run_provenance(metrics).items():
            provenance.setdefault(variant, {}).setdefault(column, []).append(value)
        for key, value in metrics["summary"].items():
            run[_column(metrics["benchmark"], key)] = _number(value)
        if paper:
            published[variant] = _paper_lookup(metrics["settings"])
    show_trained_on = any(names != {DEFAULT_TRAINED_ON} for names in trained_on.values())
    replicates = {}
    if intervals:

        replicates = variant_replicates(entries, resamples=resamples, seed=seed)
    table = []
    for variant, by_run in runs.items():
        for run in by_run.values():
            add_average(run)
        trained = {TRAINED_ON_COLUMN: "+".join(sorted(trained_on[variant]))} if show_trained_on else {}
        row = {"variant": variant, "synthetic": synthetic[variant], **trained,
               **aggregate_runs(list(by_run.values()))}
        if paper:
            for column in [c for c in row if c not in _NOT_METRICS and not c.endswith(STD_SUFFIX)]:
                if column in published[variant]:
                    row[f"paper:{column}"] = published[variant][column]
                    row[f"diff:{column}"] = round(row[column] - published[variant][column], 2)
        if intervals:
            row = _with_intervals(row, replicates.get(variant, {}))
        row[DATA_SOURCE_COLUMN] = _joined(sources[variant])
        row.update({column: _joined(values) for column, values in provenance[variant].items()})
        table.append(row)
    if any(key not in ("variant", "synthetic") for key in chance):  # some file had chance levels
        add_average(chance)
        values = {k: v for k, v in chance.items() if k not in ("variant", "synthetic")}
        # Computed once from the test lists: one "run", no spread.
        trained = {TRAINED_ON_COLUMN: "-"} if show_trained_on else {}
        every_source = _joined([s for variant_sources in sources.values() for s in variant_sources])
        table.append({"variant": CHANCE_ROW, "synthetic": chance["synthetic"], **trained, **aggregate_runs([values]),
                      DATA_SOURCE_COLUMN: every_source, **{column: "-" for column in PROVENANCE_COLUMNS[1:]}})
    return pd.DataFrame(table)


LO_SUFFIX, HI_SUFFIX = ":lo", ":hi"


def _with_intervals(row: dict[str, Any], replicates: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """``row`` with ``<column>:lo`` / ``<column>:hi`` after each metric's ``:std`` (avg5: the
    mean of its benchmarks' replicates, as its value is their mean)."""
    by_column = {_column(benchmark, key): reps for (benchmark, key), reps in replicates.items()}
    for metric in ("R1", "mAP", "R1@rr", "mAP@rr"):
        parts = [by_column.get(_column(b, metric)) for b in PAPER_FIVE]
        if all(p is not None for p in parts):
            by_column[_column(AVERAGE, metric)] = sum(parts) / len(parts)
    out: dict[str, Any] = {}
    for column, value in row.items():
        out[column] = value
        if column.endswith(STD_SUFFIX) and column[:-len(STD_SUFFIX)] in by_column:
            lo, hi = percentile_interval(by_column[column[:-len(STD_SUFFIX)]])
            out[column[:-len(STD_SUFFIX)] + LO_SUFFIX] = round(lo, 2)
            out[column[:-len(STD_SUFFIX)] + HI_SUFFIX] = round(hi, 2)
    return out


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The mean columns of ``table`` (neither labels, ``:std``, ``paper:`` nor ``diff:``)."""
    return [c for c in table.columns if c not in _NOT_METRICS and not c.endswith((STD_SUFFIX, LO_SUFFIX, HI_SUFFIX))
            and not c.startswith(("paper:", "diff:"))]


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table_markdown(table: pd.DataFrame) -> str:
    """A Markdown rendering of the table: ``mean ± std`` per metric cell (the chance row,
    computed rather than measured, shows its value alone), synthetic results marked."""
    if table.empty:
        return "No results.\n"
    means = set(metric_columns(table))
    columns = [c for c in table.columns if not (c.endswith((STD_SUFFIX, LO_SUFFIX, HI_SUFFIX))
                                                and c.rsplit(":", 1)[0] in means)
               and c not in PROVENANCE_COLUMNS[1:]]
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, rule]
    for _, row in table.iterrows():
        cells = []
        for column in columns:
            value, std = row[column], row.get(column + STD_SUFFIX)
            lo, hi = row.get(column + LO_SUFFIX), row.get(column + HI_SUFFIX)
            if column in means and row["variant"] != CHANCE_ROW and not pd.isna(value) and not pd.isna(std):
                interval = "" if lo is None or pd.isna(lo) else f" [{lo:.2f}, {hi:.2f}]"
                cells.append(f"{value:.2f}{interval} ± {std:.2f}")
            else:
                cells.append(_cell(value))
        lines.append("| " + " | ".join(cells) + " |")
    runs = "\n> Each cell: mean ± sample std (ddof=1) over the variant's `n` runs (one per seed; 0.00 when n = 1).\n"
    if any(c.endswith(LO_SUFFIX) for c in table.columns):
        runs = ("\n> Each cell: mean [lo, hi] ± std. The mean is over the variant's `n` runs (one per seed); "
                "[lo, hi] its 95 % person-cluster bootstrap interval (test persons resampled, all their queries kept; "
                "the runs as they are); ± std the sample std (ddof=1) over the runs (0.00 when n = 1).\n")
    return "\n".join(lines) + "\n" + runs + synthetic_note(table) + provenance_lines(table)


def synthetic_rows(table: pd.DataFrame) -> list[str]:
    """The measured rows whose numbers come (partly) from synthetic data."""
    rows = table[table["variant"] != CHANCE_ROW]
    return [row["variant"] for _, row in rows.iterrows()
            if row.get("synthetic") is True or "synthetic" in str(row.get(DATA_SOURCE_COLUMN, ""))]


def synthetic_note(table: pd.DataFrame) -> str:
    """A plain sentence naming the rows built from synthetic data ('' when none is)."""
    names = synthetic_rows(table)
    if not names:
        return ""
    return (f"\n> **Synthetic data**: the rows {', '.join(names)} come from the embedded synthetic dataset "
            "(data_source `synthetic`), not from AT-USTC or a real benchmark: they test the pipeline and are not "
            "comparable with the paper.\n")


def provenance_lines(table: pd.DataFrame) -> str:
    """Below the table: what each row was built from (:data:`PROVENANCE_COLUMNS`)."""
    if "commit" not in table.columns:
        return ""
    lines = ["", "Provenance (training commit, settings, pretrained file):", ""]
    for _, row in table[table["variant"] != CHANCE_ROW].iterrows():
        lines.append(f"- {row['variant']}: commit {row['commit']}, settings {row['settings_sha256']}, "
                     f"pretrained {row['pretrained_sha256']}")
    return "\n".join(lines) + "\n"


def summary_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """results/summary.json, the pipeline's declared DVC metric: per variant (the chance
    row left out), Any-Time and each scenario's R1 and mAP, mean and std over the runs,
    and their re-ranked values (``R1@rr``, ``mAP@rr``) when the evaluations re-ranked, so
    that an experiment that turns re-ranking on changes the metric DVC shows. Small on
    purpose, so that `dvc metrics show/diff` and `dvc exp show` fit a terminal; every other
    number is in results/table.csv and the per-benchmark metrics files."""
    summary: dict[str, Any] = {}
    for _, row in table[table["variant"] != CHANCE_ROW].iterrows():
        entry: dict[str, Any] = {}
        for protocol in ("Any-Time", *SCENARIOS):
            for metric in ("R1", "mAP", "R1" + RERANK_SUFFIX, "mAP" + RERANK_SUFFIX):
                column = f"{protocol}_{metric}"
                if column in row and not pd.isna(row[column]):
                    entry.setdefault(protocol, {})[metric] = float(row[column])
                    entry[protocol][f"{metric}_std"] = float(row.get(column + STD_SUFFIX, 0.0))
        summary[row["variant"]] = entry
    return summary


HEADLINE_COLUMNS: tuple[str, ...] = ("Any-Time_R1", "Any-Time_mAP", "DT-ST_R1", "DT-LT_R1", "NT-ST_R1", "NT-LT_R1",
                                     "AD-ST_R1", "AD-LT_R1")


def headline(table: pd.DataFrame, columns: tuple[str, ...] = HEADLINE_COLUMNS) -> str:
    """A terminal-width Markdown excerpt of ``table``: ``variant``, ``n`` and ``columns``
    (those present) as mean ± std, the chance row as its value, then each row's data source
    (and below, in words, which rows come from synthetic data)."""
    columns = tuple(c for c in columns if c in table.columns)
    data = DATA_SOURCE_COLUMN in table.columns
    lines = ["| variant | n | " + " | ".join(c.replace("_", " ") for c in columns) + (" | data" if data else "") + " |",
             "|---|---:|" + "---:|" * len(columns) + ("---|" if data else "")]
    for _, row in table.iterrows():
        cells = []
        for column in columns:
            value, std = row[column], row.get(column + STD_SUFFIX)
            if pd.isna(value):
                cells.append("-")
            elif row["variant"] == CHANCE_ROW or std is None or pd.isna(std):
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{value:.2f} ± {std:.2f}")
        if data:
            cells.append(str(row[DATA_SOURCE_COLUMN]))
        n = row.get("n")
        lines.append(f"| {row['variant']} | {'' if n is None or pd.isna(n) else int(n)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + synthetic_note(table)
