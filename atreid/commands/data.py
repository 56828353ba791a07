"""Data steps of AT-USTC: prepare (generate or import) -> install -> verify/index -> sample frames.

Under the workflow a dataset reaches ``data/<name>/images`` in two steps, so that a refused
import never costs the good copy (Snakemake deletes a job's declared outputs before the
job runs, and a folder it declares as an output is gone before the import could refuse):

1. ``prepare-atustc`` / ``prepare-benchmark`` with ``--manifest``: generate or import
   into the staging folder ``.images.staged`` beside ``--out`` and, only on success,
   write the manifest (``data/<name>/prepared.json``, the rule's declared output). A
   refusal (changed source, unsafe or oversized archive, ...) leaves ``images``, its
   index and everything downstream as they were.
2. ``install-images``: move the staged copy into ``--out``, replacing the old one (the
   rule's declared output is the ``images`` folder; at that point the new copy is
   complete and verified against its checksum, so nothing can be refused any more).

Without ``--manifest`` the prepare steps write ``--out`` directly (the import keeps the
old copy on failure).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from atreid.commands import json_object_arg
from atreid.data.archive import (DEFAULT_MAX_EXPANSION, DEFAULT_MAX_EXTRACTED_GIB, PREPARED_NAME,
                                 check_source_outside, import_dataset, prepared_source)
from atreid.errors import AtreidError
from atreid.io import (atomic_write_csv, atomic_write_json, atomic_write_text, install_dir, recover_interrupted_swap,
                       remove_stale_temporaries, stale_temporaries)

if TYPE_CHECKING:
    from atreid.data.benchmarks.base import Benchmark

log = logging.getLogger("atreid.data")


# Beside a dataset's images/ (data/<name>/): the import's record of the source's digest
# (the prepare step's manifest: atreid.data.archive.PREPARED_NAME).
RECORD_NAME = "source.json"


def expansion_limits(args: argparse.Namespace) -> dict:
    return {"max_expansion": args.max_expansion, "max_extracted_gib": args.max_extracted_gib}


def add_staging_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", default=None,
                   help="stage the copy beside --out and write this manifest (install-images moves it "
                        "into place); without it --out is written directly")


def add_expansion_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-expansion", type=float, default=DEFAULT_MAX_EXPANSION,
                   help="an archive may extract to this many times its size (data.max_expansion)")
    p.add_argument("--max-extracted-gib", type=float, default=DEFAULT_MAX_EXTRACTED_GIB,
                   help="an archive may extract to at most this many GiB (data.max_extracted_gib)")


def staged_dir(out: str | os.PathLike) -> Path:
    """Where a prepare step with ``--manifest`` builds the copy that replaces ``out``."""
    out = Path(out)
    return out.parent / f".{out.name}.staged"


def replaced_folders(out: str | os.PathLike) -> list[Path]:
    """Every folder a prepare step (and the install after it) may delete or replace:
    ``out``, its staging folder, and the temporaries a killed earlier run left beside them."""
    out = Path(out)
    staged = staged_dir(out)
    return [out, staged, *stale_temporaries(out), *stale_temporaries(staged)]


def begin_staging(args: argparse.Namespace, setting: str) -> Path:
    """The folder the prepare step writes: ``--out``, or with ``--manifest`` its staging
    folder (emptied first: an earlier staged copy without a manifest was never accepted).
    The leftovers of a killed earlier run of this step are removed.

    First of all, a source inside any folder the import replaces is refused (``setting``:
    its key, for the message), before anything is deleted: installing the copy would
    otherwise delete the user's own archive."""
    check_source_outside(args.source.get("source", "synthetic"), replaced_folders(args.out), setting=setting)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    if not args.manifest:
        return out
    staged = staged_dir(out)
    remove_stale_temporaries(staged)
    if staged.exists():
        shutil.rmtree(staged)
    return staged


def finish_staging(args: argparse.Namespace, staged: Path, record: dict) -> None:
    """Write the manifest of a staged copy (the prepare rule's declared output). No time in
    it: the same source gives the same manifest, so a clone that rebuilds its datasets
    gets the data folder's digest dvc.lock records."""
    if args.manifest:
        atomic_write_json(args.manifest, {**record, "staged": staged.name})


def run_install(args: argparse.Namespace) -> None:
    """Move the staged copy of ``--manifest`` into ``--out``, replacing the old copy."""
    out, manifest = Path(args.out), Path(args.manifest)
    try:
        prepared = json.loads(manifest.read_text(encoding="utf-8"))
        staged = out.parent / prepared["staged"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AtreidError(f"{manifest}: not a readable manifest of a prepared copy ({exc}); prepare "
                          f"it again: snakemake --cores all --forcerun {args.rule}") from None
    if staged.parent != out.parent or not staged.name.startswith("."):
        raise AtreidError(f"{manifest}: names {staged.name!r}, not a staging folder beside {out}; prepare "
                          f"it again: snakemake --cores all --forcerun {args.rule}")
    if isinstance(prepared.get("source"), str):  # also a copy prepared by hand or by an older atreid
        check_source_outside(prepared["source"], [out], setting="the source")
    recover_interrupted_swap(out)
    remove_stale_temporaries(out)
    if not staged.is_dir():
        raise AtreidError(f"{staged}: the prepared copy is gone (installed earlier and {out} removed "
                          f"since?); prepare it again: snakemake --cores all --forcerun {args.rule}")
    install_dir(staged, out)
    log.info("installed %s", out)


def run_prepare(args: argparse.Namespace) -> None:
    """Generate the synthetic copy or import the user's copy into ``--out`` (with
    ``--manifest``: into its staging folder, then the manifest)."""
    source = args.source["source"]
    out = begin_staging(args, "data.atustc.source")
    if source == "synthetic":
        # start-up: numpy loaded only when this runs
        from atreid.data.synthetic.atustc import generate_atustc

        counts = generate_atustc(out, workers=args.threads, **args.synthetic)
        log.info("generated synthetic AT-USTC in %s: %s images", out,
                 counts.get("all", {}).get("images", "?"))
        record = {"source": "synthetic", "images": counts.get("all", {}).get("images")}
    else:
        summary = import_dataset(source, out, sha256=args.source.get("sha256"),
                                 record=Path(args.record), expect_top="AT-USTC", **expansion_limits(args))
        log.info("imported %s (sha256 %s)", source, summary.get("sha256"))
        record = {key: summary[key] for key in ("source", "kind", "sha256", "files")}
    finish_staging(args, out, record)


def add_count_arguments(p: argparse.ArgumentParser, expected_default: str) -> None:
    p.add_argument("--expected", choices=["synthetic", "official", "none"], default=expected_default,
                   help="counts to compare with: the generator's, the published ones, or none")
    p.add_argument("--count-differences", choices=["error", "warn"], default="error",
                   help="with --expected official: a count beyond the tolerance is an error (nothing "
                        "written) or a warning of the report (a different release on purpose)")


def refuse_count_differences(benchmark: Benchmark, args: argparse.Namespace, report: dict) -> None:
    """With the official statistics and ``--count-differences error``, a copy whose counts
    differ is refused before anything is written: it is not the release the published
    figures describe (e.g. the demo's synthetic images under the paper preset)."""
    differences = report["count_differences"]
    if not differences or args.expected != "official" or args.count_differences != "error":
        return
    first = benchmark.difference_text.format(**differences[0])
    more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
    key = benchmark.settings_key
    raise AtreidError(f"{args.images}: {first}{more}: not the release whose official counts "
                      f"{key}.expected_counts names; check {key}.source, or set {key}.count_differences: "
                      "warn to use this copy on purpose")


def reimport_fix(images: Path, key: str) -> str:
    """What to do when the copy in ``images`` is damaged: the one command that prepares it
    again from its source, read from the manifest beside it (data/<name>/prepared.json).

    ``--forcerun`` the manifest: Snakemake sees no change in a folder source whose file
    was fixed in place (a folder's time does not change). ``rm`` the import record: the
    fixed copy's digest differs from the damaged one's, which the record would refuse."""
    manifest = images.parent / PREPARED_NAME
    source = prepared_source(manifest)
    if source is None:
        return "re-extract the dataset or replace the file"
    rerun = f"snakemake --cores all --forcerun {shlex.quote(str(manifest))}"
    if source == "synthetic":
        return f"generate it again: {rerun}"
    record = shlex.quote(str(images.parent / RECORD_NAME))
    return (f"fix it in your copy ({key}.source: {source}), then import it again: rm -f {record} && "
            f"{rerun} (with {key}.sha256 set, set it to the fixed copy's)")


def write_index(benchmark: Benchmark, args: argparse.Namespace, log: logging.Logger = log) -> None:
    """Verify ``args.images`` with ``benchmark``; write the index and both reports (the one
    verification path of index-atustc and index-benchmark)."""
    from atreid.data.benchmarks.files import DamagedCopyError  # imported here for start-up time (pandas)

    try:
        index, report = benchmark.verify(args.images, expected=args.expected, decode_workers=args.workers)
    except DamagedCopyError as exc:
        raise AtreidError(f"{exc.what}; {reimport_fix(Path(args.images), benchmark.settings_key)}") from None
    refuse_count_differences(benchmark, args, report)
    atomic_write_csv(args.index, index)
    atomic_write_json(args.report, report)
    atomic_write_text(args.report_txt, benchmark.format_report(report))
    for warning in report["warnings"]:
        log.warning("%s: %s", benchmark.name, warning)
    log.info("indexed %d %s images", len(index), benchmark.title)


def run_index(args: argparse.Namespace) -> None:
    """Parse and verify the AT-USTC copy; write the index and the verification report."""
    from atreid.data.benchmarks import get_benchmark  # imported here for start-up time (pandas)

    write_index(get_benchmark("atustc"), args)


def run_sample(args: argparse.Namespace) -> None:
    """Keep N frames per training clip and attach the training labels."""
    # Imported here for start-up time (pandas).
    from atreid.data.benchmarks.atustc import sample_frames
    from atreid.data.benchmarks.files import read_benchmark_index
    from atreid.data.labels import training_labels

    frames = args.frames_per_clip if args.frames_per_clip == "all" else int(args.frames_per_clip)
    index = read_benchmark_index(args.index)
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
    p.add_argument("--source", type=json_object_arg, required=True, help="data.atustc settings as JSON")
    p.add_argument("--synthetic", type=json_object_arg, required=True, help="data.synthetic settings as JSON")
    p.add_argument("--out", required=True, help="folder that will hold AT-USTC/")
    p.add_argument("--record", required=True, help="JSON file recording the source's sha256")
    p.add_argument("--threads", type=int, default=1)
    add_staging_argument(p)
    add_expansion_arguments(p)
    p.set_defaults(func=run_prepare)

    p = subparsers.add_parser("install-images",
                              help="move a prepared (staged) copy into place, replacing the old one")
    p.add_argument("--manifest", required=True, help="the manifest written by prepare-atustc/-benchmark")
    p.add_argument("--out", required=True, help="the images folder to replace")
    p.add_argument("--rule", default="prepare_atustc", help="the prepare rule, for messages")
    p.set_defaults(func=run_install)

    p = subparsers.add_parser("index-atustc", help="verify an AT-USTC copy and write its index and report")
    p.add_argument("--images", required=True, help="folder holding AT-USTC/")
    add_count_arguments(p, "synthetic")
    p.add_argument("--workers", type=int, default=1, help="processes decoding every image (0: do not decode)")
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
