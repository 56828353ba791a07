"""CUHK03-NP (the new 767/700 protocol), detected and labeled boxes.

Reference: Li et al., "DeepReID", CVPR 2014; new protocol: Zhong et al., "Re-ranking
Person Re-identification with k-reciprocal Encoding", CVPR 2017.
URL: https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP (manual).

Layout (``cuhk03-np/``), Market-style folders per box type::

    detected/{bounding_box_train,query,bounding_box_test}/PPPP_cC_NNN.png
    labeled/{bounding_box_train,query,bounding_box_test}/PPPP_cC_NNN.png

person PPPP, camera C (1-2 of the pair that filmed the person), image index NNN.
Registered twice: ``cuhk03`` (detected, the paper's CUHK03 column) and
``cuhk03_labeled``; both read the same release.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from atreid.data.benchmarks.base import Benchmark
from atreid.data.benchmarks.registry import register_benchmark
from atreid.data.protocols import standard
from atreid.data.synthetic.miniatures import Context, Plan, Shot, shot_row, start_plan
from atreid.data.benchmarks.market1501 import parse_market_style

FILE_RE = re.compile(r"^(?P<person>\d{4})_c(?P<camera>\d)_(?P<image>\d+)\.(?:png|jpg)$")
FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}


# The miniature that stands in for the release in the demo (atreid.data.synthetic.miniatures).
def plan_cuhk03(ctx: Context, indexed: str) -> Plan:
    """The whole cuhk03-np release (both box types); the index rows are those of ``indexed``."""
    plan, _, ids = start_plan(ctx, "cuhk03-np", 1467, 4 + 14)
    train = ids[:4]
    for kind in ("detected", "labeled"):
        for pid in ids:
            split_images = (("bounding_box_train", 2),) if pid in train else (("query", 1), ("bounding_box_test", 2))
            number = iter(range(1, 100))
            for cam in (1, 2):
                for folder, count in split_images:
                    split = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}[folder]
                    for _ in range(count):
                        rel = f"{kind}/{folder}/{pid:04d}_c{cam}_{next(number)}.png"
                        row = shot_row(rel.split("/", 1)[1], pid, cam, split) if kind == indexed else None
                        # Camera keys differ per box type: detected and labeled crops differ.
                        plan.shots.append(Shot(rel, pid, 1, cam + (10 if kind == "labeled" else 0), False, row))
    return plan


@register_benchmark
class CUHK03Detected(Benchmark):
    name = "cuhk03"
    protocols = standard("cuhk03", "CUHK03-NP detected")
    miniature = staticmethod(functools.partial(plan_cuhk03, indexed="detected"))
    title = "CUHK03-NP (detected)"
    reference = "Li et al., DeepReID, CVPR 2014; new protocol: Zhong et al., CVPR 2017"
    top_folders = ("cuhk03-np", "CUHK03-NP", "cuhk03_np")
    subdir = "detected"
    required = ("bounding_box_train/", "query/", "bounding_box_test/")
    layout = "cuhk03-np/detected/{bounding_box_train,query,bounding_box_test}/PPPP_cC_NNN.png"
    published = {
        "train": {"ids": 767, "images": 7_365},
        "query": {"ids": 700, "images": 1_400},
        "gallery": {"ids": 700, "images": 5_332},
    }

    def parse(self, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
        return parse_market_style(self, root, FOLDERS, FILE_RE, "PPPP_cC_NNN.png naming")


@register_benchmark
class CUHK03Labeled(CUHK03Detected):
    name = "cuhk03_labeled"
    protocols = standard("cuhk03_labeled", "CUHK03-NP labeled")
    miniature = staticmethod(functools.partial(plan_cuhk03, indexed="labeled"))
    title = "CUHK03-NP (labeled)"
    subdir = "labeled"
    layout = "cuhk03-np/labeled/{bounding_box_train,query,bounding_box_test}/PPPP_cC_NNN.png"
    published = {
        "train": {"ids": 767, "images": 7_368},
        "query": {"ids": 700, "images": 1_400},
        "gallery": {"ids": 700, "images": 5_328},
    }
