"""Paired comparisons of variants: is B better than A on the same test queries, and where?

Each side is one run (a ``results/metrics/{variant}/{run}`` folder) or several runs of a
variant (its seeds). For every benchmark both sides were evaluated on, and every table cell
(AT-USTC: Any-Time and the six scenarios; a cross-dataset benchmark: its main protocol),
the difference ``B - A`` of R1 and mAP gets a 95 % interval from a paired bootstrap:

* persons: each resample draws the test persons with replacement ONCE and reweights both
  sides' queries with the same draw (:mod:`atreid.report.intervals`), so what the two
  models have in common (hard persons, easy persons) cancels out of the difference;
* seeds, when a side has several runs: the same resample also draws that side's runs with
  replacement (independently for each side) and averages the drawn runs' replicates
  (:func:`atreid.eval.bootstrap.seed_replicates`). The two sources of variation are thus
  combined by nesting: a replicate is "another draw of training seeds, evaluated on another
  draw of test persons", and the percentile interval of the differences covers both. With
  one run per side only the persons vary.

Pairing needs the same queries: two sides whose outcomes differ in which queries (and
persons) were scored, or whose metrics name different data sources, are refused.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atreid.errors import AtreidError
from atreid.eval.bootstrap import RESAMPLES, percentile_interval, seed_replicates
from atreid.eval.outcomes import METRICS, OUTCOMES_SUFFIX
from atreid.report.intervals import SEED, RunOutcomes, benchmark_counts, cell_replicates, load_run_outcomes


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a name and its runs (benchmark -> metrics file, per run)."""
    name: str
    runs: list[dict[str, Path]]


def _run_files(folder: Path) -> dict[str, Path]:
    return {p.name[:-len(".json")]: p for p in sorted(folder.glob("*.json"))
            if (folder / (p.name[:-len(".json")] + OUTCOMES_SUFFIX)).is_file()}


def load_side(spec: str) -> Side:
    """A side from ``spec``: a run folder, a variant folder (every run folder in it) or
    run folders joined with ``,`` (the pipeline names each run of a variant)."""
    folders = [Path(part) for part in spec.split(",") if part]
    runs = []
    for folder in folders:
        if not folder.is_dir():
            raise AtreidError(f"{folder}: no such run folder; give results/metrics/<variant>/<run> "
                              "or results/metrics/<variant>")
        files = _run_files(folder)
        if files:
            runs.append(files)
        else:  # a variant folder: its runs
            runs.extend(f for f in (_run_files(sub) for sub in sorted(folder.iterdir()) if sub.is_dir()) if f)
    if not runs:
        raise AtreidError(f"{spec}: no metrics file with its .outcomes.npz beside it; "
                          "evaluate the run first (snakemake results/table.csv)")
    first = next(iter(runs[0].values()))
    try:
        name = json.loads(first.read_text())["variant"]
    except (OSError, ValueError, KeyError):
        raise AtreidError(f"{first}: unreadable metrics file; re-run its evaluation") from None
    if len(folders) == 1 and len(runs) == 1:
        name = f"{name} ({folders[0].name})"
    return Side(name, runs)


def _cell_label(benchmark: str, key: str) -> tuple[str, str, str]:
    """(cell, metric, ranking) of a summary key: ``DT-ST_R1`` -> (DT-ST, R1), ``mAP@rr`` -> (benchmark, mAP, rr)."""
    ranking = ""
    if key.endswith("@rr"):
        key, ranking = key[:-3], " (re-ranked)"
    cell, _, metric = key.rpartition("_")
    return (cell if benchmark == "atustc" else benchmark) + ranking, metric, ranking


def _check_pairable(a: str, b: str, benchmark: str, runs: list[RunOutcomes]) -> None:
    sources = sorted({r.data_source for r in runs})
    if len(sources) > 1:
        raise AtreidError(f"cannot pair {a} and {b} on {benchmark}: evaluated on different data sources "
                          f"({' vs '.join(sources)})")
    prints = sorted({r.outcomes.meta["queries_sha256"][:12] for r in runs})
    if len(prints) > 1:
        raise AtreidError(f"cannot pair {a} and {b} on {benchmark}: evaluated on different queries "
                          f"(queries_sha256 {' vs '.join(prints)}); compare runs of the same test data and protocols")


def compare_sides(reference: Side, other: Side, *, resamples: int = RESAMPLES, seed: int = SEED
                  ) -> list[dict[str, Any]]:
    """One row per (benchmark, cell, metric): both sides' means, ``diff`` = other - reference and
    its interval ``lo``/``hi`` (percent points)."""
    # start-up: pandas, pyarrow loaded only when this runs
    from atreid.report.table import load_metrics

    benchmarks = [b for b in reference.runs[0] if all(b in run for run in reference.runs + other.runs)]
    if not benchmarks:
        raise AtreidError(f"{reference.name} and {other.name} have no evaluated benchmark in common")
    rows = []
    for benchmark in benchmarks:
        loaded = {}
        for side in (reference, other):
            loaded[side.name] = [load_run_outcomes(run[benchmark], load_metrics(run[benchmark]), str(i))
                                 for i, run in enumerate(side.runs)]
        everything = loaded[reference.name] + loaded[other.name]
        _check_pairable(reference.name, other.name, benchmark, everything)
        persons, counts = benchmark_counts(everything, benchmark, resamples=resamples, seed=seed)
        per_side = {name: [cell_replicates(r.outcomes, persons, counts) for r in runs]
                    for name, runs in loaded.items()}
        rng = np.random.default_rng([seed, zlib.crc32(benchmark.encode()), 1])
        for key in per_side[reference.name][0]:
            points, draws = {}, {}
            for name, runs in per_side.items():
                values = [run[key] for run in runs if run[key][0] is not None]
                if not values:
                    break
                points[name] = float(np.mean([v[0] for v in values]))
                draws[name] = seed_replicates(np.stack([v[1] for v in values]), rng)
            if len(points) < 2:
                continue  # a cell without a valid query on one side: nothing to compare
            lo, hi = percentile_interval(draws[other.name] - draws[reference.name])
            cell, metric, _ = _cell_label(benchmark, key)
            rows.append({"benchmark": benchmark, "cell": cell, "metric": metric,
                         "reference": points[reference.name], "other": points[other.name],
                         "diff": points[other.name] - points[reference.name], "lo": lo, "hi": hi,
                         "runs": (len(per_side[reference.name]), len(per_side[other.name]))})
    return rows


def comparison_markdown(reference: Side, others: list[Side], *, resamples: int = RESAMPLES, seed: int = SEED) -> str:
    """Every side of ``others`` against ``reference``: one Markdown table each."""
    lines = [f"# Paired comparisons against {reference.name}", "",
             f"Each row: the difference other - {reference.name} (percent points) with its 95 % paired "
             f"person-cluster bootstrap interval ({resamples} resamples, seed {seed}): every resample draws the test "
             "persons with replacement once for both sides (all their queries kept) and, where a side has several "
             "runs (seeds), also draws that side's runs with replacement, so the interval covers both the test "
             "persons and the training seeds. An interval that excludes 0 is marked `*`. It says nothing about other "
             "datasets, other galleries or other training recipes.", ""]
    for other in others:
        rows = compare_sides(reference, other, resamples=resamples, seed=seed)
        n_ref, n_other = rows[0]["runs"] if rows else (len(reference.runs), len(other.runs))
        lines += [f"## {other.name} vs {reference.name}", "",
                  f"Runs: {n_other} vs {n_ref}.", "",
                  "| benchmark | cell | " + " | ".join(f"{m} {reference.name} | {m} {other.name} | Δ{m} [95 % CI]"
                                                         for m in METRICS) + " |",
                  "|---|---|" + "---:|---:|---:|" * len(METRICS)]
        by_cell: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for row in rows:
            by_cell.setdefault((row["benchmark"], row["cell"]), {})[row["metric"]] = row
        for (benchmark, cell), metrics in by_cell.items():
            cells = []
            for metric in METRICS:
                row = metrics.get(metric)
                if row is None:
                    cells += ["-", "-", "-"]
                    continue
                mark = " *" if row["lo"] > 0 or row["hi"] < 0 else ""
                cells += [f"{row['reference']:.2f}", f"{row['other']:.2f}",
                          f"{row['diff']:+.2f} [{row['lo']:+.2f}, {row['hi']:+.2f}]{mark}"]
            lines.append(f"| {benchmark} | {cell} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
