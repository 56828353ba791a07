"""Data steps of AT-USTC: prepare (generate or import) -> verify/index -> sample frames."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from atreid.errors import AtreidError
from atreid.io import atomic_write_csv, atomic_write_json, atomic_write_text

log = logging.getLogger("atreid.data")


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def expansion_limits(args: argparse.Namespace) -> dict:
    return {"max_expansion": args.max_expansion, "max_extracted_gib": args.max_extracted_gib}


def add_expansion_arguments(p: argparse.ArgumentParser) -> None:
    from atreid.data.archive import DEFAULT_MAX_EXPANSION, DEFAULT_MAX_EXTRACTED_GIB

    p.add_argument("--max-expansion", type=float, default=DEFAULT_MAX_EXPANSION,
                   help="an archive may extract to this many times its size (data.max_expansion)")
    p.add_argument("--max-extracted-gib", type=float, default=DEFAULT_MAX_EXTRACTED_GIB,
                   help="an archive may extract to at most this many GiB (data.max_extracted_gib)")


def run_prepare(args: argparse.Namespace) -> None:
    """Generate the synthetic copy or import the user's copy into ``--out``."""
    source = args.source["source"]
    out = Path(args.out)
    if source == "synthetic":
        from atreid.data.synthetic.atustc import generate_atustc

        counts = generate_atustc(out, workers=args.threads, **args.synthetic)
        log.info("generated synthetic AT-USTC in %s: %s images", out,
                 counts.get("all", {}).get("images", "?"))
    else:
        from atreid.data.archive import import_dataset

        summary = import_dataset(source, out, sha256=args.source.get("sha256"),
                                 record=Path(args.record), expect_top="AT-USTC", **expansion_limits(args))
        log.info("imported %s (sha256 %s)", source, summary.get("sha256"))


def run_index(args: argparse.Namespace) -> None:
    """Parse and verify the copy; write the index and the verification report."""
    from atreid.data.atustc import OFFICIAL_COUNTS, verify_dataset

    expected = None
    if args.expected == "official":
        expected = OFFICIAL_COUNTS
    elif args.expected == "synthetic":
        counts_file = Path(args.images) / "synthetic_counts.json"
        if not counts_file.is_file():
            raise AtreidError(f"{counts_file}: missing; data.atustc.expected_counts is 'synthetic' but "
                              "this copy was not generated here; set it to 'official' or 'none'")
        counts = json.loads(counts_file.read_text())
        expected = {split: counts[split] for split in ("train", "val", "query", "gallery") if split in counts}
    index, report = verify_dataset(args.images, expected=expected, decode_workers=args.workers)
    atomic_write_csv(args.index, index)
    atomic_write_json(args.report, report)
    atomic_write_text(args.report_txt, _report_text(report))
    for warning in report["warnings"]:
        log.warning("%s", warning)
    log.info("indexed %d images", len(index))


def _report_text(report: dict) -> str:
    from atreid.data.atustc import format_report

    return format_report(report)


def run_sample(args: argparse.Namespace) -> None:
    """Keep N frames per training clip and attach the training labels."""
    from atreid.data.atustc import read_index, sample_frames, training_labels

    frames = args.frames_per_clip if args.frames_per_clip == "all" else int(args.frames_per_clip)
    index = read_index(args.index)
    sampled = sample_frames(index, frames)
    if sampled.empty:
        raise AtreidError(f"{args.index}: no training images (flag 0) to sample; check the dataset")
    labelled, maps = training_labels(sampled)
    maps["frames_per_clip"] = frames
    atomic_write_csv(args.out, labelled)
    atomic_write_json(args.labels, maps)
    log.info("sampled %d of %d training images (%s frames per clip); %d persons, %d outfits",
             len(labelled), int((index["flag"] == 0).sum()), frames, len(maps["persons"]), len(maps["outfits"]))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prepare-atustc", help="generate the synthetic AT-USTC or import a real copy")
    p.add_argument("--source", type=_json_arg, required=True, help="data.atustc settings as JSON")
    p.add_argument("--synthetic", type=_json_arg, required=True, help="data.synthetic settings as JSON")
    p.add_argument("--out", required=True, help="folder that will hold AT-USTC/")
    p.add_argument("--record", required=True, help="JSON file recording the source's sha256")
    p.add_argument("--threads", type=int, default=1)
    add_expansion_arguments(p)
    p.set_defaults(func=run_prepare)

    p = subparsers.add_parser("index-atustc", help="verify an AT-USTC copy and write its index and report")
    p.add_argument("--images", required=True, help="folder holding AT-USTC/")
    p.add_argument("--expected", choices=["synthetic", "official", "none"], default="synthetic")
    p.add_argument("--workers", type=int, default=1, help="processes decoding images")
    p.add_argument("--index", required=True)
    p.add_argument("--report", required=True, help="verification report (JSON)")
    p.add_argument("--report-txt", required=True, help="verification report (text table)")
    p.set_defaults(func=run_index)

    p = subparsers.add_parser("sample-frames", help="keep N evenly spaced frames per training clip")
    p.add_argument("--index", required=True)
    p.add_argument("--frames-per-clip", required=True, help="an integer or 'all'")
    p.add_argument("--out", required=True, help="sampled training index (CSV)")
    p.add_argument("--labels", required=True, help="label maps (JSON)")
    p.set_defaults(func=run_sample)
