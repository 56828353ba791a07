"""`atreid explain`: what each CLS (scenario) token looks at, drawn over the images."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from atreid.errors import AtreidError

log = logging.getLogger("atreid.explain")


def run_explain(args: argparse.Namespace) -> None:
    # start-up: PIL, matplotlib, numpy, pandas, pyarrow, timm, torch, torchvision, tqdm, yaml loaded only when this runs
    import torch

    from atreid.engine.checkpoint import load_trained_model
    from atreid.model.attention import token_maps
    from atreid.report.attention import load_images, pick_person_images, plot_token_maps

    if (args.images is None) == (args.atustc is None):
        raise AtreidError("give either --images (image files) or --atustc DATA_DIR (one AT-USTC test person in RGB "
                          "and IR, two outfits)")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, payload = load_trained_model(Path(args.model), "cpu")
    image_size = payload["settings"]["model"]["image_size"]
    if args.images is not None:
        paths = [Path(p) for p in args.images]
        labels = [p.name for p in paths]
    else:
        # start-up: numpy, pandas, pyarrow loaded only when this runs
        from atreid.data.benchmarks import get_benchmark
        from atreid.data.benchmarks.files import read_benchmark_index

        data = Path(args.atustc) / "atustc"
        rows = pick_person_images(read_benchmark_index(data / "index.csv"), skip=args.person)
        root = get_benchmark("atustc").find_root(data / "images")
        paths = [root / p for p in rows["path"]]
        labels = [f"person {r.person}, {r.modality.upper()}, outfit {r.clothes}" for r in rows.itertuples()]
    batch, shown = load_images(paths, image_size)
    maps = token_maps(model, batch, method=args.method)
    run = Path(args.model).parent.name
    plot_token_maps(shown, maps, labels, f"{payload['settings']['name']} ({run})", args.out, method=args.method)
    log.info("%d image(s) x %d token map(s) -> %s", len(paths), maps.shape[1], args.out)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("explain", help="attention of each CLS (scenario) token over images, side by side")
    p.add_argument("--model", required=True, help="models/<variant>/<run>/model.pt (trained or imported)")
    p.add_argument("--images", nargs="+", default=None, help="image files (e.g. an RGB and an IR image of a person "
                                                             "in two outfits)")
    p.add_argument("--atustc", default=None, metavar="DATA_DIR",
                   help="pick the images from DATA_DIR/atustc's test set instead of --images")
    p.add_argument("--person", type=int, default=0, help="with --atustc: skip this many eligible persons")
    p.add_argument("--method", choices=("rollout", "last"), default="rollout",
                   help="attention rollout over all blocks (default) or the last block's CLS attention")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=run_explain)
