"""Report steps: CMC curves, comparison bars, training curves, CMC tables for DVC plots."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from atreid.errors import AtreidError
from atreid.report.table import headline


def run_plot_cmc(args: argparse.Namespace) -> None:
    # start-up: PIL, matplotlib loaded only when this runs
    from atreid.report.plots import load_json, plot_cmc

    metrics = {}
    for path in args.metrics:
        data = load_json(path)
        metrics[data["variant"]] = data
    plot_cmc(metrics, args.out)


def run_plot_comparison(args: argparse.Namespace) -> None:
    # start-up: PIL, matplotlib loaded only when this runs
    from atreid.report.plots import plot_comparison

    plot_comparison(pd.read_csv(args.table), args.out)


def run_plot_training(args: argparse.Namespace) -> None:
    # start-up: PIL, matplotlib loaded only when this runs
    from atreid.report.plots import plot_training

    plot_training(pd.read_csv(args.history), args.variant, args.out)


def run_cmc_csv(args: argparse.Namespace) -> None:
    # start-up: PIL, matplotlib loaded only when this runs
    from atreid.report.plots import write_cmc_csv

    write_cmc_csv(args.metrics, args.out)


def run_show_table(args: argparse.Namespace) -> None:

    path = Path(args.table)
    if not path.is_file():
        raise AtreidError(f"{path}: no result table yet; build it with `snakemake --cores all {path}`")
    print(headline(pd.read_csv(path)), end="")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("show-table", help="print the headline columns of the result table (mean ± std)")
    p.add_argument("table", nargs="?", default="results/table.csv")
    p.set_defaults(func=run_show_table)

    p = subparsers.add_parser("plot-cmc", help="CMC curves per scenario, one line per variant")
    p.add_argument("metrics", nargs="+", help="results/metrics/{variant}/{run}/atustc.json files (one per variant)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_plot_cmc)

    p = subparsers.add_parser("plot-comparison", help="grouped R1/mAP bars per protocol and variant")
    p.add_argument("--table", required=True, help="results/table.csv")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_plot_comparison)

    p = subparsers.add_parser("plot-training", help="training curves of one variant")
    p.add_argument("--history", required=True, help="models/{variant}/{run}/history.csv")
    p.add_argument("--variant", required=True, help="the title's name (the workflow: 'variant, run')")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_plot_training)

    p = subparsers.add_parser("cmc-csv", help="CMC curves of one metrics file as CSV (DVC plots)")
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_cmc_csv)

