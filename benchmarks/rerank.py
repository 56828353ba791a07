"""Cost of k-reciprocal re-ranking (atreid.eval.rerank) at AT-USTC test size.

AT-USTC publishes only totals for its test split: 135 ids / 117,512 images, and 19,992
valid queries in the mixed test. Taking ~20,000 queries and the rest as gallery, split
evenly between the ST and LT lists (re-ranking runs per query/gallery list pair), one
list pair is about 9,996 queries x 48,760 gallery images (N = 58,756). The per-list
counts are an estimate, not published numbers.

Each measurement runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own:
synthetic 768-d L2-normalised features clustered by person (135 ids, a few
outfit/modality sub-clusters each), queries and gallery in the AT-USTC ratio, default
parameters (k1 = 20, k2 = 6, lambda = 0.3, chunk 1024), the fastest of ``--repeats``
runs after a small warm-up call; wall and CPU (user + system) seconds, one torch thread
by default (``--threads``) so that CPU time means work done even when other jobs share
the cores. The full size does not fit in a
short run on 2 busy cores, so a ladder of scaled sizes is measured and the full size is
extrapolated (CPU time: a least-squares fit of ``a N + b N^2`` with a, b >= 0, the
per-row work plus the N x N x D distance GEMM;
memory: the returned Q x G matrix exactly plus the rest linear in N through the two
largest sizes). The dense reference of
tests/test_rerank.py (numpy, N x N, Python loops) runs once at the smallest size, where
both results are also compared. R1 / mAP of plain and re-ranked distances are printed as
a sanity check (same-camera same-person entries removed).

    python benchmarks/rerank.py                       # ladder + reference (~50 s on 2 busy cores)
    python benchmarks/rerank.py --full                # and the full size once (~2 min more, ~5 GiB)
    python benchmarks/rerank.py --scales 0.02 0.04    # other ladder
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL_QUERIES = 9_996
FULL_GALLERY = 48_760
DIM = 768
PERSONS = 135


def make_data(num_q: int, num_g: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    person_centre = rng.normal(size=(PERSONS, DIM)).astype(np.float32)
    sub_centre = rng.normal(size=(PERSONS, 4, DIM)).astype(np.float32)
    num = num_q + num_g
    person = rng.integers(0, PERSONS, num)
    sub = rng.integers(0, 4, num)
    feats = 0.3 * person_centre[person] + 0.3 * sub_centre[person, sub] + rng.normal(size=(num, DIM)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    camera = rng.integers(1, 9, num)
    return feats[:num_q], feats[num_q:], person, camera


def child(mode: str, num_q: int, num_g: int, out_path: str | None, repeats: int, threads: int) -> None:
    """One measurement in this process; prints a JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from atreid.data.protocols import RemovalRule
    from atreid.eval.metrics import Labels, evaluate_distmat
    from atreid.eval.rerank import k_reciprocal_distances

    query, gallery, person, camera = make_data(num_q, num_g)
    zeros = np.zeros(len(person), dtype=np.int64)
    q_lab = Labels(person[:num_q], camera[:num_q], zeros[:num_q])
    g_lab = Labels(person[num_q:], camera[num_q:], zeros[num_q:])
    k_reciprocal_distances(torch.from_numpy(query[:50]), torch.from_numpy(gallery[:200]))  # one-time set-up
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if mode == "ours":
        def run():
            return k_reciprocal_distances(torch.from_numpy(query), torch.from_numpy(gallery))
    else:
        sys.path.insert(0, str(REPO))
        from tests.test_rerank import reference_rerank

        def run():
            return torch.from_numpy(reference_rerank(query, gallery))
    seconds = cpu_seconds = math.inf
    for _ in range(repeats if mode == "ours" else 1):  # the fastest: other jobs only slow it down
        dist = None  # free the previous result, so the peak is one run's
        cpu_start, start = _cpu_time(), time.perf_counter()
        dist = run()
        seconds = min(seconds, time.perf_counter() - start)
        cpu_seconds = min(cpu_seconds, _cpu_time() - cpu_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rule = RemovalRule(same_camera=True)
    plain = 1.0 - torch.from_numpy(query) @ torch.from_numpy(gallery).T
    before, after = evaluate_distmat(plain, q_lab, g_lab, rule), evaluate_distmat(dist, q_lab, g_lab, rule)
    if out_path:
        np.save(out_path, dist.numpy())
    print(json.dumps({"mode": mode, "q": num_q, "g": num_g, "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "peak_gib": peak,
                      "before_gib": rss_before, "r1": [before.cmc[0], after.cmc[0]], "map": [before.mAP, after.mAP]}))


def _cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(mode: str, num_q: int, num_g: int, out_path: str | None = None, repeats: int = 1,
              threads: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(num_q), str(num_g), "--repeats", str(repeats),
           "--threads", str(threads)]
    cmd += ["--save", out_path] if out_path else []
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1 / 32, 1 / 16, 1 / 8, 1 / 4])
    parser.add_argument("--repeats", type=int, default=2, help="runs per size of ours; the fastest counts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per measurement (1: CPU time stays meaningful when other jobs "
                             "share the cores; idle OpenMP threads spin and count as CPU time)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--full", action="store_true",
                        help="also run the full size once (~2 min with one thread, ~5 GiB)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "Q", "G"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.save, args.repeats, args.threads)
        return

    import numpy as np
    import torch

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({args.threads} thread(s) per measurement), load average {os.getloadavg()[0]:.2f}")
    rows = []
    for scale in sorted(args.scales):
        num_q, num_g = round(FULL_QUERIES * scale), round(FULL_GALLERY * scale)
        rows.append(run_child("ours", num_q, num_g, repeats=args.repeats, threads=args.threads))
    full = run_child("ours", FULL_QUERIES, FULL_GALLERY, threads=args.threads) if args.full else None
    ref = None
    if not args.no_reference:
        small = rows[0]
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        ours_path, ref_path = str(tmp / "rerank_ours.npy"), str(tmp / "rerank_ref.npy")
        run_child("ours", small["q"], small["g"], ours_path, threads=args.threads)
        ref = run_child("reference", small["q"], small["g"], ref_path, threads=args.threads)
        ref["max_diff"] = float(np.abs(np.load(ours_path) - np.load(ref_path)).max())

    print()
    print("| size | queries | gallery | N | wall s | CPU s | peak RSS GiB | R1 plain -> re-ranked | "
          "mAP plain -> re-ranked |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for row in rows + ([full] if full else []) + ([ref] if ref else []):
        name = "dense reference" if row["mode"] == "reference" else f"{row['q'] / FULL_QUERIES:.3g} x"
        print(f"| {name} | {row['q']:,} | {row['g']:,} | {row['q'] + row['g']:,} | {row['seconds']:.2f} | "
              f"{row['cpu_seconds']:.2f} | {row['peak_gib']:.2f} | "
              f"{100 * row['r1'][0]:.2f} -> {100 * row['r1'][1]:.2f} | "
              f"{100 * row['map'][0]:.2f} -> {100 * row['map'][1]:.2f} |")
    if ref:
        print(f"\ndense reference at N = {ref['q'] + ref['g']:,}: wall {ref['seconds']:.1f} s vs ours "
              f"{rows[0]['seconds']:.2f} s ({ref['seconds'] / rows[0]['seconds']:.1f}x), CPU {ref['cpu_seconds']:.1f} "
              f"vs {rows[0]['cpu_seconds']:.2f} s ({ref['cpu_seconds'] / rows[0]['cpu_seconds']:.1f}x); peak RSS "
              f"{ref['peak_gib']:.2f} vs {rows[0]['peak_gib']:.2f} GiB; max |difference| {ref['max_diff']:.1e}")
    if len(rows) >= 2:
        # CPU time = a N + b N^2 (per-row work + the N x N x D distance GEMM), a, b >= 0,
        # least squares in relative error. CPU time, not wall time: other jobs on the
        # machine change the wall time far more.
        n = np.array([r["q"] + r["g"] for r in rows], dtype=float)
        t = np.array([r["cpu_seconds"] for r in rows])
        terms = np.stack([n / t, n**2 / t], axis=1)
        (a, b), *_ = np.linalg.lstsq(terms, np.ones(len(n)), rcond=None)
        if min(a, b) < 0:  # keep the better single non-negative term
            fits = [np.linalg.lstsq(terms[:, [j]], np.ones(len(n)), rcond=None)[0][0] for j in (0, 1)]
            errs = [np.sum((terms[:, j] * fits[j] - 1) ** 2) for j in (0, 1)]
            a, b = (fits[0], 0.0) if errs[0] <= errs[1] else (0.0, fits[1])
        n_full = FULL_QUERIES + FULL_GALLERY
        share = 100 * b * n[-1] ** 2 / (a * n[-1] + b * n[-1] ** 2)
        print(f"\nfit: CPU s = {a * 1e3:.3g} x (N / 1000) + {b * 1e6:.3g} x (N / 1000)^2; at the largest size the "
              f"N^2 term is {share:.0f} %")
        seconds = a * n_full + b * n_full**2
        out_gib = lambda r: 4 * r["q"] * r["g"] / 2**30  # noqa: E731 (the returned float32 matrix)
        (ra, rb), (na, nb) = [r["peak_gib"] - out_gib(r) for r in rows[-2:]], n[-2:]
        rest = rb + (rb - ra) / (nb - na) * (n_full - nb)
        full_out = 4 * FULL_QUERIES * FULL_GALLERY / 2**30
        print(f"extrapolated to {FULL_QUERIES:,} x {FULL_GALLERY:,} (N = {n_full:,}): ~{seconds:.0f} CPU s "
              f"(~{seconds / 2:.0f} s wall if 2 idle cores split it perfectly); peak RSS "
              f"~{rest + full_out:.1f} GiB, of which {full_out:.2f} GiB is the returned matrix")
        if full:
            print(f"measured at that size (one run): {full['seconds']:.1f} s wall, {full['cpu_seconds']:.1f} CPU s, "
                  f"peak RSS {full['peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
