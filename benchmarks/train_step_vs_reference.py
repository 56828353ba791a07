"""Training-step time at ViT-B size: atreid eager, atreid compiled, the authors' original code.

One process per variant (``full``, ``baseline``); in it the implementations run
interleaved (eager, compiled, authors, eager, ...) on the same batch: ViT-B/16
(``vit_base_uniat``) at 256x128, ``--batch-p`` x ``--batch-k`` images, fp32, the paper's
SGD (Nesterov momentum 0.9, weight decay 5e-4, 10x lr on the last blocks and heads),
gradient clipping at 20, drop-path 0.2. atreid eager and compiled share one model and
optimiser (``torch.compile`` wraps the same module); the authors' model gets the same
weights through :func:`atreid.model.reference.atreid_to_reference`, and every step of
every implementation starts from the same torch seed, so the drop-path masks are alike.

The authors' code is read from a local copy of the released repository's ``AT-ReID``
folder (``--reference`` or ``$ATREID_REFERENCE``: the folder holding ``model/``,
``loss/``, ``others/``; e.g. kw66/AT-ReID on GitHub). Without it that column is skipped
with a line saying so. Its hard-coded ImageNet weights path is not read (the weights
come from atreid's model).

The first step of each implementation is a warm-up (for the compiled one it includes the
compilation, reported on its own); then ``--reps`` timed rounds: the median and the best
wall time of a step, and the median CPU time of all the process's threads (steadier on a
shared machine). The first losses of atreid eager and the authors' code are equal (same
weights, batch and masks); the compiled one's first step follows eager's, on the shared
model. ``--profile`` adds torch.profiler's top operators of one eager step.

    python benchmarks/train_step_vs_reference.py --reference /path/to/AT-ReID
    python benchmarks/train_step_vs_reference.py --variants full --reps 2 --profile
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"full": {"ncls": 6, "said": True, "moae": True, "hdw": True},
            "baseline": {"ncls": 6, "said": False, "moae": False, "hdw": False}}


def settings_for(variant: str, args: argparse.Namespace) -> dict:
    from atreid.config import load_params, resolve_variant

    params = load_params(REPO / "params.yaml", REPO / "presets" / "paper.yaml")
    params["variants"][variant] = VARIANTS[variant]
    settings = resolve_variant(params, variant, 0)
    settings["model"].update({"pretrained": "none", "drop_path_rate": 0.2})
    settings["train"].update({"batch_p": args.batch_p, "batch_k": args.batch_k, "amp": "none"})
    return settings


def authors_modules(folder: Path) -> types.SimpleNamespace:
    """Import the released code's model, loss and optimiser modules from ``folder``."""
    sys.path.insert(0, str(folder))
    try:
        moae = importlib.import_module("model.moae")
        uniat = importlib.import_module("model.uniat")
        hdw = importlib.import_module("loss.hdw")
        optim = importlib.import_module("others.optim")
    finally:
        sys.path.remove(str(folder))
    moae.ViT.load_param = lambda self, path: None  # its hard-coded ImageNet file: weights come from atreid
    return types.SimpleNamespace(uniat=uniat, hdw=hdw, optim=optim)


def build_authors(mods, variant: str, settings: dict, model, num_persons: int, num_outfits: int, labels: dict):
    import torch

    from atreid.model.reference import atreid_to_reference

    flags = VARIANTS[variant]
    net = mods.uniat.uniat(num_p=num_persons, num_c=num_outfits, imsize=tuple(settings["model"]["image_size"]),
                           drop=settings["model"]["drop_path_rate"], stride=16, ncls=flags["ncls"],
                           moae=flags["moae"])
    missing, unexpected = net.load_state_dict(atreid_to_reference(model), strict=False)
    if missing or unexpected:
        raise SystemExit(f"the authors' model does not take atreid's weights: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    train = settings["train"]
    args = types.SimpleNamespace(wd=train["weight_decay"], dwd=True, dlr=train["large_lr_factor"], dlrl=[10, 11, 12],
                                 optim="sgd")
    optimizer = mods.optim.get_optim(args, mods.optim.get_param_groups(args, train["lr"], net))
    criterion = mods.hdw.saidloss_hdw(cid2pid=labels["outfit_to_person"], said=flags["said"], hdw=flags["hdw"])
    clip = train["clip_grad_norm"]

    def step(images, person, outfit, modality):
        optimizer.zero_grad()
        _, logits = net(images)
        loss = criterion(logits, person, outfit, modality + 1)  # its modality ids: 1 visible, 2 infrared
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        return float(loss.detach())

    net.train()
    return step


def measure(variant: str, args: argparse.Namespace) -> dict:
    import torch

    from atreid.engine.optim import build_optimizer, set_epoch_lr
    from atreid.engine.trainer import build_criterion, build_training_model, compile_model, train_step

    torch.set_num_threads(args.threads)
    settings = settings_for(variant, args)
    train = settings["train"]
    p, k = train["batch_p"], train["batch_k"]
    num_persons, per_person = 200, 4
    labels = {"persons": list(range(num_persons)),
              "outfits": [[i, c] for i in range(num_persons) for c in range(per_person)],
              "outfit_to_person": [i for i in range(num_persons) for _ in range(per_person)]}
    torch.manual_seed(0)
    model = build_training_model(settings, num_persons, num_persons * per_person)
    criterion = build_criterion(settings, labels)
    optimizer = build_optimizer(model, train)
    set_epoch_lr(optimizer, 20, train)
    h, w = settings["model"]["image_size"]
    person = torch.arange(p).repeat_interleave(k)
    outfit = person * per_person + torch.arange(p * k) % 2
    modality = (torch.arange(p * k) % k >= k // 2).long()
    images = torch.randn(p * k, 3, h, w)
    cpu = torch.device("cpu")

    def atreid_step(net):
        return lambda: train_step(net, criterion, optimizer, images, person, outfit, modality, dev=cpu,
                                  use_amp=False, use_triplet=False, clip=train["clip_grad_norm"])["loss"]

    model.train()
    steps = {"atreid eager": atreid_step(model), "atreid compiled": atreid_step(compile_model(model))}
    reference = args.reference or os.environ.get("ATREID_REFERENCE")
    skipped = None
    if reference and (Path(reference) / "model" / "uniat.py").is_file():
        authors = build_authors(authors_modules(Path(reference)), variant, settings, model, num_persons,
                                num_persons * per_person, labels)
        steps["authors"] = lambda: authors(images, person, outfit, modality)
    else:
        skipped = (f"authors' code: skipped ({'no --reference or $ATREID_REFERENCE given' if not reference else reference + ' has no model/uniat.py'}; "
                   "point it at the released repository's AT-ReID folder)")
    first, times, cpu_times, losses = {}, {name: [] for name in steps}, {name: [] for name in steps}, {}
    for name, step in steps.items():
        torch.manual_seed(1)
        started = time.perf_counter()
        losses[name] = step()
        first[name] = time.perf_counter() - started
    for rep in range(args.reps):
        for name, step in steps.items():
            torch.manual_seed(2 + rep)
            started, cpu_started = time.perf_counter(), time.process_time()
            step()
            times[name].append(time.perf_counter() - started)
            cpu_times[name].append(time.process_time() - cpu_started)
    result = {"variant": variant, "batch": p * k, "threads": args.threads, "skipped": skipped,
              "first_step_s": {n: round(t, 2) for n, t in first.items()},
              "first_loss": {n: round(v, 5) for n, v in losses.items()},
              "median_s": {n: round(statistics.median(t), 3) for n, t in times.items()},
              "best_s": {n: round(min(t), 3) for n, t in times.items()},
              # CPU seconds of all the process's threads: steadier than wall time on a shared machine
              "cpu_s": {n: round(statistics.median(t), 3) for n, t in cpu_times.items()}}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps["atreid eager"]()
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=None, help="the released repository's AT-ReID folder")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batch-p", type=int, default=4)
    parser.add_argument("--batch-k", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return 0
    rows = []
    for variant in args.variants:
        command = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--one", variant]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ATREID_QUIET": "1"})
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"{variant} failed")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "profile"}), file=sys.stderr)
    print("| variant | implementation | first step (s) | median step (s) | best step (s) | CPU s per step | "
          "vs authors (median wall) | vs authors (CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for name, median in row["median_s"].items():
            wall, cpu = row["median_s"].get("authors"), row["cpu_s"].get("authors")
            vs_wall = f"{wall / median:.2f}x" if wall else ""
            vs_cpu = f"{cpu / row['cpu_s'][name]:.2f}x" if cpu else ""
            print(f"| {row['variant']} | {name} | {row['first_step_s'][name]} | {median} | {row['best_s'][name]} | "
                  f"{row['cpu_s'][name]} | {vs_wall} | {vs_cpu} |")
        if row["skipped"]:
            print(row["skipped"])
        if "profile" in row:
            print(f"\nwhere an eager {row['variant']} step's time goes:\n{row['profile']}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
