"""Using a trained model on your own images: ``atreid extract`` (features as a parquet
table) and ``atreid search`` (ranked retrievals as an HTML page and a PNG)."""

from __future__ import annotations

import argparse
import json

from atreid.constants import SCENARIOS

EXTRACT_DESCRIPTION = """\
Features of every image of a folder (recursive), an image list (one path a line) or a
benchmark split, computed by the evaluation's own code (the numbers it ranks with), written
atomically as parquet: columns path, person, camera, modality, clothes, split (the
benchmark's labels; null for folders and lists) and one column per head (DT-ST ... AD-LT),
each row's value a list of D float32: the post-BN feature, not normalised (the evaluation's
distance is 1 - cosine). Images of any size are resized to the model's image size
(bilinear, aspect ratio not kept), as the evaluation does. Needs pyarrow.

  atreid extract --model models/full/seed0/model.pt --folder my_images --out my_images.parquet
  python -c "import pandas as pd; print(pd.read_parquet('my_images.parquet').head())"
"""

SEARCH_DESCRIPTION = """\
Rank a gallery for each query image by 1 - cosine of one head's features (as the evaluation
ranks) and write DIR/index.html (self-contained), DIR/search.png and DIR/search.json. The
head is --scenario's, or with auto (default) chosen per query from the query's and the
gallery's modality (labels where known, else guessed from the pixels: grey = IR): both RGB
-> DT, both IR -> NT, mixed -> AD; clothes are unknown, so the short-term (ST) head. The
page says which head and why.

  atreid search --model models/full/seed0/model.pt --query q.jpg --gallery-folder people/ --out results/search
"""


def run_extract(args: argparse.Namespace) -> int:
    # start-up: numpy, pandas, pyarrow, torch, tqdm loaded only when this runs
    from atreid.eval.extract import extract

    report = extract(args.model, args.out, folder=args.folder, images=args.images, benchmark=args.benchmark,
                     split=args.split, data_dir=args.data_dir, heads=args.heads, flip=args.flip,
                     batch_size=args.batch, device=args.device)
    print(json.dumps(report))
    return 0


def run_search(args: argparse.Namespace) -> int:
    # start-up: numpy, pandas, pyarrow, torch, tqdm loaded only when this runs
    from atreid.report.search import search

    if args.benchmark is not None and args.split is None:
        args.split = "gallery"
    if args.query_from is not None:
        # start-up: numpy, pandas, pyarrow, torch, tqdm loaded only when this runs
        from atreid.report.search import benchmark_queries

        args.query = benchmark_queries(args.query_from, args.queries, args.data_dir)
    report = search(args.model, args.query, args.out, gallery_folder=args.gallery_folder,
                    gallery_features=args.gallery_features, benchmark=args.benchmark, split=args.split,
                    data_dir=args.data_dir, scenario=args.scenario, top_k=args.top_k, flip=args.flip,
                    batch_size=args.batch, device=args.device)
    print(json.dumps({"out": args.out, "gallery_images": report["gallery_images"],
                      "heads": [q["head"] for q in report["queries"]]}))
    return 0


def _scenario(text: str) -> str:
    return "auto" if text.lower() == "auto" else text.upper()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained model, e.g. models/full/seed0/model.pt")
    p.add_argument("--data-dir", default="data", help="data.dir holding <benchmark>/index.csv and images (data)")
    p.add_argument("--flip", action="store_true", help="average each image's features with its mirror's (eval.flip)")
    p.add_argument("--batch", type=int, default=128, help="images per forward pass (128)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto = CUDA when present")


def register(subparsers: argparse._SubParsersAction) -> None:

    p = subparsers.add_parser("extract", help="features of a folder, image list or benchmark split as parquet",
                              description=EXTRACT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="a folder of images (.jpg, .jpeg, .png, .bmp; searched recursively)")
    source.add_argument("--images", help="a text file with one image path a line (relative to here, or absolute)")
    source.add_argument("--benchmark", help="a prepared benchmark (atustc, market1501, ...); needs --split")
    p.add_argument("--split", help="with --benchmark: query, gallery or train (or another split of its index)")
    p.add_argument("--heads", default="all",
                   help=f"comma-separated heads to write ({','.join(SCENARIOS)}) or all (default)")
    p.add_argument("--out", required=True, help="the parquet file to write, e.g. features.parquet")
    p.set_defaults(func=run_extract)

    s = subparsers.add_parser("search", help="rank a gallery for query images; an HTML page and a PNG of the top-k",
                              description=SEARCH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(s)
    queries = s.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", nargs="+", help="one or more query images")
    queries.add_argument("--query-from", metavar="BENCHMARK",
                         help="take --queries images of this prepared benchmark's query split (one per person)")
    s.add_argument("--queries", type=int, default=4, help="with --query-from: how many (4)")
    gallery = s.add_mutually_exclusive_group(required=True)
    gallery.add_argument("--gallery-folder", help="a folder of gallery images (recursive)")
    gallery.add_argument("--gallery-features", help="a feature table written by `atreid extract` with this model")
    gallery.add_argument("--benchmark", help="a prepared benchmark's split as gallery (with --split, default gallery)")
    s.add_argument("--split", default=None, help="with --benchmark: the split ranked (default gallery)")
    s.add_argument("--scenario", type=_scenario, default="auto", choices=("auto", *SCENARIOS),
                   help="the head: DT/NT/AD (day, night, cross-modality) - ST/LT (same, changed clothes); "
                        "auto (default) from the modalities, ST head")
    s.add_argument("--top-k", type=int, default=10, help="results shown per query (10)")
    s.add_argument("--out", required=True, help="folder to write index.html, search.png and search.json in")
    s.set_defaults(func=run_search)
