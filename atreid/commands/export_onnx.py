"""``atreid export-onnx``: a trained model's evaluation path as an ONNX file.

Input ``images`` float32 (N, 3, H, W) (resized to the model's image size and
ImageNet-normalised, as the evaluation's transform), N dynamic; outputs ``features``
(N, 6, D), the six post-BN head features L2-normalised as the evaluation ranks them
(head order DT-ST, DT-LT, NT-ST, NT-LT, AD-ST, AD-LT), and ``post_bn``, the same before
normalising. Opset 18 by default (torch.onnx dynamo exporter). Not exported: the
training heads (classifiers, logits), image preprocessing and eval.flip's flip averaging
(average ``post_bn`` of the image and its mirror, then L2-normalise). The file is checked
with onnxruntime against PyTorch (within 1e-4) unless --no-verify.
"""

from __future__ import annotations

import argparse
import json

from atreid.constants import ONNX_DEFAULT_OPSET as DEFAULT_OPSET, ONNX_OPSETS as SUPPORTED_OPSETS


def run(args: argparse.Namespace) -> int:
    # start-up: numpy, torch, tqdm loaded only when this runs
    from atreid.engine.export import export_onnx

    report = export_onnx(args.model, args.out, opset=args.opset, batch=args.batch, verify=not args.no_verify)
    print(json.dumps(report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:

    p = subparsers.add_parser(
        "export-onnx", help="write a trained model's evaluation path (six L2-normalised features) as ONNX",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="trained model, e.g. models/full/seed0/model.pt")
    p.add_argument("--out", required=True, help="the .onnx file to write (e.g. model.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset: {', '.join(map(str, SUPPORTED_OPSETS))} (default {DEFAULT_OPSET})")
    p.add_argument("--batch", type=int, default=2,
                   help="batch size of the traced example and of the onnxruntime check (the batch axis stays dynamic)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    p.set_defaults(func=run)
