"""Report steps: CMC curves, comparison bars, training curves, CMC tables for DVC plots."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def run_plot_cmc(args: argparse.Namespace) -> None:
    from atreid.report.plots import load_json, plot_cmc

    metrics = {}
    for path in args.metrics:
        data = load_json(path)
        metrics[data["variant"]] = data
    plot_cmc(metrics, args.out)


def run_plot_comparison(args: argparse.Namespace) -> None:
    from atreid.report.plots import plot_comparison

    plot_comparison(pd.read_csv(args.table), args.out)


def run_plot_training(args: argparse.Namespace) -> None:
    from atreid.report.plots import plot_training

    plot_training(pd.read_csv(args.history), args.variant, args.out)


def run_cmc_csv(args: argparse.Namespace) -> None:
    from atreid.report.plots import write_cmc_csv

    write_cmc_csv(args.metrics, args.out)


def run_show_table(args: argparse.Namespace) -> None:
    from atreid.errors import AtreidError
    from atreid.report.table import headline

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

    _register_galleries(subparsers)


def run_galleries(args: argparse.Namespace) -> None:
    """Ranked-retrieval galleries of one variant, one PNG per AT-USTC scenario."""
    import torch

    from atreid.engine.checkpoint import load_trained_model
    from atreid.commands import read_settings
    from atreid.data.benchmarks import get_benchmark
    from atreid.engine.device import resolve_device
    from atreid.eval.runner import test_features
    from atreid.report.gallery import plot_gallery, ranked_queries

    if args.threads:
        torch.set_num_threads(args.threads)
    eval_settings = read_settings(args.settings)
    device = resolve_device(eval_settings.get("device", "auto"), setting="eval.device")
    model, payload = load_trained_model(Path(args.model), device)
    settings = payload["settings"]
    features, test, root = test_features("atustc", model, Path(args.model), Path(args.data_dir), eval_settings,
                                         settings["model"]["image_size"], device,
                                         Path(args.cache_dir) if args.cache_dir else None)
    scenarios = get_benchmark("atustc").protocols.protocols
    outputs = dict(zip([p.name for p in scenarios], args.out))
    for protocol in scenarios:
        ranked = ranked_queries(features, test, protocol, num_queries=args.queries, top_k=args.top_k, seed=args.seed)
        run = Path(args.model).parent.name  # seed0, imported: which run of the variant this is
        plot_gallery(ranked, test, root, f"{settings['name']} ({run}) - {protocol.name} (head {protocol.head})",
                     outputs[protocol.name])


def _register_galleries(subparsers: argparse._SubParsersAction) -> None:
    from atreid.commands import SETTINGS_HELP

    p = subparsers.add_parser("galleries", help="ranked retrieval galleries of one variant (one PNG per scenario)")
    p.add_argument("--model", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--settings", required=True, help=f"{SETTINGS_HELP}: the eval section")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--queries", type=int, default=4, help="queries per scenario (seeded choice)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", nargs=6, required=True, help="six PNG paths in scenario order DT-ST ... AD-LT")
    p.set_defaults(func=run_galleries)
