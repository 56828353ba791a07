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

from atreid.data.adapters import register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter

FILE_RE = re.compile(r"^(?P<person>\d+)-(?P<camera>\d+)-(?P<outfit>\d+)-(?P<image>\d+)\.(?:jpg|png)$")
FOLDERS = {"train": "train", "query": "query", "gallery": "gallery"}


@register_benchmark
class VCClothes(BenchmarkAdapter):
    name = "vc_clothes"
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
