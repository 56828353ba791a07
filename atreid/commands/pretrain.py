"""Pretraining step: ``atreid pretrain-backbone`` makes the demo backbone's weights file."""

from __future__ import annotations

import argparse

from atreid.commands import SETTINGS_HELP, read_settings


def run(args: argparse.Namespace) -> int:
    # start-up: numpy, pandas, pyarrow, torch, tqdm loaded only when this runs
    from atreid.engine.pretrain import pretrain_backbone

    pretrain_backbone(read_settings(args.settings), out_path=args.out, history_path=args.history)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain-backbone",
        help="pre-train the backbone on a synthetic population disjoint from AT-USTC (the demo's ImageNet stand-in)")
    p.add_argument("--settings", required=True,
                   help=f'{SETTINGS_HELP}: {{"arch": ..., "image_size": [h, w], "pretrain": {{...}}}}')
    p.add_argument("--out", required=True, help="weights file (a timm ViT state_dict), e.g. models/pretrained/backbone.pth")
    p.add_argument("--history", required=True, help="CSV of loss and accuracy during pre-training")
    p.set_defaults(func=run)
