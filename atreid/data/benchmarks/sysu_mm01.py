"""SYSU-MM01 (RGB-infrared cross-modality).

Reference: Wu et al., "RGB-Infrared Cross-Modality Person Re-Identification", ICCV 2017.
URL: https://github.com/wuancong/SYSU-MM01 (by agreement).

Raw release layout (``SYSU-MM01/``), read as is (no reorganised copy is needed)::

    cam1/ ... cam6/PPPP/NNNN.jpg       cameras 1, 2, 4, 5 RGB; 3, 6 infrared
    exp/train_id.txt  exp/val_id.txt  exp/test_id.txt    comma-separated person ids

Splits: persons of train_id/val_id -> ``train``/``val``; test persons' IR images
(cameras 3, 6) -> ``query``, their RGB images -> ``gallery`` (every image: the protocols
draw the single-/multi-shot galleries per trial). Persons in no id file are left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import BenchmarkProtocols, CM_ALL, HEAD_AD_ST, TRIALS, Protocol, RemovalRule
from atreid.data.synthetic.miniatures import Context, Plan, Shot, pick, shot_row, start_plan
from atreid.data.benchmarks.files import read_id_list
from atreid.errors import AtreidError

PATH_RE = re.compile(r"^cam(?P<camera>[1-6])/(?P<person>\d{4})/(?P<frame>\d{4})\.jpg$")
RGB_CAMERAS = (1, 2, 4, 5)
IR_CAMERAS = (3, 6)


# ---- protocols ------------------------------------------------------------------------------
# Single-shot all-search: a camera-3 query also drops every camera-2 gallery image (any
# person), as the dataset's evaluation code does.
CM_ALL_SYSU = RemovalRule(modality="cross", excluded_camera_pairs=((3, 2),))
MULTI_SHOTS = 10  # the SYSU-MM01 authors' multi-shot: gallery images per (person, camera) per trial


def _protocols() -> BenchmarkProtocols:
    """IR queries (cameras 3, 6) against an RGB gallery, head 4 (AD-ST).

    Multi-shot comes in two definitions, both offered by name:

    * ``*-multi-shot-10x10``: the SYSU-MM01 authors' original protocol, 10 random
      gallery images per (person, camera), 10 seeded trials (trial ``t`` seeds ``t``);
    * ``*-multi-shot-all``: the released AT-ReID reference code's ``sysu_multi``, EVERY
      gallery image of the chosen cameras in one evaluation (1 trial, no draw).

    The paper's table reports single-shot all-search only (the main protocol). The
    camera-3 -> camera-2 exclusion applies to single-shot all-search only, as in the
    reference.
    """
    query = {"split": ("query",)}                  # every IR image of the test persons (cameras 3, 6)
    all_search = {"split": ("gallery",)}           # RGB cameras 1, 2, 4, 5
    indoor = {"split": ("gallery",), "camera": (1, 2)}
    return BenchmarkProtocols("sysu_mm01", (
        Protocol("all-search-single-shot", HEAD_AD_ST, query, all_search, CM_ALL_SYSU,
                 "IR queries x 1 random RGB image per (person, camera), 10 seeded trials; "
                 "camera-3 queries drop camera-2 gallery images", trials=TRIALS, gallery_shots=1),
        Protocol("all-search-multi-shot-10x10", HEAD_AD_ST, query, all_search, CM_ALL,
                 "IR queries x 10 random RGB images per (person, camera), 10 seeded trials "
                 "(the SYSU-MM01 authors' multi-shot)", trials=TRIALS, gallery_shots=MULTI_SHOTS),
        Protocol("all-search-multi-shot-all", HEAD_AD_ST, query, all_search, CM_ALL,
                 "IR queries x every RGB gallery image, one evaluation (the AT-ReID reference's multi-shot)"),
        Protocol("indoor-single-shot", HEAD_AD_ST, query, indoor, CM_ALL,
                 "IR queries x 1 random image per (person, camera) of cameras 1-2, 10 seeded trials",
                 trials=TRIALS, gallery_shots=1),
        Protocol("indoor-multi-shot-10x10", HEAD_AD_ST, query, indoor, CM_ALL,
                 "IR queries x 10 random images per (person, camera) of cameras 1-2, 10 seeded trials "
                 "(the SYSU-MM01 authors' multi-shot)", trials=TRIALS, gallery_shots=MULTI_SHOTS),
        Protocol("indoor-multi-shot-all", HEAD_AD_ST, query, indoor, CM_ALL,
                 "IR queries x every gallery image of cameras 1-2, one evaluation "
                 "(the AT-ReID reference's multi-shot)"),
    ), main="all-search-single-shot")


PROTOCOLS = _protocols()


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_sysu_mm01(ctx: Context) -> Plan:
    plan, rng, ids = start_plan(ctx, "SYSU-MM01", 533, 7 + 14)
    order = rng.permutation(ids).tolist()
    parts = {"train": sorted(order[:5]), "val": sorted(order[5:7]), "test": sorted(order[7:])}
    for split, persons in parts.items():
        for pid in persons:
            if split == "test":
                # At least one indoor camera (1 or 2) and one camera other than 2, so every
                # protocol (indoor, camera-3 rule) keeps a positive for every query.
                rgb = sorted({pick(rng, (1, 2), 1)[0], *pick(rng, (1, 4, 5), 1), *pick(rng, (1, 2, 4, 5), 1)})
                ir = sorted(pick(rng, (3, 6), int(rng.integers(1, 3))))
                per = {**{c: 4 for c in rgb}, **{c: 3 for c in ir}}
            else:
                per = {c: 3 for c in (*pick(rng, (1, 2, 4, 5), 2), *pick(rng, (3, 6), 1))}
            for cam, count in sorted(per.items()):
                modality = "ir" if cam in (3, 6) else "rgb"
                row_split = split if split != "test" else ("query" if modality == "ir" else "gallery")
                for n in range(1, count + 1):
                    rel = f"cam{cam}/{pid:04d}/{n:04d}.jpg"
                    plan.shots.append(Shot(rel, pid, 1, cam, modality == "ir",
                                           shot_row(rel, pid, cam, row_split, modality=modality)))
    plan.texts = {f"exp/{split}_id.txt": ",".join(str(p) for p in persons) for split, persons in parts.items()}
    return plan


@register_benchmark
class SYSUMM01(Benchmark):
    name = "sysu_mm01"
    protocols = PROTOCOLS
    miniature = staticmethod(plan_sysu_mm01)
    title = "SYSU-MM01"
    reference = "Wu et al., RGB-Infrared Cross-Modality Person Re-Identification, ICCV 2017"
    top_folders = ("SYSU-MM01", "sysu-mm01", "SYSU_MM01")
    required = ("cam1/", "cam2/", "cam3/", "cam4/", "cam5/", "cam6/",
                "exp/train_id.txt", "exp/val_id.txt", "exp/test_id.txt")
    layout = "SYSU-MM01/cam1..cam6/PPPP/NNNN.jpg + exp/{train,val,test}_id.txt"
    splits = ("train", "val", "query", "gallery")
    stat_groups = {"test": ("query", "gallery")}
    published = {
        "all": {"ids": 491, "rgb_images": 30_071, "ir_images": 15_792},
        "train": {"ids": 296},
        "val": {"ids": 99},
        "test": {"ids": 96},
        "query": {"images": 3_803},
        "gallery": {"person_cameras": 301},   # = the single-shot all-search gallery size
    }
    approximate = frozenset({("gallery", "person_cameras")})

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        id_sets = {split: set(read_id_list(root / "exp" / f"{split}_id.txt")) for split in ("train", "val", "test")}
        owner: dict[int, str] = {}
        for split, ids in id_sets.items():
            for person in ids:
                if person in owner:
                    raise AtreidError(f"{root / 'exp' / f'{split}_id.txt'}: person {person} also in "
                                      f"{owner[person]}_id.txt; the split files overlap, re-extract exp/")
                owner[person] = split
        unlisted: set[int] = set()

        def row(found: re.Match[str], rel: str, camera: int) -> dict[str, Any] | None:
            person = int(found["person"])
            split = owner.get(person)
            if split is None:
                unlisted.add(person)
                return None
            modality = "rgb" if camera in RGB_CAMERAS else "ir"
            if split == "test":
                split = "query" if modality == "ir" else "gallery"
            return {"path": rel, "person": person, "camera": camera, "modality": modality, "clothes": -1,
                    "split": split}

        rows, _ = self.walk(root, {f"cam{camera}": camera for camera in range(1, 7)}, PATH_RE,
                            "cam{1-6}/PPPP/NNNN.jpg layout", row, on_path=True)
        warnings = []
        if unlisted:
            warnings.append(f"{len(unlisted)} persons with images are in no exp/*_id.txt file and were left "
                            f"out (e.g. {min(unlisted):04d})")
        return rows, warnings
