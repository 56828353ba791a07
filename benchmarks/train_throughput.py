"""Training throughput (images/s) and peak memory per variant, ours vs a naive baseline.

Measures the optimisation step the trainer runs (forward + Uni-AT criterion + backward +
gradient clipping + optimiser step, :func:`atreid.engine.trainer.train_step`) on
in-memory batches with the P x K label structure, so the numbers are the model's cost
without image decoding; ``--loader`` separately measures the PK data loader (JPEG decode
+ the recipe's augmentation) per worker process.

Settings per device (``--device auto``):
- CUDA: the paper recipe (presets/paper.yaml): ViT-B/16 at 256x128, batch 64, SGD;
  "ours" = bf16 autocast + TF32 + fused SDPA attention (+ torch.compile with
  ``--compile``); "naive" = fp32, no TF32, unfused attention.
- CPU: the embedded demo (params.yaml): vit_tiny_uniat at 128x64, batch 64, AdamW;
  "ours" = fp32 with fused SDPA attention (+ torch.compile with ``--compile``);
  "naive" = unfused attention.

images/s is the batch over the median step time of ``--iters`` timed steps (after
``--warmup`` steps); ``best_images_per_s`` uses the fastest step (less sensitive to other
jobs on a shared machine); on CPU ``images_per_cpu_s`` divides by the CPU time of all
threads, which other jobs barely change (x threads ~ idle-machine images/s if the
threads scale). Each measurement runs in a fresh subprocess so peak memory (CUDA
``max_memory_allocated``, CPU peak RSS from ``getrusage``) belongs to that
configuration alone. Target for full Uni-AT on one H100/H200: >= 1,500 images/s.

    python benchmarks/train_throughput.py                  # all variants, ours + naive
    python benchmarks/train_throughput.py --variants full --iters 20 --loader
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def variant_settings(variant: str, device: str, args: argparse.Namespace) -> dict:
    import yaml

    from atreid.config import load_params, resolve_variant

    files = [REPO / "params.yaml"] + ([REPO / "presets" / "paper.yaml"] if device == "cuda" else [])
    params = load_params(*files)
    if variant not in params["variants"]:
        # The ablations (said, said_moae, said_hdw) are defined in the paper preset only;
        # any other unknown name gets full Uni-AT's switches.
        paper = yaml.safe_load((REPO / "presets" / "paper.yaml").read_text())["variants"]
        params["variants"][variant] = paper.get(variant, {"ncls": 6, "said": True, "moae": True, "hdw": True})
    settings = resolve_variant(params, variant, params["seeds"][0])
    settings["model"]["pretrained"] = "none"
    if args.arch:
        settings["model"]["arch"] = args.arch
    if args.image_size:
        settings["model"]["image_size"] = list(args.image_size)
    settings["train"]["batch_p"], settings["train"]["batch_k"] = args.batch_p, args.batch_k
    settings["train"]["compile"] = bool(args.compile)
    return settings


def set_fused_attention(model, enabled: bool) -> int:
    """Switch timm-style attention modules between fused SDPA and the explicit softmax path."""
    count = 0
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = enabled
            count += 1
    return count


def measure_one(variant: str, mode: str, args: argparse.Namespace) -> dict:
    """Time ``args.iters`` training steps of one (variant, mode) in this process."""
    import torch

    from atreid.engine.optim import build_optimizer, set_epoch_lr
    from atreid.engine.trainer import (build_criterion, build_training_model, compile_model, configure_backend,
                                       train_step)

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:  # torch.cuda.set_device needs an index
        device = torch.device("cuda", torch.cuda.current_device())
    configure_backend(device, args.threads, 1)
    if device.type == "cuda" and mode == "naive":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    settings = variant_settings(variant, device.type, args)
    train = settings["train"]
    p, k = train["batch_p"], train["batch_k"]
    num_persons, outfits_per_person = 100, 2
    labels = {"persons": list(range(num_persons)),
              "outfits": [[i, c] for i in range(num_persons) for c in range(outfits_per_person)],
              "outfit_to_person": [i for i in range(num_persons) for _ in range(outfits_per_person)]}
    torch.manual_seed(0)
    model = build_training_model(settings, num_persons, num_persons * outfits_per_person).to(device)
    fused_modules = set_fused_attention(model, mode == "ours")
    criterion = build_criterion(settings, labels).to(device)
    optimizer = build_optimizer(model, train, fused=device.type == "cuda")
    set_epoch_lr(optimizer, 1, train)
    net = compile_model(model) if (mode == "ours" and train["compile"]) else model
    net.train()
    h, w = settings["model"]["image_size"]
    person = torch.arange(p).repeat_interleave(k)
    outfit = person * outfits_per_person + torch.randint(0, outfits_per_person, (p * k,))
    modality = torch.arange(k).repeat(p) >= k // 2
    batch = [torch.randn(p * k, 3, h, w), person, outfit, modality.long()]
    if device.type == "cuda":
        batch = [t.to(device) for t in batch]
        torch.cuda.reset_peak_memory_stats(device)
    use_amp = device.type == "cuda" and mode == "ours" and train["amp"] == "bf16"

    def step():
        train_step(net, criterion, optimizer, *batch, dev=device, use_amp=use_amp, use_triplet=False,
                   clip=train["clip_grad_norm"])

    started = time.perf_counter()
    step()  # the first warm-up step: with torch.compile, the compilation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    first_step_s = time.perf_counter() - started
    for _ in range(args.warmup - 1):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times, cpu_times = [], []
    for _ in range(args.iters):
        started, cpu_started = time.perf_counter(), time.process_time()
        step()  # the step reads the loss (a host sync), so per-step times are real on CUDA too
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    median, best = statistics.median(times), min(times)
    result = {"variant": variant, "mode": mode, "device": device.type, "arch": settings["model"]["arch"],
              "image_size": f"{h}x{w}", "batch": p * k, "amp": "bf16" if use_amp else "fp32",
              "fused_attn": mode == "ours" and fused_modules > 0, "compile": net is not model,
              "images_per_s": round(p * k / median, 1), "best_images_per_s": round(p * k / best, 1),
              "ms_per_step": round(1000 * median, 1), "first_step_s": round(first_step_s, 2)}
    if device.type == "cpu":
        # CPU seconds of all threads per step: unlike wall time, barely affected by other jobs.
        result["images_per_cpu_s"] = round(p * k / statistics.median(cpu_times), 1)
    if device.type == "cuda":
        result["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
    else:
        result["peak_mem_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    return result


def measure_loader(args: argparse.Namespace) -> dict:
    """Images/s of the PK loader (JPEG decode + train augmentation) in one process."""
    import tempfile

    import numpy as np
    import pandas as pd
    from PIL import Image

    from atreid.engine.dataset import build_train_loader

    device = "cuda" if args.device.startswith("cuda") else "cpu"
    settings = variant_settings("full", device, args)
    h, w = settings["model"]["image_size"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i in range(256):
            rel = f"img{i:04d}.jpg"
            Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(Path(tmp) / rel, quality=90)
            rows.append({"path": rel, "person": i // 8, "modality": "rgb" if i % 8 < 4 else "ir",
                         "person_label": i // 8, "outfit_label": i // 8})
        settings["train"]["iters_per_epoch"] = args.iters
        loader, sampler = build_train_loader(pd.DataFrame(rows), tmp, settings, num_workers=0)
        next(iter(loader))
        started = time.perf_counter()
        count = sum(len(batch[0]) for batch in loader)
        elapsed = time.perf_counter() - started
    return {"what": "PK loader, 1 process", "image_size": f"{h}x{w}", "images_per_s": round(count / elapsed, 1)}


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} (CPU)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--variants", nargs="+", default=["full", "baseline", "ncls1"])
    parser.add_argument("--modes", nargs="+", default=["ours", "naive"], choices=["ours", "naive"])
    parser.add_argument("--arch", default=None, help="override the arch (default: per device, see above)")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--batch-p", type=int, default=8)
    parser.add_argument("--batch-k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile", action="store_true", help="torch.compile in 'ours' (train.compile)")
    parser.add_argument("--loader", action="store_true", help="also measure the data loader")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--one", nargs=2, default=None, metavar=("VARIANT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.one:
        print(json.dumps(measure_one(*args.one, args)))
        return 0

    print(f"machine: {machine()}", file=sys.stderr)
    results = []
    base = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
    for variant in args.variants:
        for mode in args.modes:
            command = base + ["--device", args.device, "--one", variant, mode]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ATREID_QUIET": "1"})
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"{variant}/{mode} failed")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    columns = ["variant", "mode", "device", "arch", "image_size", "batch", "amp", "fused_attn", "compile",
               "images_per_s", "best_images_per_s", "ms_per_step", "images_per_cpu_s", "peak_mem_mib"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in results:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    loader = measure_loader(args) if args.loader else None
    if loader:
        print(f"\nloader: {loader['images_per_s']} images/s ({loader['what']}, {loader['image_size']} JPEG, "
              "decode + train augmentation)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results, "loader": loader},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
