"""Evaluation steps: the metrics files of one run (one per benchmark, one process); the result table."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from atreid.commands import SETTINGS_HELP, read_settings
from atreid.errors import AtreidError
from atreid.io import atomic_write_csv, atomic_write_json, atomic_write_text, remove_stale_temporaries

log = logging.getLogger("atreid.evaluate")


def evaluation_outputs(benchmarks: list[str], outs: list[str] | None, out_dir: str | None) -> dict[str, Path]:
    """Benchmark -> metrics file: ``--out`` paths in ``--benchmark`` order, or ``<out-dir>/<benchmark>.json``."""
    if len(set(benchmarks)) != len(benchmarks):
        repeated = next(b for b in benchmarks if benchmarks.count(b) > 1)
        raise AtreidError(f"--benchmark {repeated} is given twice; give each benchmark once")
    if (outs is None) == (out_dir is None):
        raise AtreidError("give either --out (one per --benchmark) or --out-dir (writes <benchmark>.json there)")
    if out_dir is not None:
        return {name: Path(out_dir) / f"{name}.json" for name in benchmarks}
    if len(outs) != len(benchmarks):
        raise AtreidError(f"{len(benchmarks)} --benchmark but {len(outs)} --out: give one --out per --benchmark,"
                          " in the same order (or --out-dir)")
    if len(set(outs)) != len(outs):
        raise AtreidError("two --out paths are the same: give each benchmark its own metrics file")
    return {name: Path(out) for name, out in zip(benchmarks, outs)}


def run_evaluate(args: argparse.Namespace) -> None:
    # start-up: numpy, pandas, pyarrow, torch, tqdm loaded only when this runs
    from atreid.eval.outcomes import OUTCOMES_KEY, outcomes_path, write_outcomes
    from atreid.eval.runner import evaluate_benchmarks

    outputs = evaluation_outputs(args.benchmark, args.out, args.out_dir)
    if args.threads:
        # start-up: numpy, torch, tqdm loaded only when this runs
        import torch

        torch.set_num_threads(args.threads)
    for out in outputs.values():
        remove_stale_temporaries(out, suffixes=(".tmp",))
        remove_stale_temporaries(outcomes_path(out), suffixes=(".tmp",))  # what a killed earlier run of this step left
    start = time.perf_counter()
    results = evaluate_benchmarks(list(outputs), model_path=Path(args.model), data_dir=Path(args.data_dir),
                                  settings=read_settings(args.settings), cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    for done, (name, metrics) in enumerate(results, start=1):
        # Each file is written (atomically) as soon as its benchmark is scored; the
        # per-query outcomes go to their own file beside it (atreid.eval.outcomes).
        write_outcomes(outcomes_path(outputs[name]), metrics.pop(OUTCOMES_KEY))
        atomic_write_json(outputs[name], metrics)
        summary = metrics.get("summary", {})
        log.info("[%d/%d] %s on %s (%.1f s so far) -> %s: %s", done, len(outputs), args.model, name,
                 time.perf_counter() - start, outputs[name], json.dumps(summary))


def run_table(args: argparse.Namespace) -> None:
    # start-up: numpy, pandas, pyarrow loaded only when this runs
    from atreid.report.table import build_table, summary_metrics, table_markdown

    for out in (args.out, args.markdown, args.summary):
        if out:
            remove_stale_temporaries(out, suffixes=(".tmp",))
    table = build_table([Path(p) for p in args.metrics], paper=args.paper, intervals=args.intervals,
                        resamples=args.resamples, seed=args.bootstrap_seed)
    atomic_write_csv(args.out, table)
    atomic_write_text(args.markdown, table_markdown(table))
    if args.summary:
        atomic_write_json(args.summary, summary_metrics(table))
    log.info("table with %d rows -> %s", len(table), args.out)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate one trained model on one or more benchmarks")
    p.add_argument("--model", required=True, help="models/{variant}/{run}/model.pt")
    p.add_argument("--benchmark", action="append", required=True,
                   help="benchmark name (e.g. atustc); repeat it for several: the model is loaded once")
    p.add_argument("--data-dir", required=True, help="data.dir (holds <benchmark>/index.csv and images)")
    p.add_argument("--settings", required=True, help=f"{SETTINGS_HELP}: the eval section")
    p.add_argument("--cache-dir", default=None, help="feature cache folder")
    p.add_argument("--out", action="append", default=None,
                   help="metrics file of a --benchmark (one per --benchmark, same order)")
    p.add_argument("--out-dir", default=None,
                   help="write <benchmark>.json here for every --benchmark (results/metrics/{variant}/{run})")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser("table", help="gather metrics files into results/table.csv and .md")
    p.add_argument("metrics", nargs="+", help="results/metrics/{variant}/{run}/{benchmark}.json files")
    p.add_argument("--out", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--summary", default=None, help="results/summary.json (DVC metrics)")
    p.add_argument("--paper", action="store_true", help="show the published numbers beside ours")
    p.add_argument("--intervals", action="store_true",
                   help="add <column>:lo/:hi, 95%% person-cluster bootstrap intervals, from the .outcomes.npz"
                        " file beside each metrics file")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (with --intervals)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="bootstrap seed (with --intervals)")
    p.set_defaults(func=run_table)
