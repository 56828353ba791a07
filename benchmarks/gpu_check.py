"""The GPU check's driver: every GPU measurement the benchmarks promise, as one table.

Run it through ``benchmarks/gpu_check.sh``, which picks the Python, runs this under a
hard time limit and then writes the table even if the run was cut short:

    gpu_check.py run --results DIR --budget S [--limits train=200,compile=110,...] [--smoke]
    gpu_check.py table --results DIR --out FILE.md [--json FILE.json] [--machine FILE]

``run`` refuses (one line, exit 3) without CUDA unless ``--smoke``; else it prints the
machine and runs the parts in one process (one torch import), in this order, each under
its own limit and the overall budget; a part whose time runs out is stopped and the next
one starts, a part that no longer fits is skipped with a note. Each part reuses an
existing benchmark's functions:

* ``train``: images/s of the trainer's optimisation step and peak memory, per variant
  (:func:`train_throughput.measure_one`, mode "ours": bf16 autocast, TF32, fused SDPA on
  CUDA), then full / baseline step time;
* ``compile``: the same step of ``full`` with ``train.compile`` (the first step's time, the
  compilation, on its own row), and its speed-up over the eager ``full`` of ``train``;
* ``loader``: images/s of one DataLoader worker, atreid's and the authors' way, on
  256x128 JPEGs (:func:`loader.measure`), and the workers the measured step rate needs;
* ``moae``: the MoAE layer (as the model runs it) against the per-expert loop
  (:func:`moae.layer_benchmark`);
* ``eval``: the AT-USTC evaluation against the per-query oracle
  (:func:`eval_speed.speed`).

Every row is appended to ``DIR/<part>.jsonl`` as soon as it is measured, so a part that
runs out of time keeps what it measured; ``table`` marks every expected row that is
missing as not measured, with the part's status.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
for _path in (str(REPO), str(BENCHMARKS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

VARIANTS = ("full", "baseline", "ncls1", "said", "said_moae", "said_hdw")
PARTS = ("train", "compile", "loader", "moae", "eval")

# GPU: the promised settings. Smoke: tiny sizes that run on a CPU in seconds.
SIZES = {
    "gpu": {"arch": "vit_base_uniat", "image_size": (256, 128), "batch_p": 8, "batch_k": 8, "warmup": 5,
            "iters": 20, "layer": (768, 3072), "layer_batch": 64, "layer_warmup": 5, "layer_iters": 40,
            "eval_scale": 1.0, "eval_dim": 768, "eval_repeats": 3, "loader_images": 512, "loader_size": (256, 128),
            "compile_arch": "vit_base_uniat",
            "limits": {"train": 200, "compile": 110, "loader": 30, "moae": 40, "eval": 100}},
    "smoke": {"arch": "vit_tiny_uniat", "image_size": (32, 16), "batch_p": 2, "batch_k": 2, "warmup": 1,
              "iters": 1, "layer": (64, 256), "layer_batch": 8, "layer_warmup": 1, "layer_iters": 2,
              "eval_scale": 0.05, "eval_dim": 32, "eval_repeats": 1, "loader_images": 32, "loader_size": (64, 32),
              # Compiling on a small CPU takes minutes for 4 blocks: the smoke compiles one.
              "compile_arch": "vit_tiny_uniat_1block",
              "limits": {"train": 60, "compile": 90, "loader": 20, "moae": 30, "eval": 60}},
}
MIN_PART_S = 10  # don't start a part with less than this left
TARGETS = {"ratio": 1.15, "moae": 3.0, "eval": 10.0}  # GPU targets from benchmarks/README.md


def expected_rows() -> list[tuple[str, str]]:
    """(part, item) of every row the table must have."""
    rows = [("train", v) for v in VARIANTS] + [("memory", v) for v in VARIANTS]
    rows += [("ratio", "full / baseline step time")]
    rows += [("compile", "full, compiled"), ("compile", "first step (compilation)"), ("compile", "speed-up")]
    rows += [("loader", "atreid, 1 worker"), ("loader", "authors' way, 1 worker"), ("loader", "workers needed")]
    rows += [("moae", "ours (layer as the model runs it)"), ("moae", "naive loop"), ("moae", "speed-up")]
    rows += [("eval", "ours, 6 scenarios"), ("eval", "oracle, 6 scenarios"), ("eval", "speed-up"),
             ("eval", "speed-up, metrics only"), ("eval", "max abs diff vs oracle")]
    return rows


# Which part measures which table rows (memory and ratio come from the train part).
SOURCE = {"train": "train", "memory": "train", "ratio": "train", "compile": "compile", "loader": "loader",
          "moae": "moae", "eval": "eval"}


class Rows:
    """Appends rows to ``<dir>/<part>.jsonl`` (flushed, so a killed part keeps them)."""

    def __init__(self, results: Path, part: str) -> None:
        self.path = results / f"{part}.jsonl"

    def add(self, part: str, item: str, value: float | None, unit: str, note: str = "", **extra) -> None:
        row = {"part": part, "item": item, "value": value, "unit": unit, "note": note, **extra}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        shown = "-" if value is None else f"{value:g}"
        print(f"[gpu_check] {part} | {item} | {shown} {unit} | {note}", flush=True)


def _device(smoke: bool):
    import torch

    if torch.cuda.is_available() and not smoke:
        return torch.device("cuda", torch.cuda.current_device())  # an index: torch.cuda.set_device needs one
    return torch.device("cpu")


# ---- machine ---------------------------------------------------------------------------
def machine_lines(smoke: bool) -> list[str]:
    import numpy as np
    import torch

    lines = [f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, "
             f"CUDA (torch build) {torch.version.cuda}, numpy {np.__version__}",
             f"host: {platform.machine()}, {os.cpu_count()} CPUs"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {props.name}, {props.total_memory / 2 ** 30:.0f} GiB, "
                     f"capability {props.major}.{props.minor}, {torch.cuda.device_count()} visible")
    else:
        lines.append("GPU: none visible to torch")
    lines.append("mode: " + ("SMOKE (CPU, tiny sizes: the numbers mean nothing)" if smoke
                             else "GPU (the promised sizes)"))
    return lines


def cmd_machine_check(smoke: bool) -> bool:
    import torch

    if not smoke and not torch.cuda.is_available():
        print("gpu_check: refused: no CUDA device visible to torch (this check needs the GPU machine; "
              "`bash benchmarks/gpu_check.sh --smoke` runs the tiny CPU version)", file=sys.stderr)
        return False
    return True


# ---- parts -------------------------------------------------------------------------------
def part_train(size: dict, rows: Rows, deadline: float, smoke: bool) -> str:
    import torch

    from train_throughput import measure_one

    device = _device(smoke)
    cuda = device.type == "cuda"
    args = _train_args(size, device, smoke)
    step_ms: dict[str, float] = {}
    skipped: list[str] = []
    slowest = 0.0
    for variant in VARIANTS:
        left = deadline - time.time()
        if slowest and left < 1.3 * slowest:
            note = f"skipped: {left:.0f} s left of the part's budget, a variant took up to {slowest:.0f} s"
            rows.add("train", variant, None, "images/s", note)
            rows.add("memory", variant, None, "MiB", note)
            skipped.append(variant)
            continue
        gc.collect()
        before = 0.0
        if cuda:
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated(device) / 2 ** 20
        started = time.time()
        r = measure_one(variant, "ours", args)
        slowest = max(slowest, time.time() - started)
        step_ms[variant] = r["ms_per_step"]
        rows.add("train", variant, r["images_per_s"], "images/s",
                 f"{r['ms_per_step']} ms/step (median of {size['iters']}, {size['warmup']} warm-up), best "
                 f"{r['best_images_per_s']} img/s; {r['arch']} {r['image_size']}, batch {r['batch']}, {r['amp']}, "
                 f"fused SDPA {r['fused_attn']}, random init", ms_per_step=r["ms_per_step"])
        if cuda:
            note = (f"torch.cuda.max_memory_allocated over warm-up + timed steps (model, optimizer state, "
                    f"activations); {before:.0f} MiB still allocated before the variant")
        else:
            note = "CPU: peak RSS of the process so far (cumulative over the variants)"
        rows.add("memory", variant, r["peak_mem_mib"], "MiB", note)
        if variant == "baseline" and "full" in step_ms:
            ratio = step_ms["full"] / step_ms["baseline"]
            target = TARGETS["ratio"]
            verdict = f"target <= {target}x: {'ok' if ratio <= target else 'MISSED'}" if cuda else "CPU smoke"
            rows.add("ratio", "full / baseline step time", round(ratio, 3), "x",
                     f"{step_ms['full']} / {step_ms['baseline']} ms; {verdict}")
        del r
    if not ("full" in step_ms and "baseline" in step_ms):
        rows.add("ratio", "full / baseline step time", None, "x", "not measured: needs both full and baseline")
    return f"skipped for time: {', '.join(skipped)}" if skipped else ""


def _train_args(size: dict, device, smoke: bool, **overrides) -> argparse.Namespace:
    args = dict(device=str(device), threads=1 if smoke else (os.cpu_count() or 1), arch=size["arch"],
                image_size=size["image_size"], batch_p=size["batch_p"], batch_k=size["batch_k"], compile=False,
                iters=size["iters"], warmup=size["warmup"])
    return argparse.Namespace(**{**args, **overrides})


def _eager_full(results: Path) -> dict | None:
    """The train part's row for ``full`` (eager), if it measured one."""
    path = results / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return next((r for r in rows if r["part"] == "train" and r["item"] == "full" and r["value"]), None)


def part_compile(size: dict, rows: Rows, deadline: float, smoke: bool) -> str:
    from train_throughput import measure_one

    device = _device(smoke)
    arch = size["compile_arch"]
    if arch not in _archs():
        _register_one_block_arch(arch)
    eager = measure_one("full", "ours", _train_args(size, device, smoke, arch=arch))
    r = measure_one("full", "ours", _train_args(size, device, smoke, compile=True, arch=arch))
    where = f"{r['arch']} {r['image_size']}, batch {r['batch']}, {r['amp']}"
    rows.add("compile", "full, compiled", r["images_per_s"], "images/s",
             f"train.compile: {r['ms_per_step']} ms/step (median of {size['iters']}); {where}")
    rows.add("compile", "first step (compilation)", r["first_step_s"], "s", "Inductor, one graph, cold cache")
    rows.add("compile", "speed-up", round(eager["ms_per_step"] / r["ms_per_step"], 3), "x",
             f"eager {eager['ms_per_step']} / compiled {r['ms_per_step']} ms per step, measured here")
    return ""


def _archs() -> list[str]:
    from atreid.model.uniat import list_archs

    return list_archs()


def _register_one_block_arch(name: str) -> None:
    import dataclasses

    from atreid.model.uniat import get_arch, register_arch

    register_arch(name, dataclasses.replace(get_arch("vit_tiny_uniat"), depth=1))


def part_loader(size: dict, rows: Rows, deadline: float, smoke: bool) -> str:
    from loader import measure

    args = argparse.Namespace(images=size["loader_images"], size=list(size["loader_size"]), batch=16 if smoke else 64,
                              reps=1 if smoke else 2)
    rates = measure(args)
    h, w = size["loader_size"]
    where = f"{h}x{w} JPEG, decode + the paper's train transforms, 1 process, 1 torch thread, best of {args.reps}"
    rows.add("loader", "atreid, 1 worker", round(rates["atreid"], 1), "images/s", where)
    rows.add("loader", "authors' way, 1 worker", round(rates["authors"], 1), "images/s",
             "Image.open().convert + torchvision Compose, as the released code")
    eager = _eager_full(rows.path.parent)
    if eager is None:
        rows.add("loader", "workers needed", None, "", "not measured: needs the train part's full images/s")
    else:
        rows.add("loader", "workers needed", math.ceil(eager["value"] / rates["atreid"]), "",
                 f"ceil({eager['value']} images/s of eager full / {rates['atreid']:.0f} per worker)")
    return ""


def part_moae(size: dict, rows: Rows, deadline: float, smoke: bool) -> str:
    import torch

    from moae import layer_benchmark

    device = _device(smoke)
    cuda = device.type == "cuda"
    if cuda:  # as benchmarks/moae.py sets them
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dim, hidden = size["layer"]
    batch = size["layer_batch"]
    t = layer_benchmark(dim, hidden, batch, device, cuda, size["layer_warmup"], size["layer_iters"])
    ours, loop = t["vectorised"]["wall"], t["loop"]["wall"]
    where = (f"dim {dim}/{hidden}, 6 CLS x {batch}, forward + backward, {'bf16 autocast' if cuda else 'fp32'}, "
             f"median wall of {size['layer_iters']}")
    path = "dense two-expert path" if cuda else "routed CPU path"
    rows.add("moae", "ours (layer as the model runs it)", round(ours * 1e3, 4), "ms", f"{path}; {where}")
    rows.add("moae", "naive loop", round(loop * 1e3, 4), "ms", f"nn.Linear per atom, loop over 6 tokens x 2 experts; {where}")
    verdict = f"target >= {TARGETS['moae']}x: {'ok' if loop / ours >= TARGETS['moae'] else 'MISSED'}" if cuda \
        else "CPU smoke"
    rows.add("moae", "speed-up", round(loop / ours, 3), "x", f"loop / ours; {verdict}")
    return ""


def part_eval(size: dict, rows: Rows, deadline: float, smoke: bool) -> str:
    from eval_speed import speed

    device = _device(smoke)
    args = argparse.Namespace(scale=size["eval_scale"], dim=size["eval_dim"], seed=0, chunk_size=1024,
                              oracle_fraction=1.0, repeats=size["eval_repeats"])
    r = speed(args, device)
    where = (f"synthetic AT-USTC, scale {args.scale}, {r['images']} images, dim {args.dim}; ours on {device.type}, "
             f"fastest of {args.repeats}; oracle on CPU, all queries")
    rows.add("eval", "ours, 6 scenarios", round(r["total_ours_s"], 4), "s", f"evaluate_protocol from features; {where}")
    rows.add("eval", "oracle, 6 scenarios", round(r["total_oracle_s"], 4), "s", "CPU distance matrix + per-query loop")
    ratio = r["total_oracle_s"] / r["total_ours_s"]
    verdict = f"target >= {TARGETS['eval']}x: {'ok' if ratio >= TARGETS['eval'] else 'MISSED'}" if not smoke \
        else "smoke"
    per = ", ".join(f"{s['scenario']} {s['oracle_s'] / s['ours_s']:.1f}x" for s in r["scenarios"])
    rows.add("eval", "speed-up", round(ratio, 3), "x", f"oracle / ours; {verdict}; per scenario: {per}")
    rows.add("eval", "speed-up, metrics only", round(r["total_oracle_loop_s"] / r["total_ours_distmat_s"], 3), "x",
             "oracle loop / evaluate_distmat on the precomputed matrix")
    rows.add("eval", "max abs diff vs oracle", float(r["max_diff"]), "",
             f"CMC@1-20, mAP, mINP, valid counts; agree to 1e-6: {'yes' if r['agree'] else 'NO'}")
    return ""


PART_FUNCS = {"train": part_train, "compile": part_compile, "loader": part_loader, "moae": part_moae,
              "eval": part_eval}


class PartTimeout(BaseException):  # not an Exception: no library ``except Exception`` swallows it
    pass


def _alarm(signum, frame):
    raise PartTimeout


def cmd_run(args: argparse.Namespace) -> int:
    started = time.time()
    if not cmd_machine_check(args.smoke):
        return 3
    import torch

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    machine = results / "machine.txt"  # the shell script wrote nvidia-smi -L there
    lines = machine_lines(args.smoke)
    before = machine.read_text() if machine.is_file() else ""
    machine.write_text(before + "\n".join(lines) + "\n")
    print("== gpu_check: machine\n" + before + "\n".join(lines), flush=True)
    limits = dict(SIZES["smoke" if args.smoke else "gpu"]["limits"])
    for item in filter(None, (args.limits or "").split(",")):
        name, _, seconds = item.partition("=")
        limits[name] = float(seconds)
    size = SIZES["smoke" if args.smoke else "gpu"]
    if args.smoke:
        torch.set_num_threads(1)  # steadier than 2 contended threads on a shared CPU
    end = started + args.budget
    failed = False
    signal.signal(signal.SIGALRM, _alarm)
    for part in PARTS:
        left = end - time.time()
        status_file = results / f"{part}.status"
        if left < MIN_PART_S:
            status = f"skipped: {max(left, 0):.0f} s left of the {args.budget:.0f} s budget"
            status_file.write_text(status + "\n")
            print(f"== gpu_check: part {part} {status}", flush=True)
            continue
        limit = min(limits[part], left)
        print(f"== gpu_check: part {part} (limit {limit:.0f} s)", flush=True)
        part_start = time.time()
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            note = PART_FUNCS[part](size, Rows(results, part), part_start + limit - 2, args.smoke)
            status = f"ok ({time.time() - part_start:.0f} s)" + (f"; {note}" if note else "")
        except PartTimeout:
            status = f"stopped at its {limit:.0f} s limit"
        except Exception:  # noqa: BLE001 - report and go on with the next part
            traceback.print_exc()
            status = f"failed after {time.time() - part_start:.0f} s: see gpu_check.log"
            failed = True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        status_file.write_text(status + "\n")
        print(f"== gpu_check: part {part}: {status}", flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 1 if failed else 0


# ---- table -------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and (value == 0 or 1e-3 <= abs(value) < 1e6):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def cmd_table(args: argparse.Namespace) -> int:
    results = Path(args.results)
    got: dict[tuple[str, str], dict] = {}
    for part in PARTS:
        path = results / f"{part}.jsonl"
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    got[(row["part"], row["item"])] = row
    status = {part: ((results / f"{part}.status").read_text().strip() if (results / f"{part}.status").is_file()
                     else "not run") for part in PARTS}
    table, missing = [], 0
    for part, item in expected_rows():
        row = got.get((part, item))
        if row is None:
            row = {"part": part, "item": item, "value": None, "unit": "",
                   "note": f"not measured: part '{SOURCE[part]}' {status[SOURCE[part]]}"}
        if row["value"] is None or (isinstance(row["value"], float) and not math.isfinite(row["value"])):
            missing += 1
        table.append(row)
    machine = Path(args.machine).read_text().strip() if args.machine and Path(args.machine).is_file() else ""
    lines = ["# GPU check (benchmarks/gpu_check.sh)", ""]
    lines += [f"- {line}" for line in machine.splitlines() if line.strip()]
    lines += [f"- part {part}: {status[part]}" for part in PARTS]
    lines += ["", "| part | item | value | unit | notes |", "|---|---|---:|---|---|"]
    for row in table:
        lines.append(f"| {row['part']} | {row['item']} | {_fmt(row['value'])} | {row['unit']} | {row['note']} |")
    lines += ["", f"{len(table) - missing} of {len(table)} rows measured."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine.splitlines(), "status": status, "rows": table},
                                              indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--results", required=True, help="folder for the rows (<part>.jsonl) and statuses")
    p.add_argument("--budget", type=float, required=True, help="seconds for all the parts")
    p.add_argument("--limits", default=None, help="per-part seconds, e.g. train=240,moae=60,eval=120")
    p.add_argument("--smoke", action="store_true")
    p = sub.add_parser("table")
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--json", default=None)
    p.add_argument("--machine", default=None, help="file with the machine lines")
    args = parser.parse_args(argv)
    return {"run": cmd_run, "table": cmd_table}[args.command](args)


if __name__ == "__main__":
    os.environ.setdefault("ATREID_QUIET", "1")
    raise SystemExit(main())
