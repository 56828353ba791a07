"""MSMT17 (V1).

Reference: Wei et al., "Person Transfer GAN to Bridge Domain Gap for Person
Re-Identification", CVPR 2018. URL: https://www.pkuvmc.com/dataset.html (agreement).

Layout (``MSMT17_V1/``)::

    train/PPPP/PPPP_FFF_CC_<date><time>_NNNN_N.jpg
    test/PPPP/PPPP_FFF_CC_<date><time>_NNNN_N.jpg
    list_train.txt  list_val.txt      "PPPP/<file>.jpg <label>" relative to train/
    list_query.txt  list_gallery.txt  "PPPP/<file>.jpg <label>" relative to test/

The lists define the splits (train = list_train + list_val, as the reference trains on
both); person = the list label, camera = the third field CC (1-15). Training and test
labels both start at 0 in the release, so test persons are stored as label + 10000 to
keep person ids unique in the index.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import standard
from atreid.data.synthetic.miniatures import Context, PLAN_DRAWS, Plan, Shot, pick, shot_row, text_files
from atreid.data.benchmarks.files import read_path_list

FILE_RE = re.compile(r"^(?P<person>\d{4})_(?P<number>\d{3})_(?P<camera>\d{2})_(?P<rest>[^/]+)\.jpg$")
TEST_ID_OFFSET = 10_000
LISTS = (  # list file, folder its paths are relative to, split
    ("list_train.txt", "train", "train"),
    ("list_val.txt", "train", "train"),
    ("list_query.txt", "test", "query"),
    ("list_gallery.txt", "test", "gallery"),
)


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_msmt17(ctx: Context) -> Plan:
    plan = Plan("MSMT17_V1")
    rng = ctx.rng(PLAN_DRAWS)
    lists: dict[str, list[str]] = {n: [] for n in ("list_train.txt", "list_val.txt", "list_query.txt",
                                                    "list_gallery.txt")}
    times = ("morning", "noon", "afternoon")

    def name(pid: int, number: int, cam: int) -> str:
        return (f"{pid:04d}_{number:03d}_{cam:02d}_{int(rng.integers(101, 1231)):04d}{times[int(rng.integers(0, 3))]}"
                f"_{int(rng.integers(0, 10000)):04d}_{int(rng.integers(0, 3))}.jpg")

    for label in range(4):  # training persons 0-3 (train list 0-2, validation list 3)
        who = 100 + label
        list_name = "list_train.txt" if label < 3 else "list_val.txt"
        number = iter(range(1000))
        for cam in pick(rng, range(1, 16), 2):
            for _ in range(2):
                rel = f"{label:04d}/{name(label, next(number), cam)}"
                lists[list_name].append(f"{rel} {label}")
                plan.shots.append(Shot(f"train/{rel}", who, 1, cam, False, shot_row(f"train/{rel}", label, cam, "train")))
    for label in range(14):  # test persons: their labels restart at 0 (stored + 10000)
        who = 200 + label
        number = iter(range(1000))
        cams = pick(rng, range(1, 16), 3)
        for list_name, split, chosen, count in (("list_query.txt", "query", cams[:2], 1),
                                                ("list_gallery.txt", "gallery", cams, 3)):
            for cam in chosen:
                for _ in range(count):
                    rel = f"{label:04d}/{name(label, next(number), cam)}"
                    lists[list_name].append(f"{rel} {label}")
                    plan.shots.append(Shot(f"test/{rel}", who, 1, cam, False,
                                           shot_row(f"test/{rel}", label + 10_000, cam, split)))
    plan.texts = text_files(lists)
    return plan


@register_benchmark
class MSMT17(Benchmark):
    name = "msmt17"
    protocols = standard("msmt17", "MSMT17")
    miniature = staticmethod(plan_msmt17)
    title = "MSMT17 (V1)"
    reference = "Wei et al., Person Transfer GAN to Bridge Domain Gap for Person Re-Identification, CVPR 2018"
    top_folders = ("MSMT17_V1", "MSMT17", "msmt17")
    required = ("train/", "test/", "list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
    layout = "MSMT17_V1/{train,test}/PPPP/PPPP_FFF_CC_*.jpg + list_{train,val,query,gallery}.txt"
    stat_groups = {"test": ("query", "gallery")}
    published = {
        "all": {"ids": 4_101, "cameras": 15},
        "train": {"ids": 1_041, "images": 32_621},
        "query": {"ids": 3_060, "images": 11_659},
        "gallery": {"images": 82_161},
    }

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        rows: list[dict[str, Any]] = []
        warnings: list[str] = []
        mismatched = 0
        for list_name, folder, split in LISTS:
            for rel, label in read_path_list(root / list_name):
                path = f"{folder}/{rel}"
                if not (root / path).is_file():
                    raise self.missing_listed(root, path, list_name)
                found = self.match(FILE_RE, path, root, "PPPP_FFF_CC_*.jpg naming")
                person = int(found["person"]) if label is None else label
                if label is not None and label != int(found["person"]):
                    mismatched += 1
                if folder == "test":
                    person += TEST_ID_OFFSET
                rows.append({"path": path, "person": person, "camera": int(found["camera"]), "modality": "rgb",
                             "clothes": -1, "split": split})
        if mismatched:
            warnings.append(f"{mismatched} list labels differ from the person id in the file name (labels used)")
        return rows, warnings
