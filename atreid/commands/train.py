"""Training steps: ``atreid label-training-split`` labels a benchmark's training split
(``data.train_on``), ``atreid train`` trains one variant (resuming an interrupted run)."""

from __future__ import annotations

import argparse
import logging

from atreid.commands import SETTINGS_HELP, read_settings
from atreid.io import atomic_write_csv, atomic_write_json

log = logging.getLogger("atreid.train")


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The ``atreid train ...`` arguments of ``args`` (for the torchrun relaunch)."""
    return ["train", "--settings", args.settings, "--index", args.index,
            "--labels", args.labels, "--images", args.images, "--out", args.out, "--history", args.history,
            "--checkpoint-dir", args.checkpoint_dir, "--threads", str(args.threads), "--device", args.device,
            *(["--pretrained-file", args.pretrained_file] if args.pretrained_file else [])]


def run(args: argparse.Namespace) -> int:
    # start-up: numpy, torch, tqdm loaded only when this runs
    from atreid.engine.distributed import relaunch_with_torchrun, under_torchrun

    settings = read_settings(args.settings)
    devices = int(settings["train"]["devices"])
    if devices > 1 and not under_torchrun():
        return relaunch_with_torchrun(devices, child_arguments(args))

    # start-up: numpy, pandas, pyarrow, torch, tqdm, yaml loaded only when this runs
    from atreid.engine.trainer import train_variant

    train_variant(settings, index_csv=args.index, labels_json=args.labels, images_root=args.images,
                  out_path=args.out, history_path=args.history, checkpoint_dir=args.checkpoint_dir,
                  threads=args.threads, device=args.device, pretrained_file=args.pretrained_file)
    return 0


def run_label_split(args: argparse.Namespace) -> int:
    # start-up: numpy, pandas, pyarrow, yaml loaded only when this runs
    from atreid.data.labels import build_training_split

    labelled, maps = build_training_split(args.index, args.images, args.benchmark)
    atomic_write_csv(args.out, labelled)
    atomic_write_json(args.labels, maps)
    log.info("%s training split: %d images, %d persons, %d outfits; modalities %s, clothes labels: %s",
             args.benchmark, len(labelled), len(maps["persons"]), len(maps["outfits"]),
             "+".join(maps["modalities"]), "yes" if maps["clothes"] else "no")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("label-training-split",
                              help="a benchmark's training split with person/outfit labels (data.train_on)")
    p.add_argument("--benchmark", required=True, help="registered benchmark name (data.train_on)")
    p.add_argument("--index", required=True, help="data/<benchmark>/index.csv")
    p.add_argument("--images", required=True, help="data/<benchmark>/images (the written paths are relative to it)")
    p.add_argument("--out", required=True, help="data/<benchmark>/train_labelled.csv")
    p.add_argument("--labels", required=True, help="data/<benchmark>/labels.json (label maps)")
    p.set_defaults(func=run_label_split)

    p = subparsers.add_parser("train", help="train one variant (resumes from --checkpoint-dir)")
    p.add_argument("--settings", required=True,
                   help=f"{SETTINGS_HELP}: the run's resolved variant (atreid.config.resolve_variant)")
    p.add_argument("--index", default="data/atustc/train_sampled.csv",
                   help="training index CSV: AT-USTC's sampled frames or data/<train_on>/train_labelled.csv")
    p.add_argument("--labels", default="data/atustc/labels.json", help="label maps JSON (data/<train_on>/labels.json)")
    p.add_argument("--images", default="data/atustc/images/AT-USTC", help="folder the index paths are relative to")
    p.add_argument("--out", required=True, help="models/{variant}/{run}/model.pt")
    p.add_argument("--history", required=True, help="models/{variant}/{run}/history.csv")
    p.add_argument("--checkpoint-dir", required=True,
                   help="checkpoints/{variant}: in-progress checkpoint (not a workflow output)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--pretrained-file", default=None,
                   help="the pre-trained backbone file when model.pretrained is 'synthetic' (models/pretrained/backbone.pth)")
    p.set_defaults(func=run)
