"""VC-Clothes (synthetic clothes-changing benchmark rendered from a game engine; optional).

Reference: Wan et al., "When Person Re-identification Meets Changing Clothes", CVPR
Workshops 2020. URL: https://wanfb.github.io/dataset.html (agreement).

Layout (``VC-Clothes/``)::

    train/ query/ gallery/     PPPP-CC-OO-NNNN.jpg     person, camera, outfit, image

No statistics are recorded in protocols.md, so the verification only reports counts
(``expected_counts: official`` compares nothing and says so).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import clothes_changing
from atreid.data.synthetic.miniatures import Context, Plan, Shot, shot_row, start_plan

FILE_RE = re.compile(r"^(?P<person>\d+)-(?P<camera>\d+)-(?P<outfit>\d+)-(?P<image>\d+)\.(?:jpg|png)$")
FOLDERS = {"train": "train", "query": "query", "gallery": "gallery"}


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_vc_clothes(ctx: Context) -> Plan:
    plan, rng, ids = start_plan(ctx, "VC-Clothes", 512, 4 + 14)
    train, test = ids[:4], ids[4:]
    for pid in ids:
        # Cameras 2 and 3 see outfit 1; camera 1 outfit 1 or 2; camera 4 outfit 2 or 3.
        outfit_of = {1: int(rng.integers(1, 3)), 2: 1, 3: 1, 4: int(rng.integers(2, 4))}
        number = iter(range(1, 100))
        if pid in train:
            images = [("train", "train", cam) for cam in (1, 2, 3, 4)]
        else:
            images = [("query", "query", cam) for cam in (1, 2, 3, 4)]
            images += [("gallery", "gallery", cam) for cam in (1, 2, 3, 4) for _ in range(2)]
        for folder, split, cam in images:
            rel = f"{folder}/{pid:04d}-{cam:02d}-{outfit_of[cam]:02d}-{next(number):02d}.jpg"
            plan.shots.append(Shot(rel, pid, outfit_of[cam], cam, False,
                                   shot_row(rel, pid, cam, split, clothes=outfit_of[cam])))
    return plan


@register_benchmark
class VCClothes(Benchmark):
    name = "vc_clothes"
    protocols = clothes_changing("vc_clothes")
    miniature = staticmethod(plan_vc_clothes)
    title = "VC-Clothes"
    reference = "Wan et al., When Person Re-identification Meets Changing Clothes, CVPRW 2020"
    top_folders = ("VC-Clothes", "VC_Clothes", "vc-clothes")
    required = ("train/", "query/", "gallery/")
    layout = "VC-Clothes/{train,query,gallery}/PPPP-CC-OO-NNNN.jpg"
    stat_groups = {"test": ("query", "gallery")}

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        rows, _ = self.walk(root, FOLDERS, FILE_RE, "PPPP-CC-OO-NNNN.jpg naming", self.row)
        return rows, []

    @staticmethod
    def row(found: re.Match[str], rel: str, split: str) -> dict[str, Any]:
        return {"path": rel, "person": int(found["person"]), "camera": int(found["camera"]), "modality": "rgb",
                "clothes": int(found["outfit"]), "split": split}
