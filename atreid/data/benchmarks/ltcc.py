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

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import BenchmarkProtocols, GALLERY, HEAD_DT_LT, QUERY, VM_ALL, VM_CC, Protocol
from atreid.data.synthetic.miniatures import Context, Plan, Shot, pick, shot_row, start_plan
from atreid.data.benchmarks.files import read_id_list
from atreid.errors import AtreidError

FILE_RE = re.compile(r"^(?P<person>\d+)_(?P<clothes>\d+)_c(?P<camera>\d+)_(?P<frame>\d+)\.png$")
FOLDERS = {"train": "train", "query": "query", "test": "gallery"}


# ---- protocols ------------------------------------------------------------------------------
_CHANGING = (1,)
PROTOCOLS = BenchmarkProtocols("ltcc", (
    Protocol("general", HEAD_DT_LT, QUERY, GALLERY, VM_ALL,
             "general setting: every query x every gallery image"),
    Protocol("cc", HEAD_DT_LT, {**QUERY, "clothes_changing": _CHANGING}, {**GALLERY, "clothes_changing": _CHANGING},
             VM_CC, "cloth-changing: queries AND gallery of clothes-changing persons only, "
                    "changed-clothes positives (the reference's setting)"),
    Protocol("cc-query-only", HEAD_DT_LT, {**QUERY, "clothes_changing": _CHANGING}, GALLERY, VM_CC,
             "cloth-changing, common practice: clothes-changing queries x the full gallery"),
), main="cc")


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_ltcc(ctx: Context) -> Plan:
    plan, rng, ids = start_plan(ctx, "LTCC_ReID", 152, 4 + 16)
    train, test = ids[:4], ids[4:]
    changing = {"train": set(train[:2]), "test": set(pick(rng, test, 10))}
    counter = iter(range(1, 1_000_000))
    for part, persons in (("train", train), ("test", test)):
        for pid in persons:
            change = pid in changing[part]
            outfits = [1, 2] if change else [1]
            cams = pick(rng, range(1, 13), 4)
            # (folder, split, outfit, camera) per image: queries on two cameras; the gallery
            # covers every outfit on the other cameras, so each query keeps a positive.
            if part == "train":
                images = [("train", "train", outfits[i % len(outfits)], cams[i % 2]) for i in range(4)]
            else:
                images = [("query", "query", outfits[0], cams[0]), ("query", "query", outfits[-1], cams[1])]
                images += [("test", "gallery", outfits[i % len(outfits)], cams[2 + i % 2]) for i in range(6)]
            for folder, split, outfit, cam in images:
                rel = f"{folder}/{pid:03d}_{outfit}_c{cam}_{next(counter) * 7:06d}.png"
                plan.shots.append(Shot(rel, pid, outfit, cam, False,
                                       shot_row(rel, pid, cam, split, clothes=outfit, clothes_changing=int(change))))
    for part in ("train", "test"):
        persons = train if part == "train" else test
        plan.texts[f"info/cloth-change_id_{part}.txt"] = "".join(f"{p}\n" for p in sorted(changing[part]))
        plan.texts[f"info/cloth-unchange_id_{part}.txt"] = "".join(
            f"{p}\n" for p in sorted(set(persons) - changing[part]))
    return plan


@register_benchmark
class LTCC(Benchmark):
    name = "ltcc"
    protocols = PROTOCOLS
    miniature = staticmethod(plan_ltcc)
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
