"""AT-USTC through the benchmark registry (issue 16): the same report as before.

The expected values below were recorded from the pre-adapter code
(``atreid.data.atustc.verify_dataset`` / ``format_report`` at 3c5f976) on the tiny
AT-USTC of ``tests/conftest.py`` with one stray file and these expected counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atreid.cli import main
from atreid.data.benchmarks import benchmark_names, get_benchmark
from atreid.errors import AtreidError
from tests.conftest import write_jpeg

EXPECTED = {"train": {"ids": 2, "images": 41}, "test": {"ids": 3, "images": 48}}
FIELDS = ("ids", "outfits", "rgb_cameras", "ir_cameras", "clips", "images")
RECORDED_STATISTICS = {name: dict(zip(FIELDS, values)) for name, values in {
    "train": [2, 4, 1, 1, 8, 40],
    "val": [2, 2, 1, 0, 2, 2],
    "query": [2, 2, 1, 1, 4, 24],
    "gallery": [2, 4, 1, 1, 8, 24],
    "test": [2, 4, 2, 2, 12, 48],
    "flag0": [2, 4, 1, 1, 8, 40],
    "flag1": [2, 2, 1, 0, 2, 2],
    "flag2": [2, 2, 1, 0, 2, 6],
    "flag3": [2, 2, 1, 0, 2, 6],
    "flag4": [2, 2, 0, 1, 2, 6],
    "flag5": [2, 2, 0, 1, 2, 6],
    "flag6": [2, 2, 1, 0, 2, 6],
    "flag7": [2, 2, 1, 0, 2, 6],
    "flag8": [2, 2, 0, 1, 2, 6],
    "flag9": [2, 2, 0, 1, 2, 6],
    "all": [4, 8, 2, 2, 22, 90],
}.items()}
RECORDED_REPORT = {
    "root": "<images>/AT-USTC",
    "statistics": RECORDED_STATISTICS,
    "expected": EXPECTED,
    "tolerance": 0.02,
    "count_differences": [
        {"actual": 40, "expected": 41, "field": "images", "relative_difference": 0.0244, "split": "train"},
        {"actual": 2, "expected": 3, "field": "ids", "relative_difference": 0.3333, "split": "test"},
    ],
    "warnings": ["1 non-image files ignored, e.g. notes.md", "train images: 40 (expected 41)",
                 "test ids: 2 (expected 3)"],
    "ignored_files": ["notes.md"],
    "ok": True,
}
RECORDED_TEXT = """\
AT-USTC verification: <images>/AT-USTC

split              ids     outfits rgb_cameras  ir_cameras       clips      images
----------------------------------------------------------------------------------
train                2           4           1           1           8          40
val                  2           2           1           0           2           2
query                2           2           1           1           4          24
gallery              2           4           1           1           8          24
test                 2           4           2           2          12          48
all                  4           8           2           2          22          90

per flag:
  0 train          ids     2  clips      8  images       40
  1 val            ids     2  clips      2  images        2
  2 DT-ST query    ids     2  clips      2  images        6
  3 DT-LT query    ids     2  clips      2  images        6
  4 NT-ST query    ids     2  clips      2  images        6
  5 NT-LT query    ids     2  clips      2  images        6
  6 DT-ST gallery  ids     2  clips      2  images        6
  7 DT-LT gallery  ids     2  clips      2  images        6
  8 NT-ST gallery  ids     2  clips      2  images        6
  9 NT-LT gallery  ids     2  clips      2  images        6

expected counts compared with tolerance 2%
WARNING: 1 non-image files ignored, e.g. notes.md
WARNING: train images: 40 (expected 41)
WARNING: test ids: 2 (expected 3)
"""
RECORDED_FIRST_ROWS = [
    "p001-d01-c01/cam01-f0-0000.jpg,1,1,1,1,rgb,0,0,p001-d01-c01-cam01",
    "p001-d01-c01/cam01-f0-0010.jpg,1,1,1,1,rgb,0,10,p001-d01-c01-cam01",
]


@pytest.fixture
def stray_atustc(tiny_atustc: Path) -> Path:
    (tiny_atustc / "AT-USTC" / "notes.md").write_text("x")
    return tiny_atustc


def test_registry_verification_gives_the_recorded_report(stray_atustc):
    adapter = get_benchmark("atustc")
    index, report = adapter.verify(stray_atustc, expected=EXPECTED, decode_workers=1)
    report = json.loads(json.dumps(report).replace(str(stray_atustc), "<images>"))
    assert report == RECORDED_REPORT
    assert list(report["statistics"]) == list(RECORDED_STATISTICS)  # the text table's order
    assert adapter.format_report(report) == RECORDED_TEXT
    assert list(index.columns) == ["path", "person", "date", "clothes", "camera", "modality", "flag", "frame",
                                   "clip"]
    assert index.head(2).to_csv(index=False, header=False).splitlines() == RECORDED_FIRST_ROWS


def test_cli_writes_the_recorded_report(stray_atustc, tmp_path):
    out = tmp_path / "out"
    (stray_atustc / "synthetic_counts.json").write_text(json.dumps({"train": EXPECTED["train"], "all": {}}))
    assert main(["index-atustc", "--images", str(stray_atustc), "--expected", "synthetic", "--index",
                 str(out / "index.csv"), "--report", str(out / "v.json"), "--report-txt", str(out / "v.txt")]) == 0
    report = json.loads((out / "v.json").read_text().replace(str(stray_atustc), "<images>"))
    # Synthetic counts: the splits of synthetic_counts.json, compared with the same 2 % tolerance.
    assert report["expected"] == {"train": EXPECTED["train"]}
    assert report["count_differences"] == RECORDED_REPORT["count_differences"][:1]
    assert report["statistics"] == RECORDED_STATISTICS


def test_atustc_is_a_registered_benchmark_with_its_own_rules():
    assert "atustc" in benchmark_names()
    assert [name for name in benchmark_names() if get_benchmark(name).own_rules] == ["atustc"]
    assert get_benchmark("atustc").protocols.scoring == "scenarios"
    with pytest.raises(AtreidError, match=r"unknown benchmark 'at-ustc'; valid: .*atustc"):
        get_benchmark("at-ustc")


def test_root_index_and_statistics_of_the_benchmark(stray_atustc):
    adapter = get_benchmark("atustc")
    root = adapter.find_root(stray_atustc)
    assert root == stray_atustc / "AT-USTC" and adapter.find_root(root) == root
    index, found, _ = adapter.build_index(stray_atustc)
    assert found == root and adapter.ignored == ["notes.md"]
    assert adapter.statistics(index) == RECORDED_STATISTICS
    write_jpeg(root / "p001-d01-c01" / "camera1.jpg")
    with pytest.raises(AtreidError, match=r"camera1\.jpg: file name does not match AT-USTC's"):
        get_benchmark("atustc").verify(stray_atustc, expected="none")


def test_hard_checks_of_the_adapter(tiny_atustc):
    adapter = get_benchmark("atustc")
    moved = tiny_atustc / "AT-USTC" / "p001-d01-c01" / "cam01-f2-0000.jpg"
    write_jpeg(moved)  # person 1 trains and is now also a query
    with pytest.raises(AtreidError, match=r"persons \[1\] appear in both training and test splits"):
        adapter.verify(tiny_atustc, expected="none")
    moved.unlink()
    for path in (tiny_atustc / "AT-USTC").glob("*/*-f1-*.jpg"):
        path.unlink()
    _, report = adapter.verify(tiny_atustc, expected="none")
    assert report["warnings"] == ["no validation images (flag 1); training does not use them"]


def test_walk_names_the_first_malformed_file_and_counts_the_others(tmp_path):
    from atreid.data.synthetic.miniatures import generate_miniature

    generate_miniature(get_benchmark("vc_clothes"), tmp_path, image_height=32, image_width=16)
    query = tmp_path / "VC-Clothes" / "query"
    write_jpeg(query / "bad-a.jpg")
    write_jpeg(query / "bad-b.jpg")
    with pytest.raises(AtreidError, match=r"query/bad-a\.jpg \(and 1 more\): file name does not match"):
        get_benchmark("vc_clothes").build_index(tmp_path)
