"""PRCC (clothes-changing, RGB part).

Reference: Yang et al., "Person Re-identification by Contour Sketch under Moderate
Clothing Change", TPAMI 2019. URL: https://www.isee-ai.cn/~yangqize/clothing.html (agreement).

Raw release layout (``prcc/``), read as is::

    rgb/train/PPP/{A,B,C}_cropped_rgbNNN.jpg      camera letter in the file name
    rgb/val/PPP/{A,B,C}_cropped_rgbNNN.jpg
    rgb/test/{A,B,C}/PPP/cropped_rgbNNN.jpg       camera letter as the folder

Cameras A, B, C -> 1, 2, 3. A and B film a person in the same clothes (clothes 1), C
after a change (clothes 2). Test split: A -> ``gallery``, B and C -> ``query`` (the
protocols pick B for same-clothes, C for changed-clothes). sketch/ and contour/ are
ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import BenchmarkProtocols, GALLERY, HEAD_DT_LT, HEAD_DT_ST, VM_CC, VM_SC, Protocol
from atreid.data.synthetic.miniatures import Context, Plan, Shot, shot_row, start_plan

TRAIN_RE = re.compile(r"^rgb/(?P<split>train|val)/(?P<person>\d+)/(?P<camera>[ABC])_cropped_rgb(?P<n>\d+)\.jpg$")
TEST_RE = re.compile(r"^rgb/test/(?P<camera>[ABC])/(?P<person>\d+)/cropped_rgb(?P<n>\d+)\.jpg$")
CAMERAS = {"A": 1, "B": 2, "C": 3}
CLOTHES = {"A": 1, "B": 1, "C": 2}
TEST_SPLIT = {"A": "gallery", "B": "query", "C": "query"}


# ---- protocols ------------------------------------------------------------------------------
PROTOCOLS = BenchmarkProtocols("prcc", (
    Protocol("cc", HEAD_DT_LT, {"split": ("query",), "camera": (3,)}, GALLERY, VM_CC,
             "changed clothes: camera C queries x camera A gallery"),
    Protocol("sc", HEAD_DT_ST, {"split": ("query",), "camera": (2,)}, GALLERY, VM_SC,
             "same clothes: camera B queries x camera A gallery"),
), main="cc")


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_prcc(ctx: Context) -> Plan:
    plan, rng, ids = start_plan(ctx, "prcc", 221, 4 + 16)
    parts = {"train": ids[:3], "val": ids[3:4], "test": ids[4:]}
    cameras, clothes = {"A": 1, "B": 2, "C": 3}, {"A": 1, "B": 1, "C": 2}
    for part, persons in parts.items():
        for pid in persons:
            number = iter(range(1, 1000))
            for letter, count in (("A", 2 if part != "test" else 4), ("B", 2), ("C", 2)):
                for _ in range(count):
                    if part == "test":
                        rel = f"rgb/test/{letter}/{pid:03d}/cropped_rgb{next(number):03d}.jpg"
                        split = "gallery" if letter == "A" else "query"
                    else:
                        rel = f"rgb/{part}/{pid:03d}/{letter}_cropped_rgb{next(number):03d}.jpg"
                        split = part
                    plan.shots.append(Shot(rel, pid, clothes[letter], cameras[letter], False,
                                           shot_row(rel, pid, cameras[letter], split, clothes=clothes[letter])))
    return plan


@register_benchmark
class PRCC(Benchmark):
    name = "prcc"
    protocols = PROTOCOLS
    miniature = staticmethod(plan_prcc)
    title = "PRCC"
    reference = "Yang et al., Person Re-identification by Contour Sketch under Moderate Clothing Change, TPAMI 2019"
    top_folders = ("prcc", "PRCC")
    required = ("rgb/train/", "rgb/val/", "rgb/test/A/", "rgb/test/B/", "rgb/test/C/")
    layout = "prcc/rgb/{train,val}/PPP/{A,B,C}_cropped_rgbNNN.jpg + prcc/rgb/test/{A,B,C}/PPP/cropped_rgbNNN.jpg"
    splits = ("train", "val", "query", "gallery")
    stat_groups = {"test": ("query", "gallery")}
    published = {
        "all": {"ids": 221},
        "train": {"ids": 150},
        "test": {"ids": 71, "images": 10_800},
    }
    approximate = frozenset({("test", "images"), ("test", "ids"), ("train", "ids"), ("all", "ids")})

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        train, _ = self.walk(root, {"rgb/train": "train", "rgb/val": "val"}, TRAIN_RE,
                             "rgb/{train,val}/PPP/{A,B,C}_cropped_rgbNNN.jpg layout", self.row, on_path=True)
        test, _ = self.walk(root, {"rgb/test": None}, TEST_RE, "rgb/test/{A,B,C}/PPP/cropped_rgbNNN.jpg layout",
                            self.row, on_path=True)
        return train + test, []

    @staticmethod
    def row(found: re.Match[str], rel: str, split: str | None) -> dict[str, Any]:
        """A training/validation row keeps its folder's split; a test row's camera gives it."""
        letter = found["camera"]
        return {"path": rel, "person": int(found["person"]), "camera": CAMERAS[letter], "modality": "rgb",
                "clothes": CLOTHES[letter], "split": split or TEST_SPLIT[letter]}
