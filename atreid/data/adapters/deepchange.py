"""DeepChange (long-term, natural clothes changes over 12 months).

Reference: Xu et al., "DeepChange: A Long-Term Person Re-Identification Benchmark with
Clothes Change", ICCV 2023 (arXiv:2105.14685). URL: https://github.com/PengBoXiangShang/deepchange.

Layout (``DeepChangeDataset/``)::

    train-set/ val-set-query/ val-set-gallery/ test-set-query/ test-set-gallery/
        pPPPP_cCC_YYYYMMDD_hhmmss_NNNNNN_bbox.jpg     person, camera, capture date and time

No clothes labels are released; the capture time is the clothes proxy (protocols.md):

* ``clothes`` (the default, as the released reference reader builds it): the capture
  time WITHOUT the year, ``(YYYYMMDD mod 10000) * 1_000_000 + hhmmss`` = MMDDhhmmss. Two
  images of a person "wear the same clothes" when captured at the same month-day-time,
  so captures at the same month-day-time of different years share a clothes id;
* ``clothes_with_year``: the full timestamp YYYYMMDDhhmmss (same moment, year included),
  used by the ``cc-year-aware`` protocol.

``date`` and ``time`` are kept as columns (a protocol may use the date as a coarser proxy).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.adapters import register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter

FILE_RE = re.compile(r"^[pP](?P<person>\d+)_[cC](?P<camera>\d+)_(?P<date>\d{8})_(?P<time>\d{6})(?:_[^/]*)?\.(?:jpg|png)$")
TIME_SCALE = 1_000_000  # hhmmss occupies the last six digits of a clothes id


def clothes_proxy(date: int, time: int) -> int:
    """The reference's clothes id: capture month-day-time, year dropped (MMDDhhmmss)."""
    return (date % 10_000) * TIME_SCALE + time


def clothes_proxy_with_year(date: int, time: int) -> int:
    """The year-aware clothes id: the full capture timestamp (YYYYMMDDhhmmss)."""
    return date * TIME_SCALE + time


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
    extra_columns = ("clothes_with_year", "date", "time")
    published = {
        "all": {"ids": 1_121, "images": 178_407, "cameras": 17},
        "train": {"ids": 450, "images": 75_083},
    }
    approximate = frozenset({("train", "ids"), ("train", "images")})

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        rows, _ = self.walk(root, FOLDERS, FILE_RE, "pPPPP_cCC_YYYYMMDD_hhmmss_*.jpg naming", self.row)
        return rows, []

    @staticmethod
    def row(found: re.Match[str], rel: str, split: str) -> dict[str, Any]:
        date, time = int(found["date"]), int(found["time"])
        return {"path": rel, "person": int(found["person"]), "camera": int(found["camera"]), "modality": "rgb",
                "clothes": clothes_proxy(date, time), "split": split,
                "clothes_with_year": clothes_proxy_with_year(date, time), "date": date, "time": time}
