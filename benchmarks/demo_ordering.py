"""Does the demo rank the methods as the paper does? Every variant, several seeds, mean ± std.

Trains every variant of the paper's ablation (baseline, said, said_moae, said_hdw, full)
plus ncls1 with the demo recipe of params.yaml (pre-trained backbone of the
``pretrain_backbone`` stage, fine-tuned per variant and seed), evaluates each run on the
synthetic AT-USTC and prints Any-Time R1/mAP (and every scenario) as mean ± std over the
seeds, next to the paper's ablation ordering and chance. Also writes ``runs.csv`` (one row
per run) and ``summary.csv`` to ``--out``.

The data must exist (``snakemake --cores 2 data/atustc/train_sampled.csv``); the script
calls the same functions as the pipeline's rules (atreid.engine.pretrain,
atreid.engine.trainer, atreid.eval.runner), in one process, and reuses the pre-trained
weights and finished runs found in ``--out`` for the same settings.

    python benchmarks/demo_ordering.py --seeds 0 1 2                 # ~25 min on 2 cores
    python benchmarks/demo_ordering.py --set train.epochs=8 --out /tmp/o   # a recipe experiment
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

ABLATION = {  # the paper's Table 4 rows (SAID, MoAE, HDW) and the unified-embedding control
    "baseline": {"ncls": 6, "said": False, "moae": False, "hdw": False},
    "said": {"ncls": 6, "said": True, "moae": False, "hdw": False},
    "said_moae": {"ncls": 6, "said": True, "moae": True, "hdw": False},
    "said_hdw": {"ncls": 6, "said": True, "moae": False, "hdw": True},
    "full": {"ncls": 6, "said": True, "moae": True, "hdw": True},
    "ncls1": {"ncls": 1, "said": False, "moae": False, "hdw": False},
}
PAPER_ANY_TIME = {"baseline": (50.90, 34.75), "said": (52.03, 37.49), "said_moae": (53.70, 38.76),
                  "said_hdw": (53.32, 39.61), "full": (55.80, 41.38)}
SCENARIO_COLUMNS = ("Any-Time", "DT-ST", "DT-LT", "NT-ST", "NT-LT", "AD-ST", "AD-LT")


def parse_set(items: list[str]) -> dict:
    """``a.b=value`` pairs (value parsed as YAML) -> a nested dict."""
    import yaml

    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _child_init() -> None:
    from atreid.cli import pin_cpu_kernels

    pin_cpu_kernels()
    os.environ.setdefault("ATREID_QUIET", "1")
    logging.basicConfig(level=logging.WARNING)


def pretrained_file(params: dict, out: Path) -> str:
    from atreid.engine.pretrain import pretrain_backbone
    from atreid.io import settings_sha256
    from atreid.workflow import pretrain_settings

    settings = pretrain_settings(params)
    path = out / f"pretrained-{settings_sha256(settings)[:16]}.pth"
    if not path.is_file():
        summary = pretrain_backbone(settings, out_path=path, history_path=path.with_suffix(".csv"))
        print(f"pre-trained backbone: {summary}", flush=True)
    return str(path)


def run_one(params: dict, variant: str, seed: int, out: Path, data_dir: Path, threads: int) -> dict:
    from atreid.config import deep_merge, resolve_variant
    from atreid.io import settings_sha256
    from atreid.engine.trainer import train_variant
    from atreid.eval.outcomes import OUTCOMES_KEY
    from atreid.eval.runner import evaluate_benchmark

    settings = resolve_variant(params, variant, seed)
    pretrained = None
    if settings["model"]["pretrained"] == "synthetic":  # the stage's file, keyed by its own settings
        pretrained = pretrained_file(params, out)
    digest = settings_sha256({"run": settings, "pretrained": pretrained})[:16]
    run_dir = out / "runs" / f"{variant}-seed{seed}-{digest}"
    metrics_path = run_dir / "atustc.json"
    if not metrics_path.is_file():
        if not (run_dir / "model.pt").is_file():  # written last, atomically: a finished training
            train_variant(settings, index_csv=data_dir / "atustc" / "train_sampled.csv",
                          labels_json=data_dir / "atustc" / "labels.json",
                          images_root=data_dir / "atustc" / "images" / "AT-USTC", out_path=run_dir / "model.pt",
                          history_path=run_dir / "history.csv", checkpoint_dir=run_dir / "checkpoints",
                          threads=threads, device="cpu", pretrained_file=pretrained)
        train_s = float(pd.read_csv(run_dir / "history.csv")["epoch_time_s"].sum())
        eval_settings = deep_merge(params["eval"], {"device": "cpu"})
        for key in ("benchmarks", "paper_results"):
            eval_settings.pop(key, None)
        metrics = evaluate_benchmark("atustc", model_path=run_dir / "model.pt", data_dir=data_dir,
                                     settings=eval_settings)
        metrics.pop(OUTCOMES_KEY, None)  # the per-query outcomes: only the numbers are kept here
        metrics["train_s"] = train_s
        metrics_path.write_text(json.dumps(metrics, default=str))
        (run_dir / "model.pt").unlink()  # only the numbers are kept
    metrics = json.loads(metrics_path.read_text())
    row = {"variant": variant, "seed": seed, "train_s": round(metrics["train_s"], 1)}
    row.update({k: v for k, v in metrics["summary"].items()})
    row.update({f"chance:{k}": v for k, v in metrics["chance_summary"].items()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", nargs="+", default=["params.yaml"], help="params files, deep-merged in order")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.epochs=8")
    parser.add_argument("--variants", nargs="+", default=list(ABLATION), choices=list(ABLATION))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs trained side by side")
    parser.add_argument("--out", default="benchmarks/out/demo_ordering")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per training (default: train.cpu_threads, as the pipeline)")
    args = parser.parse_args()
    from atreid.cli import pin_cpu_kernels

    pin_cpu_kernels()  # as the pipeline's jobs do, before torch is imported
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("ATREID_QUIET", "1")

    from atreid.config import deep_merge, read_yaml, resolve_variant, validate_params

    merged: dict = {}
    for path in args.params:
        merged = deep_merge(merged, read_yaml(path) or {})
    merged = deep_merge(merged, parse_set(args.set))
    merged["variants"] = {name: ABLATION[name] for name in args.variants}
    params = validate_params(merged, source=" + ".join(args.params))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads is None:
        args.threads = params["train"].get("cpu_threads") or os.cpu_count() or 1
    started = time.perf_counter()
    runs = [(variant, seed) for variant in args.variants for seed in args.seeds]
    if any(resolve_variant(params, v, 0)["model"]["pretrained"] == "synthetic" for v in args.variants):
        pretrained_file(params, out)  # once, before the runs that share it
    rows = []
    # Runs side by side like the pipeline's jobs (spawned: each child pins its CPU kernels
    # before importing torch).
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_child_init) as pool:
        futures = [pool.submit(run_one, params, variant, seed, out, Path(args.data_dir), args.threads)
                   for variant, seed in runs]
        for future in as_completed(futures):
            row = future.result()  # a failed run stops everything at once, with its traceback
            rows.append(row)
            print(f"{row['variant']:10s} seed {row['seed']}: Any-Time R1 {row['Any-Time_R1']:.2f} "
                  f"mAP {row['Any-Time_mAP']:.2f} ({row['train_s']:.0f} s training)", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "runs.csv", index=False)
    metric_columns = [f"{s}_{m}" for s in SCENARIO_COLUMNS for m in ("R1", "mAP")]
    grouped = table.groupby("variant", sort=False)[metric_columns]
    summary = grouped.mean().round(2).join(grouped.std(ddof=1).round(2), rsuffix=":std")
    summary.insert(0, "n", table.groupby("variant", sort=False).size())
    summary.to_csv(out / "summary.csv")
    chance = table.iloc[0]
    print(f"\n{len(args.seeds)} seeds per variant, {time.perf_counter() - started:.0f} s in all; "
          f"chance: Any-Time R1 {chance['chance:Any-Time_R1']:.2f} mAP {chance['chance:Any-Time_mAP']:.2f}\n")
    print("| variant | n | Any-Time R1 | Any-Time mAP | " + " | ".join(f"{s} R1" for s in SCENARIO_COLUMNS[1:])
          + " | paper R1 / mAP |")
    print("|---|---:|---:|---:|" + "---:|" * (len(SCENARIO_COLUMNS) - 1) + "---:|")
    for variant, row in summary.iterrows():
        cells = [f"{row[f'{s}_R1']:.2f} ± {row[f'{s}_R1:std']:.2f}" for s in SCENARIO_COLUMNS[1:]]
        paper = PAPER_ANY_TIME.get(variant)
        print(f"| {variant} | {int(row['n'])} | {row['Any-Time_R1']:.2f} ± {row['Any-Time_R1:std']:.2f} | "
              f"{row['Any-Time_mAP']:.2f} ± {row['Any-Time_mAP:std']:.2f} | " + " | ".join(cells)
              + f" | {'%.2f / %.2f' % paper if paper else '-'} |")


if __name__ == "__main__":
    main()
