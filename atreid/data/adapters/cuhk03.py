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

import re
from pathlib import Path
from typing import Any

from atreid.data.adapters import register_benchmark
from atreid.data.adapters.base import BenchmarkAdapter
from atreid.data.adapters.market1501 import parse_market_style

FILE_RE = re.compile(r"^(?P<person>\d{4})_c(?P<camera>\d)_(?P<image>\d+)\.(?:png|jpg)$")
FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}


@register_benchmark
class CUHK03Detected(BenchmarkAdapter):
    name = "cuhk03"
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
    title = "CUHK03-NP (labeled)"
    subdir = "labeled"
    layout = "cuhk03-np/labeled/{bounding_box_train,query,bounding_box_test}/PPPP_cC_NNN.png"
    published = {
        "train": {"ids": 767, "images": 7_368},
        "query": {"ids": 700, "images": 1_400},
        "gallery": {"ids": 700, "images": 5_328},
    }
