"""DeepChange (long-term, natural clothes changes over 12 months).

Reference: Xu et al., "DeepChange: A Long-Term Person Re-Identification Benchmark with
Clothes Change", ICCV 2023 (arXiv:2105.14685). URL: https://github.com/PengBoXiangShang/deepchange.

Layout (``DeepChangeDataset/``)::

    train-set/ val-set-query/ val-set-gallery/ test-set-query/ test-set-gallery/
        pPPPP_cCC_YYYYMMDD_hhmmss_NNNNNN_bbox.jpg     person, camera, capture date and time

No clothes labels are released; the capture timestamp is the clothes proxy (protocols.md,
as the reference): ``clothes`` = YYYYMMDDhhmmss, so two images of a person "wear the
same clothes" when captured at the same moment (same tracklet). ``date`` and ``time`` are
kept as columns (a protocol may use the date as a coarser proxy).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.adapters import register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter, is_image, list_files

FILE_RE = re.compile(r"^[pP](?P<person>\d+)_[cC](?P<camera>\d+)_(?P<date>\d{8})_(?P<time>\d{6})(?:_[^/]*)?\.(?:jpg|png)$")
FOLDERS = {"train-set": "train", "val-set-query": "val_query", "val-set-gallery": "val_gallery",
           "test-set-query": "query", "test-set-gallery": "gallery"}


@register_benchmark
class DeepChange(BenchmarkAdapter):
    name = "deepchange"
    title = "DeepChange"
    reference = "Xu et al., DeepChange: A Long-Term Person Re-Identification Benchmark with Clothes Change, ICCV 2023"
    top_folders = ("DeepChangeDataset", "DeepChange", "deepchange")
    required = tuple(f"{folder}/" for folder in FOLDERS)
    layout = ("DeepChangeDataset/{train-set,val-set-query,val-set-gallery,test-set-query,test-set-gallery}/"
              "pPPPP_cCC_YYYYMMDD_hhmmss_*.jpg")
    splits = tuple(FOLDERS.values())
    stat_groups = {"val": ("val_query", "val_gallery"), "test": ("query", "gallery")}
    extra_columns = ("date", "time")
    published = {
        "all": {"ids": 1_121, "images": 178_407, "cameras": 17},
        "train": {"ids": 450, "images": 75_083},
    }
    approximate = frozenset({("train", "ids"), ("train", "images")})

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        rows: list[dict[str, Any]] = []
        for folder, split in FOLDERS.items():
            for rel in list_files(root / folder, root):
                if not is_image(rel):
                    continue
                found = self.match(FILE_RE, rel, root, "pPPPP_cCC_YYYYMMDD_hhmmss_*.jpg naming")
                date, time = int(found["date"]), int(found["time"])
                rows.append({"path": rel, "person": int(found["person"]), "camera": int(found["camera"]),
                             "modality": "rgb", "clothes": date * 1_000_000 + time, "split": split,
                             "date": date, "time": time})
        return rows, []
