"""LTCC (long-term cloth-changing).

Reference: Qian et al., "Long-Term Cloth-Changing Person Re-identification", ACCV 2020.
URL: https://naiq.github.io/LTCC_Perosn_ReID.html (agreement).

Layout (``LTCC_ReID/``)::

    train/ query/ test/     PPP_CC_cK_NNNNNN.png   person, clothes, camera, frame
    info/cloth-change_id_{train,test}.txt   info/cloth-unchange_id_{train,test}.txt

``test/`` is the gallery. The info files list the persons who change clothes; the index
keeps that as ``clothes_changing`` (1/0), which the clothes-changing protocols use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from atreid.data.adapters import register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter, read_id_list
from atreid.errors import AtreidError

FILE_RE = re.compile(r"^(?P<person>\d+)_(?P<clothes>\d+)_c(?P<camera>\d+)_(?P<frame>\d+)\.png$")
FOLDERS = {"train": "train", "query": "query", "test": "gallery"}


@register_benchmark
class LTCC(BenchmarkAdapter):
    name = "ltcc"
    title = "LTCC"
    reference = "Qian et al., Long-Term Cloth-Changing Person Re-identification, ACCV 2020"
    top_folders = ("LTCC_ReID", "LTCC", "ltcc")
    required = ("train/", "query/", "test/", "info/cloth-change_id_train.txt", "info/cloth-unchange_id_train.txt",
                "info/cloth-change_id_test.txt", "info/cloth-unchange_id_test.txt")
    layout = "LTCC_ReID/{train,query,test}/PPP_CC_cK_NNNNNN.png + info/cloth-{change,unchange}_id_{train,test}.txt"
    stat_groups = {"test": ("query", "gallery")}
    extra_columns = ("clothes_changing",)
    published = {
        "all": {"ids": 152, "clothes_changing_ids": 91},
        "train": {"ids": 77, "images": 9_576},
        "query": {"images": 493},
        "gallery": {"images": 7_050},
    }

    def changing_ids(self, root: Path, part: str) -> set[int]:
        change = set(read_id_list(root / "info" / f"cloth-change_id_{part}.txt"))
        unchange = set(read_id_list(root / "info" / f"cloth-unchange_id_{part}.txt"))
        both = sorted(change & unchange)
        if both:
            raise AtreidError(f"{root / 'info' / f'cloth-change_id_{part}.txt'}: person {both[0]} is also in "
                              f"cloth-unchange_id_{part}.txt; the info files conflict, re-extract info/")
        return change

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        changing = {"train": self.changing_ids(root, "train"), "test": self.changing_ids(root, "test")}

        def row(found: re.Match[str], rel: str, split: str) -> dict[str, Any]:
            person = int(found["person"])
            part = "train" if split == "train" else "test"
            return {"path": rel, "person": person, "camera": int(found["camera"]), "modality": "rgb",
                    "clothes": int(found["clothes"]), "split": split, "clothes_changing": int(person in changing[part])}

        rows, ignored = self.walk(root, FOLDERS, FILE_RE, "PPP_CC_cK_NNNNNN.png naming", row)
        warnings = [f"{len(ignored)} non-image files ignored"] if ignored else []
        return rows, warnings

    def extra_statistics(self, index: pd.DataFrame) -> dict[str, dict[str, int]]:
        stats = {}
        for group in [*self.groups(), "all"]:
            frame = self.group_rows(index, group)
            stats[group] = {"clothes_changing_ids": int(frame.loc[frame["clothes_changing"] == 1, "person"].nunique())}
        return stats
