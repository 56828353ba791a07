"""`atreid compare`: paired bootstrap differences of R1 and mAP between runs or variants."""

from __future__ import annotations

import argparse
import logging

from atreid.errors import AtreidError
from atreid.io import atomic_write_text, remove_stale_temporaries

log = logging.getLogger("atreid.compare")


def run_compare(args: argparse.Namespace) -> None:
    # start-up: numpy loaded only when this runs
    from atreid.report.compare import comparison_markdown, load_side

    if len(args.runs) < 2:
        raise AtreidError("give at least two runs: atreid compare RUN_A RUN_B (each other run is compared with RUN_A)")
    if args.resamples < 1:
        raise AtreidError(f"--resamples {args.resamples}: give a positive number of resamples")
    sides = [load_side(spec) for spec in args.runs]
    text = comparison_markdown(sides[0], sides[1:], resamples=args.resamples, seed=args.seed)
    if args.out:
        remove_stale_temporaries(args.out, suffixes=(".tmp",))
        atomic_write_text(args.out, text)
        log.info("%d comparison(s) against %s -> %s", len(sides) - 1, sides[0].name, args.out)
    else:
        print(text, end="")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="paired person-cluster bootstrap differences (R1, mAP) of runs against the first one")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="results/metrics/<variant>/<run> (one run), results/metrics/<variant> (all its runs) or run"
                        " folders joined with ','; every RUN after the first is compared with the first")
    p.add_argument("--out", default=None, help="write the Markdown here (default: print it)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=run_compare)
