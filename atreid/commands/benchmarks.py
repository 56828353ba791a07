"""Data steps of the cross-dataset benchmarks: prepare (miniature or import) -> verify/index."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from atreid.commands import json_object_arg
from atreid.commands.data import (add_count_arguments, add_expansion_arguments, add_staging_argument,
                                  begin_staging, expansion_limits, finish_staging, write_index)
from atreid.data.archive import import_dataset
from atreid.errors import AtreidError

log = logging.getLogger("atreid.benchmarks")


def run_prepare(args: argparse.Namespace) -> None:
    """Generate the synthetic miniature of ``--benchmark`` or import the user's copy into ``--out``."""
    from atreid.data.benchmarks import get_benchmark  # imported here for start-up time (pandas)

    benchmark = get_benchmark(args.benchmark)  # unknown names list the valid ones
    source = args.source.get("source", "synthetic")
    out = begin_staging(args, f"data.benchmarks.{args.benchmark}.source")
    if source == "synthetic":
        from atreid.data.synthetic.miniatures import generate_miniature  # start-up time (numpy, PIL)

        counts = generate_miniature(benchmark, out, **args.synthetic)
        log.info("generated the synthetic %s miniature in %s: %d images", benchmark.title, out,
                 counts["statistics"]["all"]["images"])
        record = {"source": "synthetic", "images": counts["statistics"]["all"]["images"]}
    else:
        summary = import_dataset(source, out, sha256=args.source.get("sha256"), record=Path(args.record),
                                 expect_top=benchmark.top_folders[0], name=f"benchmarks.{args.benchmark}",
                                 **expansion_limits(args))
        log.info("imported %s for %s (sha256 %s)", source, benchmark.title, summary.get("sha256"))
        record = {key: summary[key] for key in ("source", "kind", "sha256", "files")}
    finish_staging(args, out, record)


def run_index(args: argparse.Namespace) -> None:
    """Parse and verify a benchmark copy; write its index and verification report."""
    from atreid.data.benchmarks import get_benchmark  # imported here for start-up time (pandas)

    benchmark = get_benchmark(args.benchmark)
    if args.protocol is not None:  # a dataset that chooses its protocol family (custom)
        if not hasattr(benchmark, "protocol"):
            raise AtreidError(f"--protocol: {args.benchmark} has its own protocols; only custom chooses one")
        benchmark.protocol = args.protocol
    write_index(benchmark, args, log)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prepare-benchmark",
                              help="generate a benchmark's synthetic miniature or import a real copy")
    p.add_argument("--benchmark", required=True, help="benchmark name (e.g. market1501)")
    p.add_argument("--source", type=json_object_arg, required=True,
                   help="data.benchmarks.<name> settings as JSON ({source, sha256})")
    p.add_argument("--synthetic", type=json_object_arg, default={},
                   help="miniature settings as JSON ({seed, image_height, image_width, jpeg_quality})")
    p.add_argument("--out", required=True, help="folder that will hold the release's top folder")
    p.add_argument("--record", required=True, help="JSON file recording the source's sha256")
    add_staging_argument(p)
    add_expansion_arguments(p)
    p.set_defaults(func=run_prepare)

    p = subparsers.add_parser("index-benchmark", help="verify a benchmark copy and write its index and report")
    p.add_argument("--benchmark", required=True, help="benchmark name (e.g. market1501)")
    p.add_argument("--images", required=True, help="folder holding the release (data/<name>/images)")
    add_count_arguments(p, "official")
    p.add_argument("--workers", type=int, default=1, help="processes decoding every image (0: do not decode)")
    p.add_argument("--protocol", default=None,
                   help="protocol family of your own dataset (custom): standard, cross_modality or clothes_changing")
    p.add_argument("--index", required=True)
    p.add_argument("--report", required=True, help="verification report (JSON)")
    p.add_argument("--report-txt", required=True, help="verification report (text table)")
    p.set_defaults(func=run_index)
