"""Speed of the AT-USTC evaluation against the per-query numpy oracle, on synthetic data.

Builds an AT-USTC-sized test set in memory (135 identities, 16 cameras: 1-8 RGB,
9-16 IR, clothes ids, ~10,000 queries x ~7,300 gallery images per list pair, 768-d
features clustered by person / outfit / modality / camera so rankings are not
trivial), then scores the six scenarios with

* ours: :func:`atreid.eval.scoring.evaluate_protocol` (chunked, vectorised; CUDA is
  used automatically when available), and
* the oracle: :func:`atreid.eval.oracle.oracle_evaluate` on CPU, fed the full distance
  matrix (:func:`atreid.eval.metrics.cosine_distance` on CPU, timed as part of it),

in the same process, and prints both times, the ratio and whether every number
(CMC@1..20, mAP, mINP, valid counts) agrees to 1e-6.

    python benchmarks/eval_speed.py              # full size
    python benchmarks/eval_speed.py --scale 0.1  # quick check
    python benchmarks/eval_speed.py --oracle-fraction 0.2  # oracle on a seeded 20 % of
                                                 # the queries, time extrapolated
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import pandas as pd
import torch

from atreid.constants import IR_CAMERAS, RGB_CAMERAS, SCENARIOS
from atreid.eval.metrics import (
    Labels,
    RemovalRule,
    RetrievalResult,
    cosine_distance,
    evaluate_distmat,
    evaluate_retrieval,
)
from atreid.eval.oracle import oracle_evaluate
from atreid.data.benchmarks.atustc import SCENARIO_PROTOCOLS
from atreid.eval.scoring import evaluate_protocol, labels_of

NUM_PERSONS = 135
CLOTHES_PER_PERSON = 3
IMAGES_PER_CLIP = 3
# Clips per (person, modality, list pair): about 9,700 queries and 7,300 gallery images
# per list pair at scale 1, the AT-USTC test-set size.
QUERY_CLIPS, GALLERY_CLIPS = 12, 9
# (query flag, gallery flag) per (list pair, modality): DT lists are RGB, NT lists IR.
FLAGS = {("ST", "rgb"): (2, 6), ("ST", "ir"): (4, 8), ("LT", "rgb"): (3, 7), ("LT", "ir"): (5, 9)}
TOLERANCE = 1e-6
PERSON_STD, OUTFIT_STD = 0.3, 0.15


def synthetic_atustc(scale: float, dim: int, seed: int) -> tuple[torch.Tensor, pd.DataFrame]:
    """An AT-USTC-like test index and ``(N, 6, dim)`` features (float32)."""
    rng = np.random.default_rng(seed)
    rows = []
    clip = 0
    for person in range(1, NUM_PERSONS + 1):
        for (lists, modality), (q_flag, g_flag) in FLAGS.items():
            cameras = RGB_CAMERAS if modality == "rgb" else IR_CAMERAS
            for flag, clips in ((q_flag, QUERY_CLIPS), (g_flag, GALLERY_CLIPS)):
                for _ in range(max(1, round(clips * scale))):
                    camera = int(rng.choice(cameras))
                    clothes = int(rng.integers(1, CLOTHES_PER_PERSON + 1))
                    rows += [(person, camera, modality, clothes, flag, clip)] * IMAGES_PER_CLIP
                    clip += 1
    index = pd.DataFrame(rows, columns=["person", "camera", "modality", "clothes", "flag", "clip"])

    gen = torch.Generator().manual_seed(seed)

    def table(n: int, std: float) -> torch.Tensor:
        return torch.randn(n, dim, generator=gen) * std

    person = torch.as_tensor(index["person"].to_numpy() - 1)
    outfit = person * CLOTHES_PER_PERSON + torch.as_tensor(index["clothes"].to_numpy() - 1)
    modality = torch.as_tensor((index["modality"] == "ir").to_numpy().astype(np.int64))
    camera = torch.as_tensor(index["camera"].to_numpy() - 1)
    clip_id = torch.as_tensor(index["clip"].to_numpy().copy())
    # Identity signal is weak per dimension against outfit, modality, camera, clip and
    # image noise, so ranks spread (R1 roughly 40-90 %, mAP well below) as in practice.
    base = (table(NUM_PERSONS, PERSON_STD)[person] + table(NUM_PERSONS * CLOTHES_PER_PERSON, OUTFIT_STD)[outfit]
            + table(2, 1.0)[modality] + table(2 * NUM_PERSONS, PERSON_STD)[person * 2 + modality]
            + table(16, 0.2)[camera] + table(clip + 1, 0.25)[clip_id] + table(len(index), 1.0))
    features = torch.stack([base + table(len(index), 0.2) for _ in SCENARIOS], dim=1)
    return features.contiguous(), index


def compare(a: RetrievalResult, b: RetrievalResult) -> float:
    """Largest absolute difference between two results (inf if the counts differ)."""
    if a.num_valid != b.num_valid or a.num_queries != b.num_queries:
        return float("inf")
    if a.num_valid == 0:
        return 0.0
    return float(max(np.abs(a.cmc - b.cmc).max(), abs(a.mAP - b.mAP), abs(a.mINP - b.mINP)))


def timed(fn, device: torch.device, repeats: int = 1):
    """(result, fastest wall time in seconds) of ``fn()`` over ``repeats`` runs."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return result, best


def speed(args: argparse.Namespace, device: torch.device) -> dict:
    """Run the comparison, print it, and return the numbers (``scenarios``: one dict per
    scenario; ``total_*`` in seconds; ``max_diff``: the largest |difference| to the oracle)."""
    features, index = synthetic_atustc(args.scale, args.dim, args.seed)
    labels = labels_of(index)
    print(f"synthetic AT-USTC: {len(index)} images, {NUM_PERSONS} ids, dim {args.dim}, scale {args.scale}")
    dev_features = features.to(device)  # as after feature extraction
    rng = np.random.default_rng(args.seed)
    rows = []
    worst = 0.0
    for name, protocol in zip(SCENARIOS, SCENARIO_PROTOCOLS):
        q_rows, g_rows = protocol.rows(index)
        q_lab, g_lab = labels.take(q_rows), labels.take(g_rows)
        # Ours from features (distances included) and from the distance matrix (metrics only).
        ours, t_ours = timed(lambda: evaluate_protocol(dev_features, index, protocol, labels=labels,
                                                       chunk_size=args.chunk_size, device=device),
                             device, args.repeats)
        head = features[:, protocol.head]
        distmat, t_dist = timed(lambda: cosine_distance(head[q_rows], head[g_rows]), torch.device("cpu"))
        dev_distmat = distmat.to(device)
        from_dist, t_metrics = timed(lambda: evaluate_distmat(dev_distmat, q_lab, g_lab, protocol.rule,
                                                              chunk_size=args.chunk_size), device, args.repeats)
        # Oracle: the CPU distance matrix above, then the per-query loop (maybe on a subset).
        subset = None
        if args.oracle_fraction < 1.0:
            size = max(1, round(len(q_rows) * args.oracle_fraction))
            subset = np.sort(rng.choice(len(q_rows), size, replace=False))
        reference, t_loop = timed(lambda: oracle_evaluate(distmat, q_lab, g_lab, protocol.rule, queries=subset),
                                  torch.device("cpu"))
        t_loop /= 1.0 if subset is None else len(subset) / len(q_rows)
        if subset is None:
            checked = [ours, from_dist]
        else:  # equality on the oracle's queries
            checked = [evaluate_distmat(dev_distmat[torch.as_tensor(subset, device=device)], q_lab.take(subset),
                                        g_lab, protocol.rule, chunk_size=args.chunk_size)]
        diff = max(compare(result, reference) for result in checked)
        worst = max(worst, diff)
        rows.append((name, len(q_rows), len(g_rows), t_ours, t_metrics, t_dist + t_loop, t_loop,
                     100 * ours.cmc[0], 100 * ours.mAP, diff))

    print(f"\n{'scenario':8} {'queries':>7} {'gallery':>7} {'ours s':>7} {'ours-dm s':>9} {'oracle s':>8} "
          f"{'loop s':>7} {'ratio':>6} {'R1 %':>6} {'mAP %':>6} {'max|diff|':>9}")
    for name, nq, ng, t_ours, t_metrics, t_oracle, t_loop, r1, m_ap, diff in rows:
        print(f"{name:8} {nq:7d} {ng:7d} {t_ours:7.3f} {t_metrics:9.3f} {t_oracle:8.2f} {t_loop:7.2f} "
              f"{t_oracle / t_ours:6.1f} {r1:6.2f} {m_ap:6.2f} {diff:9.1e}")
    total = [sum(r[i] for r in rows) for i in (3, 4, 5, 6)]
    note = "" if args.oracle_fraction >= 1.0 else (
        f"\n(oracle loop timed on a seeded {100 * args.oracle_fraction:g} % of each scenario's queries, "
        "time extrapolated; equality checked on that subset)")
    print(f"{'total':24} {total[0]:7.3f} {total[1]:9.3f} {total[2]:8.2f} {total[3]:7.2f} {total[2] / total[0]:6.1f}"
          f"{note}")
    print("ours = evaluate_protocol from features (distances included); ours-dm = evaluate_distmat on the "
          "precomputed matrix (metrics only); oracle = CPU distance matrix + per-query loop; loop = the loop alone")
    print(f"speed-up, whole evaluation: {total[2] / total[0]:.1f}x; metrics only (loop vs ours-dm): "
          f"{total[3] / total[1]:.1f}x")
    print(f"all numbers agree to {TOLERANCE:g}: {'yes' if worst <= TOLERANCE else 'NO'} (max |diff| {worst:.1e})")
    keys = ("scenario", "queries", "gallery", "ours_s", "ours_distmat_s", "oracle_s", "oracle_loop_s", "r1", "mAP",
            "max_diff")
    return {"scenarios": [dict(zip(keys, row)) for row in rows], "total_ours_s": total[0],
            "total_ours_distmat_s": total[1], "total_oracle_s": total[2], "total_oracle_loop_s": total[3],
            "max_diff": worst, "agree": worst <= TOLERANCE, "images": len(index)}


def memory_case(args: argparse.Namespace, device: torch.device) -> None:
    """20,000 queries x 100,000 gallery, 768-d: time and peak memory of ours alone."""
    num_q, num_g, persons = 20_000, 100_000, 1_000
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    centres = torch.randn(persons, args.dim, generator=gen)
    q_person, g_person = rng.integers(0, persons, num_q), rng.integers(0, persons, num_g)

    def labels(person: np.ndarray) -> Labels:
        n = len(person)
        return Labels(person, rng.integers(1, 17, n), rng.integers(0, 2, n), rng.integers(1, 4, n))

    q_feat = centres[q_person] + 3.0 * torch.randn(num_q, args.dim, generator=gen)
    g_feat = centres[g_person] + 3.0 * torch.randn(num_g, args.dim, generator=gen)
    rule = RemovalRule(modality="cross", clothes="changed")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result, seconds = timed(lambda: evaluate_retrieval(q_feat, g_feat, labels(q_person), labels(g_person), rule,
                                                       chunk_size=args.chunk_size, device=device), device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{num_q} x {num_g} (dim {args.dim}, AD-LT-like rule) on {device}: {seconds:.1f} s, "
          f"R1 {100 * result.cmc[0]:.2f} %, mAP {100 * result.mAP:.2f} %, {result.num_valid} valid")
    print(f"peak RSS {peak:.2f} GiB (inputs alone {before:.2f} GiB)"
          + (f", peak CUDA {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="images per identity relative to AT-USTC")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--oracle-fraction", type=float, default=1.0,
                        help="run the oracle on this seeded fraction of each scenario's queries and extrapolate")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours per scenario; the fastest counts")
    parser.add_argument("--memory-case", action="store_true",
                        help="instead: 20,000 x 100,000 queries x gallery, ours only, with peak memory")
    args = parser.parse_args()
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, numpy {np.__version__}; ours on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "") + "; oracle on cpu")
    if args.memory_case:
        memory_case(args, device)
    else:
        speed(args, device)


if __name__ == "__main__":
    main()
