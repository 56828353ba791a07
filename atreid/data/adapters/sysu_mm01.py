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

from atreid.data.adapters import register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter, read_id_list
from atreid.errors import AtreidError

PATH_RE = re.compile(r"^cam(?P<camera>[1-6])/(?P<person>\d{4})/(?P<frame>\d{4})\.jpg$")
RGB_CAMERAS = (1, 2, 4, 5)
IR_CAMERAS = (3, 6)


@register_benchmark
class SYSUMM01(BenchmarkAdapter):
    name = "sysu_mm01"
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
