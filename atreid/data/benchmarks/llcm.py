"""LLCM (low-light cross-modality, visible / near-infrared).

Reference: Zhang and Wang, "Diverse Embedding Expansion Network and Low-Light
Cross-Modality Benchmark for Visible-Infrared Person Re-identification", CVPR 2023.
URL: https://github.com/ZYK100/LLCM (by agreement).

Layout (``LLCM/``), read as is::

    idx/train_vis.txt  idx/train_nir.txt     "{vis,nir}/PPPP/<file>.jpg <label>" training lists
    idx/test_id.txt                          comma-separated test person ids
    vis/PPPP/PPPP_cCC_sSSSSSS_fFFFF_vis.jpg  nir/PPPP/PPPP_cCC_..._nir.jpg
    test_vis/camK/PPPP/<file>_vis.jpg        test_nir/camK/PPPP/<file>_nir.jpg

Training rows come from the idx lists, test rows (``split`` = ``test``) from
``test_{vis,nir}/camK/PPPP/`` for the persons of ``test_id.txt`` (what the protocol
reads). The same physical camera films in both modalities, so infrared cameras are
shifted after the 9 RGB ones (camera = K + 9): the same-person-same-camera rule never
removes a cross-modality positive.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import cross_modality
from atreid.data.synthetic.miniatures import Context, Plan, Shot, pick, shot_row, start_plan, text_files
from atreid.data.benchmarks.files import read_id_list, read_path_list

FILE_RE = re.compile(r"^(?P<person>\d{4})_c(?P<camera>\d{2})_s(?P<s>\d+)_f(?P<f>\d+)_(?P<mod>vis|nir)\.jpg$")
TEST_RE = re.compile(r"^test_(?P<mod>vis|nir)/cam(?P<camera>\d)/(?P<person>\d{4})/[^/]+$")
RGB_CAMERA_COUNT = 9
MODALITY = {"vis": "rgb", "nir": "ir"}


def camera_id(camera: int, modality: str) -> int:
    """RGB cameras keep their number; IR cameras are shifted after the RGB ones."""
    return camera + (RGB_CAMERA_COUNT if modality == "ir" else 0)


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_llcm(ctx: Context) -> Plan:
    plan, rng, ids = start_plan(ctx, "LLCM", 1064, 4 + 14)
    train, test = ids[:4], ids[4:]
    lists: dict[str, list[str]] = {n: [] for n in ("train_vis", "train_nir", "test_vis", "test_nir")}
    ir_cams = (1, 2, 4, 5, 6, 7, 8, 9)  # LLCM has no infrared view at camera 3
    for pid in ids:
        is_test = pid in test
        cams = {"vis": pick(rng, range(1, 10), 2 if is_test else 1),
                "nir": pick(rng, ir_cams, 2 if is_test else 1)}
        for mod, modality in (("vis", "rgb"), ("nir", "ir")):
            for cam in cams[mod]:
                for _ in range(3):
                    file = (f"{pid:04d}_c{cam:02d}_s{int(rng.integers(100_000, 240_000)):06d}"
                            f"_f{int(rng.integers(1, 10_000))}_{mod}.jpg")
                    rel = f"{mod}/{pid:04d}/{file}"
                    camera = cam + (9 if modality == "ir" else 0)
                    if is_test:
                        alias = f"test_{mod}/cam{cam}/{pid:04d}/{file}"
                        lists[f"test_{mod}"].append(f"{rel} {pid}")
                        row = shot_row(alias, pid, camera, "test", modality=modality)
                        plan.shots.append(Shot(alias, pid, 1, cam, modality == "ir", row, copies=(rel,)))
                    else:
                        lists[f"train_{mod}"].append(f"{rel} {train.index(pid)}")
                        row = shot_row(rel, pid, camera, "train", modality=modality)
                        plan.shots.append(Shot(rel, pid, 1, cam, modality == "ir", row))
    plan.texts = text_files(lists, "idx/{}.txt")
    plan.texts["idx/test_id.txt"] = ",".join(str(p) for p in test)
    return plan


@register_benchmark
class LLCM(Benchmark):
    name = "llcm"
    protocols = cross_modality("llcm")
    miniature = staticmethod(plan_llcm)
    title = "LLCM"
    reference = "Zhang and Wang, Diverse Embedding Expansion Network and Low-Light Cross-Modality Benchmark, CVPR 2023"
    top_folders = ("LLCM", "llcm")
    required = ("idx/train_vis.txt", "idx/train_nir.txt", "idx/test_id.txt", "test_vis/", "test_nir/")
    layout = "LLCM/{vis,nir,test_vis/camK,test_nir/camK}/PPPP/PPPP_cCC_s*_f*_{vis,nir}.jpg + idx/"
    splits = ("train", "test")
    published = {
        "all": {"ids": 1_064, "images": 46_767},
        "train": {"ids": 713},
        "test": {"ids": 351},
    }
    approximate = frozenset({("all", "ids"), ("all", "images"), ("train", "ids"), ("test", "ids")})

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        rows: list[dict[str, Any]] = []
        pattern = "PPPP_cCC_sS_fF_{vis,nir}.jpg naming"
        for list_name in ("idx/train_vis.txt", "idx/train_nir.txt"):
            for rel, _ in read_path_list(root / list_name):
                if not (root / rel).is_file():
                    raise self.missing_listed(root, rel, list_name)
                found = self.match(FILE_RE, rel, root, pattern)
                modality = MODALITY[found["mod"]]
                rows.append({"path": rel, "person": int(found["person"]),
                             "camera": camera_id(int(found["camera"]), modality), "modality": modality,
                             "clothes": -1, "split": "train"})
        test_ids = set(read_id_list(root / "idx" / "test_id.txt"))

        def test_row(found: re.Match[str], rel: str, split: str) -> dict[str, Any] | None:
            self.match(FILE_RE, rel, root, pattern)
            person = int(found["person"])
            if person not in test_ids:
                return None
            modality = MODALITY[found["mod"]]
            return {"path": rel, "person": person, "camera": camera_id(int(found["camera"]), modality),
                    "modality": modality, "clothes": -1, "split": split}

        test, _ = self.walk(root, {"test_vis": "test", "test_nir": "test"}, TEST_RE,
                            "test_{vis,nir}/camK/PPPP/<file> layout", test_row, on_path=True)
        return rows + test, []
