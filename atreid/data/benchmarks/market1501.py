"""Market-1501.

Reference: Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015.
URL: https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html (manual download).

Layout (``Market-1501-v15.09.15/``)::

    bounding_box_train/  PPPP_cCsS_FFFFFF_NN.jpg     train: 751 ids / 12,936 images
    query/               PPPP_cCsS_FFFFFF_NN.jpg     query: 750 ids / 3,368 images
    bounding_box_test/   PPPP_cCsS_FFFFFF_NN.jpg     gallery: 751 ids (incl. 0) / 15,913 images

person PPPP (``-1`` = junk boxes: dropped; ``0000`` = distractors: kept in the gallery
as negatives of every query), camera C (1-6), sequence S, frame FFFFFF, box NN.
Other files of the release (gt_bbox/, gt_query/, Thumbs.db, readme) are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import standard
from atreid.data.synthetic.miniatures import Context, Plan, Shot, pick, shot_row, start_plan

FILE_RE = re.compile(r"^(?P<person>-1|\d{4})_c(?P<camera>\d)s(?P<sequence>\d)_(?P<frame>\d{6})_(?P<box>\d{2})\.jpg$")
JUNK_ID = -1
DISTRACTOR_ID = 0


def parse_market_style(benchmark: Benchmark, root: Path, folders: dict[str, str], regex: re.Pattern[str],
                       pattern: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a Market-style release (flat split folders, person/camera in the file name).

    Junk boxes (person -1) are dropped and counted in ``benchmark.dropped``.
    """
    rows, ignored = benchmark.walk(root, folders, regex, pattern, market_row, flat=True)
    kept = [row for row in rows if row["person"] != JUNK_ID]
    if len(kept) < len(rows):
        benchmark.dropped["junk boxes, person id -1"] = len(rows) - len(kept)
    warnings = [f"{len(ignored)} other files ignored, e.g. {ignored[0]}"] if ignored else []
    return kept, warnings


def market_row(found: re.Match[str], rel: str, split: str) -> dict[str, Any]:
    return {"path": rel, "person": int(found["person"]), "camera": int(found["camera"]), "modality": "rgb",
            "clothes": -1, "split": split}


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_market1501(ctx: Context) -> Plan:
    plan, rng, ids = start_plan(ctx, "Market-1501-v15.09.15", 1501, 4 + 16)
    train, test = ids[:4], ids[4:]
    counter = iter(range(1, 100_000))

    def name(pid: int, cam: int) -> str:
        return f"{pid:04d}_c{cam}s{int(rng.integers(1, 7))}_{next(counter) * 25:06d}_{int(rng.integers(1, 4)):02d}.jpg"

    for pid in train:
        for cam in pick(rng, range(1, 7), 2):
            for _ in range(2):
                rel = f"bounding_box_train/{name(pid, cam)}"
                plan.shots.append(Shot(rel, pid, 1, cam, False, shot_row(rel, pid, cam, "train")))
    for pid in test:
        cams = pick(rng, range(1, 7), 3)
        for cam in cams[:2]:  # one query per camera, as the release picks them
            rel = f"query/{name(pid, cam)}"
            plan.shots.append(Shot(rel, pid, 1, cam, False, shot_row(rel, pid, cam, "query")))
        for cam in cams:
            for _ in range(3):
                rel = f"bounding_box_test/{name(pid, cam)}"
                plan.shots.append(Shot(rel, pid, 1, cam, False, shot_row(rel, pid, cam, "gallery")))
    # Distractors (id 0000: kept as negatives) and junk boxes (id -1: dropped), each a
    # person of its own.
    for k in range(8):
        cam = int(rng.integers(1, 7))
        rel = f"bounding_box_test/{name(0, cam)}"
        plan.shots.append(Shot(rel, 10_000 + k, 1, cam, False, shot_row(rel, 0, cam, "gallery")))
    for k in range(6):
        cam = int(rng.integers(1, 7))
        rel = f"bounding_box_test/-1_c{cam}s1_{next(counter) * 25:06d}_01.jpg"
        plan.shots.append(Shot(rel, 20_000 + k, 1, cam, False, None))
    return plan


@register_benchmark
class Market1501(Benchmark):
    name = "market1501"
    protocols = standard("market1501", "Market-1501")
    miniature = staticmethod(plan_market1501)
    title = "Market-1501"
    reference = "Zheng et al., Scalable Person Re-identification: A Benchmark, ICCV 2015"
    top_folders = ("Market-1501-v15.09.15", "Market-1501", "market1501")
    required = ("bounding_box_train/", "query/", "bounding_box_test/")
    layout = "Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/PPPP_cCsS_FFFFFF_NN.jpg"
    published = {
        "train": {"ids": 751, "images": 12_936},
        "query": {"ids": 750, "images": 3_368},
        "gallery": {"ids": 751, "images": 15_913},
    }
    folders = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        return parse_market_style(self, root, self.folders, FILE_RE, "PPPP_cCsS_FFFFFF_NN.jpg naming (person -1..9999)")

    def extra_statistics(self, index):
        gallery = index[index["split"] == "gallery"]
        return {"gallery": {"distractor_images": int((gallery["person"] == DISTRACTOR_ID).sum())}}
