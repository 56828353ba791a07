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

import pandas as pd

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import BenchmarkProtocols, GALLERY, HEAD_DT_LT, QUERY, Protocol, RemovalRule
from atreid.data.synthetic.miniatures import Context, Plan, Shot, pick, shot_row, start_plan, text_files

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


# ---- protocols ------------------------------------------------------------------------------
# Test query x test gallery, changed-clothes positives, no camera rule, head 1. No clothes
# labels exist; the capture time is the clothes proxy (the index columns above):
#
# * ``cc`` (main, the reference's): ``clothes`` = (YYYYMMDD mod 10000) * 1,000,000 +
#   hhmmss, the time WITHOUT the year, so captures of one person at the same
#   month-day-time in different years count as the same clothes (and are removed);
# * ``cc-year-aware``: ``clothes_with_year`` = YYYYMMDDhhmmss, the full timestamp;
# * ``cc-date``: the capture date, a coarser proxy (every same-day image removed).
_NO_CAMERA = RemovalRule(clothes="changed", same_camera=False)
PROTOCOLS = BenchmarkProtocols("deepchange", (
    Protocol("cc", HEAD_DT_LT, QUERY, GALLERY, _NO_CAMERA,
             "test query x test gallery; clothes proxy = capture month-day-time without the year "
             "(the reference's; same-moment positives removed); no camera rule"),
    Protocol("cc-year-aware", HEAD_DT_LT, QUERY, GALLERY, _NO_CAMERA,
             "as cc with the full capture timestamp, year included, as the clothes proxy",
             clothes_column="clothes_with_year"),
    Protocol("cc-date", HEAD_DT_LT, QUERY, GALLERY, _NO_CAMERA,
             "as cc with the capture date as the clothes proxy (same-day positives removed)",
             clothes_column="date"),
), main="cc")


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_deepchange(ctx: Context) -> Plan:
    plan, rng, ids = start_plan(ctx, "DeepChangeDataset", 1121, 6 + 12)
    groups = {"train": ids[:4], "val": ids[4:6], "test": ids[6:]}
    days = pd.date_range("2019-05-01", "2020-04-30", freq="D")
    bbox_lists: dict[str, list[str]] = {}
    tracklet = iter(range(1, 1_000_000))
    number = iter(range(1, 1_000_000))
    for group, persons in groups.items():
        for pid in persons:
            chosen_days = sorted(pick(rng, range(len(days)), 3))
            cams = pick(rng, range(1, 18), 3)
            # Tracklets (day index, camera, outfit): two cameras the first day (one
            # outfit per day), another day on a third camera, a last day back on the first.
            tracks = [(chosen_days[0], cams[0], 1), (chosen_days[0], cams[1], 1), (chosen_days[1], cams[2], 2),
                      (chosen_days[2], cams[0], 3)]
            for t, (day, cam, outfit) in enumerate(tracks):
                date = int(days[day].strftime("%Y%m%d"))
                hour = 8 + 2 * t + int(rng.integers(0, 2))
                time = hour * 10_000 + int(rng.integers(0, 60)) * 100 + int(rng.integers(0, 60))
                track = next(tracklet)
                if group == "train":
                    folder, split = "train-set", "train"
                elif t == 0:
                    folder, split = f"{group}-set-query", "query" if group == "test" else "val_query"
                else:
                    folder, split = f"{group}-set-gallery", "gallery" if group == "test" else "val_gallery"
                for _ in range(2):
                    file = f"p{pid:04d}_c{cam:02d}_{date}_{time:06d}_{next(number):06d}_bbox.jpg"
                    rel = f"{folder}/{file}"
                    bbox_lists.setdefault(f"{folder}-bbox.txt", []).append(f"{file},{track}")
                    plan.shots.append(Shot(rel, pid, outfit, cam, False,
                                           shot_row(rel, pid, cam, split, clothes=clothes_proxy(date, time),
                                                clothes_with_year=clothes_proxy_with_year(date, time), date=date,
                                                time=time)))
    plan.texts = text_files(bbox_lists)
    return plan


@register_benchmark
class DeepChange(Benchmark):
    name = "deepchange"
    protocols = PROTOCOLS
    miniature = staticmethod(plan_deepchange)
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
