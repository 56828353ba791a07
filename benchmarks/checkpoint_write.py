"""What a resume checkpoint costs the training loop: ours vs the earlier in-memory write.

The state is the paper recipe's (``vit_base_uniat`` full Uni-AT, MoAE in every block,
SGD with momentum: ~3 GB). Each configuration runs in a fresh subprocess, so its peak
RSS (``getrusage``) is its own; the model and optimiser state alone are measured first
(``state``), and the extra memory a write needs is the difference.

- ``naive``: the previous implementation: a CPU copy of the state, ``torch.save`` into an
  in-memory buffer, ``getvalue()`` (another copy), then write + fsync + rename.
- ``sync``: ours on CPU: the live tensors streamed into the temporary file (no copy),
  fsync, ``previous.pt`` kept, rename. Training waits for all of it.
- ``background``: ours on CUDA: a copy into host buffers kept from one checkpoint to the
  next (pinned for CUDA tensors), then a writer thread. Training waits only for the copy
  (``stall_s``: the later checkpoints'; the first one also allocates the buffers);
  ``write_s`` is the time until the file is in place.

    python benchmarks/checkpoint_write.py                      # ViT-B full, ~3 GB, 1-2 min
    python benchmarks/checkpoint_write.py --arch vit_tiny_uniat --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("state", "naive", "sync", "background")


def build_state(arch: str):
    """(model, optimizer) of full Uni-AT with SGD momentum buffers in place."""
    import torch

    from atreid.engine.optim import build_optimizer
    from atreid.model import build_model

    torch.manual_seed(0)
    model = build_model(arch, ncls=6, moae=True, num_persons=600, num_outfits=2400)
    optimizer = build_optimizer(model, {"optimizer": "sgd", "lr": 0.008, "momentum": 0.9, "weight_decay": 5e-4,
                                        "large_lr_factor": 10})
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()  # creates the momentum buffers
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def naive_write(directory: Path, model, optimizer) -> None:
    """The earlier implementation, transcribed: copy, serialise in memory, then write."""
    import io

    import torch

    from atreid.engine.checkpoint import cpu_copy
    from atreid.io import atomic_write_bytes, keep_previous

    snapshot = {"model": cpu_copy(model.state_dict()), "optimizer": cpu_copy(optimizer.state_dict())}
    buffer = io.BytesIO()
    torch.save(snapshot, buffer)
    del snapshot
    keep_previous(directory / "last.pt", directory / "previous.pt")
    atomic_write_bytes(directory / "last.pt", buffer.getvalue())


def measure(mode: str, arch: str, reps: int, where: str) -> dict:
    from atreid.engine.checkpoint import CheckpointWriter, save_checkpoint

    model, optimizer = build_state(arch)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    size += sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if hasattr(t, "numel"))
    result = {"mode": mode, "arch": arch, "state_gb": round(size / 1e9, 2)}
    if mode == "state":
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
        return result
    directory = Path(tempfile.mkdtemp(prefix="atreid-ckpt-bench-", dir=where))
    stalls, writes = [], []
    writer = CheckpointWriter(background=mode == "background")  # one per run, as the trainer's
    try:
        for _ in range(reps):
            started = time.perf_counter()
            if mode == "naive":
                naive_write(directory, model, optimizer)
                stalls.append(time.perf_counter() - started)
                writes.append(stalls[-1])
                continue
            state = {"epoch": 1, "model": writer.hold(model.state_dict(), "model"),
                     "optimizer": writer.hold(optimizer.state_dict(), "optimizer")}
            writer.submit(lambda: save_checkpoint(directory, state))
            stalls.append(time.perf_counter() - started)
            del state
            writer.close()
            writes.append(time.perf_counter() - started)
        files = sorted(p.name for p in directory.iterdir())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    # The first background snapshot allocates its host buffers; later ones reuse them.
    result.update({"stall_s": round(min(stalls[1:] or stalls), 2), "first_stall_s": round(stalls[0], 2),
                   "write_s": round(min(writes), 2),
                   "write_gb_per_s": round(size / 1e9 / min(writes), 2), "files": files,
                   "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base_uniat")
    parser.add_argument("--reps", type=int, default=2, help="writes per mode (the fastest is reported)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the checkpoints are written")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.arch, args.reps, args.dir)))
        return 0
    rows = []
    for mode in args.modes:
        command = [sys.executable, __file__, "--arch", args.arch, "--reps", str(args.reps), "--dir", args.dir,
                   "--one", mode]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ATREID_QUIET": "1"})
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"{mode} failed")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    base = next((r["peak_rss_gb"] for r in rows if r["mode"] == "state"), None)
    print("| mode | state GB | training waits (s) | first time (s) | write done (s) | GB/s | peak RSS GB | "
          "extra RSS GB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["mode"] == "state":
            continue
        extra = round(r["peak_rss_gb"] - base, 2) if base is not None else ""
        print(f"| {r['mode']} | {r['state_gb']} | {r['stall_s']} | {r['first_stall_s']} | {r['write_s']} | "
              f"{r['write_gb_per_s']} | "
              f"{r['peak_rss_gb']} | {extra} |")
    timed = {r["mode"]: r for r in rows}
    if "naive" in timed:
        for mode in ("sync", "background"):
            if mode in timed:
                print(f"{mode}: training waits {timed['naive']['stall_s'] / timed[mode]['stall_s']:.1f}x less "
                      f"than naive")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
