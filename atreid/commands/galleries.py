"""`atreid galleries`: ranked-retrieval galleries of one variant (one PNG per AT-USTC scenario).

Its own module (not with the report plots): it loads a model and scores the test set, so
its code (atreid.code_deps) is the evaluation's, not the table's or the plots'.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atreid.commands import SETTINGS_HELP, read_settings
from atreid.data.benchmarks import get_benchmark


def run_galleries(args: argparse.Namespace) -> None:
    """Ranked-retrieval galleries of one variant, one PNG per AT-USTC scenario."""
    # start-up: PIL, matplotlib, torch, tqdm loaded only when this runs
    import torch

    from atreid.engine.checkpoint import load_trained_model
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


def register(subparsers: argparse._SubParsersAction) -> None:
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
