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

from atreid.data.adapters import register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter

FILE_RE = re.compile(r"^(?P<person>-1|\d{4})_c(?P<camera>\d)s(?P<sequence>\d)_(?P<frame>\d{6})_(?P<box>\d{2})\.jpg$")
JUNK_ID = -1
DISTRACTOR_ID = 0


def parse_market_style(adapter: BenchmarkAdapter, root: Path, folders: dict[str, str], regex: re.Pattern[str],
                       pattern: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a Market-style release (flat split folders, person/camera in the file name).

    Junk boxes (person -1) are dropped and counted in ``adapter.dropped``.
    """
    rows, ignored = adapter.walk(root, folders, regex, pattern, market_row, flat=True)
    kept = [row for row in rows if row["person"] != JUNK_ID]
    if len(kept) < len(rows):
        adapter.dropped["junk boxes, person id -1"] = len(rows) - len(kept)
    warnings = [f"{len(ignored)} other files ignored, e.g. {ignored[0]}"] if ignored else []
    return kept, warnings


def market_row(found: re.Match[str], rel: str, split: str) -> dict[str, Any]:
    return {"path": rel, "person": int(found["person"]), "camera": int(found["camera"]), "modality": "rgb",
            "clothes": -1, "split": split}


@register_benchmark
class Market1501(BenchmarkAdapter):
    name = "market1501"
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
