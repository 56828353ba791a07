"""Evaluation steps: one (variant, benchmark) metrics file; the result table."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from atreid.commands.data import _json_arg
from atreid.io import atomic_write_csv, atomic_write_json, atomic_write_text, remove_stale_temporaries

log = logging.getLogger("atreid.evaluate")


def run_evaluate(args: argparse.Namespace) -> None:
    from atreid.eval.runner import evaluate_benchmark

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    remove_stale_temporaries(args.out, suffixes=(".tmp",))  # what a killed earlier run of this step left
    metrics = evaluate_benchmark(args.benchmark, model_path=Path(args.model), data_dir=Path(args.data_dir),
                                 settings=args.settings, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    atomic_write_json(args.out, metrics)
    summary = metrics.get("summary", {})
    log.info("%s on %s: %s", args.model, args.benchmark, json.dumps(summary))


def run_table(args: argparse.Namespace) -> None:
    from atreid.report.table import build_table, table_markdown

    for out in (args.out, args.markdown, args.summary):
        if out:
            remove_stale_temporaries(out, suffixes=(".tmp",))
    table = build_table([Path(p) for p in args.metrics], paper=args.paper)
    atomic_write_csv(args.out, table)
    atomic_write_text(args.markdown, table_markdown(table))
    if args.summary:
        # Flat {variant: {column: value}}: what `dvc metrics show` / `dvc exp show` compare.
        summary = {row["variant"]: {k: v for k, v in row.items() if k != "variant"}
                   for row in table.to_dict(orient="records")}
        atomic_write_json(args.summary, summary)
    log.info("table with %d rows -> %s", len(table), args.out)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate one trained variant on one benchmark")
    p.add_argument("--model", required=True, help="models/{variant}/model.pt")
    p.add_argument("--benchmark", required=True, help="benchmark name (e.g. atustc)")
    p.add_argument("--data-dir", required=True, help="data.dir (holds <benchmark>/index.csv and images)")
    p.add_argument("--settings", type=_json_arg, required=True, help="the eval section of params as JSON")
    p.add_argument("--cache-dir", default=None, help="feature cache folder")
    p.add_argument("--out", required=True, help="results/metrics/{variant}/{benchmark}.json")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser("table", help="gather metrics files into results/table.csv and .md")
    p.add_argument("metrics", nargs="+", help="results/metrics/{variant}/{benchmark}.json files")
    p.add_argument("--out", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--summary", default=None, help="results/summary.json (DVC metrics)")
    p.add_argument("--paper", action="store_true", help="show the published numbers beside ours")
    p.set_defaults(func=run_table)
