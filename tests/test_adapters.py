"""Benchmark adapters on small hand-built copies of each real release layout.

Each test writes the few files a case needs (empty files: parsing never decodes unless
asked), then checks the common index, the conventions (junk/distractor ids, split files,
camera shifts, clothes labels) and the errors for missing or malformed files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from atreid.data.benchmarks import benchmark_names, get_benchmark
from atreid.data.benchmarks.base import INDEX_COLUMNS
from atreid.errors import AtreidError
from tests.conftest import write_jpeg

ALL = ["atustc", "cuhk03", "cuhk03_labeled", "custom", "deepchange", "llcm", "ltcc", "market1501", "msmt17", "prcc", "regdb",
       "sysu_mm01", "vc_clothes"]


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def index_of(name: str, images: Path) -> pd.DataFrame:
    index, _, _ = get_benchmark(name).build_index(images)
    assert list(index.columns[:len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS)
    assert index["path"].tolist() == sorted(index["path"])
    return index


def row(index: pd.DataFrame, path: str) -> dict:
    found = index[index["path"] == path]
    assert len(found) == 1, path
    return found.iloc[0].to_dict()


# ---- registry -------------------------------------------------------------------------------
def test_a_benchmark_registers_only_with_its_own_protocols():
    from atreid.data.benchmarks import Benchmark, register_benchmark
    from atreid.data.protocols import standard

    class NoProtocols(Benchmark):
        name = "toy"

    class OthersProtocols(Benchmark):
        name = "toy"
        protocols = standard("market1501", "Market-1501")

    for cls in (NoProtocols, OthersProtocols):
        with pytest.raises(ValueError, match="declares no protocols of its own"):
            register_benchmark(cls)
    assert "toy" not in benchmark_names()


def test_protocols_and_benchmarks_import_without_torch_or_the_evaluation():
    code = ("import sys, atreid.data.protocols, atreid.data.benchmarks; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('atreid.eval')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_lists_every_benchmark_and_rejects_unknown_names():
    assert benchmark_names() == ALL
    with pytest.raises(AtreidError, match="unknown benchmark 'market'; valid: atustc, cuhk03, cuhk03_labeled"):
        get_benchmark("market")


# ---- Market-1501 -----------------------------------------------------------------------------
def market(images: Path, top: str = "Market-1501-v15.09.15") -> Path:
    root = images / top
    touch(root, "bounding_box_train/0002_c1s1_000451_03.jpg", "bounding_box_train/0002_c2s1_000551_01.jpg",
          "query/0002_c3s1_000601_00.jpg",
          "bounding_box_test/0002_c4s1_000701_01.jpg", "bounding_box_test/0000_c1s1_000001_01.jpg",
          "bounding_box_test/-1_c1s1_000002_01.jpg", "bounding_box_test/-1_c2s1_000003_01.jpg",
          "bounding_box_test/Thumbs.db", "gt_bbox/0002_c1s1_000451_03.jpg")
    return root


def test_market_drops_junk_keeps_distractors_in_gallery(tmp_path):
    market(tmp_path)
    adapter = get_benchmark("market1501")
    index, root, warnings = adapter.build_index(tmp_path)
    assert root == tmp_path / "Market-1501-v15.09.15"
    assert -1 not in set(index["person"])
    assert adapter.dropped == {"junk boxes, person id -1": 2}
    distractor = row(index, "bounding_box_test/0000_c1s1_000001_01.jpg")
    assert (distractor["person"], distractor["split"], distractor["camera"]) == (0, "gallery", 1)
    assert row(index, "query/0002_c3s1_000601_00.jpg")["split"] == "query"
    assert set(index["modality"]) == {"rgb"} and set(index["clothes"]) == {-1}
    assert len(index) == 5 and any("Thumbs.db" in w for w in warnings)


def test_market_accepts_other_top_folder_names_and_the_root_itself(tmp_path):
    market(tmp_path / "a", top="Market-1501")
    assert len(index_of("market1501", tmp_path / "a")) == 5
    root = market(tmp_path / "b")
    assert len(index_of("market1501", root)) == 5


def test_market_malformed_name_and_missing_folder_are_hard_errors(tmp_path):
    root = market(tmp_path)
    touch(root, "query/0002_c3_bad.jpg")
    with pytest.raises(AtreidError, match=r"query/0002_c3_bad\.jpg: file name does not match Market-1501"):
        get_benchmark("market1501").build_index(tmp_path)
    (root / "query/0002_c3_bad.jpg").unlink()
    (root / "query/0002_c3s1_000601_00.jpg").unlink()
    (root / "query").rmdir()
    with pytest.raises(AtreidError, match=r"Market-1501-v15\.09\.15/query: required Market-1501 folder missing.*"
                                          r"expected layout"):
        get_benchmark("market1501").build_index(tmp_path)


def test_missing_images_folder_names_the_prepare_step(tmp_path):
    with pytest.raises(AtreidError, match="folder not found; run the prepare step for ltcc"):
        get_benchmark("ltcc").find_root(tmp_path / "nothing")


# ---- CUHK03-NP ---------------------------------------------------------------------------------
def test_cuhk03_detected_and_labeled_read_their_own_boxes(tmp_path):
    for kind in ("detected", "labeled"):
        root = tmp_path / "cuhk03-np" / kind
        touch(root, "bounding_box_train/0001_c1_1.png", "query/0003_c1_2.png",
              "bounding_box_test/0003_c2_1.png", f"bounding_box_test/0004_c2_{'9' if kind == 'labeled' else '8'}.png")
    detected, labeled = index_of("cuhk03", tmp_path), index_of("cuhk03_labeled", tmp_path)
    assert "bounding_box_test/0004_c2_8.png" in set(detected["path"])
    assert "bounding_box_test/0004_c2_9.png" in set(labeled["path"])
    assert row(detected, "query/0003_c1_2.png")["camera"] == 1


# ---- MSMT17 -------------------------------------------------------------------------------------
def msmt(images: Path) -> Path:
    root = images / "MSMT17_V1"
    files = {"list_train.txt": ("train", ["0000/0000_000_01_0303morning_0015_0.jpg 0"]),
             "list_val.txt": ("train", ["0001/0001_004_05_0303noon_0020_1.jpg 1"]),
             "list_query.txt": ("test", ["0000/0000_001_07_0113morning_0100_0.jpg 0"]),
             "list_gallery.txt": ("test", ["0000/0000_002_12_0113noon_0200_0.jpg 0",
                                           "0001/0001_000_03_0113noon_0300_1.jpg 1"])}
    for list_name, (folder, lines) in files.items():
        write(root, list_name, "\n".join(lines) + "\n")
        for line in lines:
            touch(root, f"{folder}/{line.split()[0]}")
    touch(root, "train/0005/0005_000_01_0303morning_0001_0.jpg")  # in no list: not indexed
    return root


def test_msmt17_splits_come_from_the_lists(tmp_path):
    msmt(tmp_path)
    index = index_of("msmt17", tmp_path)
    assert len(index) == 5
    assert set(index.loc[index["split"] == "train", "path"]) == {
        "train/0000/0000_000_01_0303morning_0015_0.jpg", "train/0001/0001_004_05_0303noon_0020_1.jpg"}
    query = row(index, "test/0000/0000_001_07_0113morning_0100_0.jpg")
    assert (query["split"], query["person"], query["camera"]) == ("query", 10_000, 7)
    assert row(index, "train/0001/0001_004_05_0303noon_0020_1.jpg")["camera"] == 5


def test_msmt17_listed_but_missing_file_is_an_error(tmp_path):
    root = msmt(tmp_path)
    (root / "test/0001/0001_000_03_0113noon_0300_1.jpg").unlink()
    with pytest.raises(AtreidError, match=r"0001_000_03_0113noon_0300_1\.jpg: listed in list_gallery\.txt but missing"):
        get_benchmark("msmt17").build_index(tmp_path)


# ---- SYSU-MM01 -----------------------------------------------------------------------------------
def sysu(images: Path) -> Path:
    root = images / "SYSU-MM01"
    write(root, "exp/train_id.txt", "1,2")
    write(root, "exp/val_id.txt", "3")
    write(root, "exp/test_id.txt", "4,5\n")
    for camera in range(1, 7):
        for person in (1, 3, 4, 5, 7):
            touch(root, f"cam{camera}/{person:04d}/0001.jpg")
    touch(root, "cam1/0004/0002.jpg")
    return root


def test_sysu_splits_and_modalities_from_raw_layout(tmp_path):
    sysu(tmp_path)
    adapter = get_benchmark("sysu_mm01")
    index, _, warnings = adapter.build_index(tmp_path)
    test = index[index["person"].isin([4, 5])]
    assert set(test.loc[test["modality"] == "ir", "split"]) == {"query"}
    assert set(test.loc[test["modality"] == "rgb", "split"]) == {"gallery"}
    assert set(test.loc[test["modality"] == "ir", "camera"]) == {3, 6}
    assert set(test.loc[test["modality"] == "rgb", "camera"]) == {1, 2, 4, 5}
    assert set(index.loc[index["person"] == 1, "split"]) == {"train"}
    assert set(index.loc[index["person"] == 3, "split"]) == {"val"}
    assert 7 not in set(index["person"]) and any("0007" in w for w in warnings)
    assert len(index) == 4 * 6 + 1


def test_sysu_overlapping_id_files_and_bad_paths_are_errors(tmp_path):
    root = sysu(tmp_path)
    touch(root, "cam2/0004/x1.jpg")
    with pytest.raises(AtreidError, match=r"cam2/0004/x1\.jpg: file name does not match SYSU-MM01"):
        get_benchmark("sysu_mm01").build_index(tmp_path)
    (root / "cam2/0004/x1.jpg").unlink()
    write(root, "exp/val_id.txt", "3,4")
    with pytest.raises(AtreidError, match="person 4 also in val_id.txt"):
        get_benchmark("sysu_mm01").build_index(tmp_path)
    write(root, "exp/val_id.txt", "3,x")
    with pytest.raises(AtreidError, match="'x' is not an integer id"):
        get_benchmark("sysu_mm01").build_index(tmp_path)


# ---- RegDB ------------------------------------------------------------------------------------------
def regdb(images: Path, trials: int = 10) -> Path:
    root = images / "RegDB"
    names = {}
    for person in (1, 2):
        for folder, vt in (("Visible", "v"), ("Thermal", "t")):
            for frame in (1, 2):
                rel = f"{folder}/{person}/male_front_{vt}_{frame:05d}_{person}.bmp"
                touch(root, rel)
                names[(person, vt, frame)] = rel
    for k in range(1, trials + 1):
        test_person, train_person = (1, 2) if k % 2 else (2, 1)
        for part, person in (("test", test_person), ("train", train_person)):
            for mod, vt in (("visible", "v"), ("thermal", "t")):
                write(root, f"idx/{part}_{mod}_{k}.txt",
                      "".join(f"{names[(person, vt, f)]} {person - 1}\n" for f in (1, 2)))
    return root


def test_regdb_trial_membership_columns(tmp_path):
    regdb(tmp_path)
    index = index_of("regdb", tmp_path)
    assert len(index) == 8
    first = row(index, "Visible/1/male_front_v_00001_1.bmp")
    assert (first["camera"], first["modality"], first["split"]) == (1, "rgb", "test")
    assert first["test_trials"] == "1;3;5;7;9" and first["train_trials"] == "2;4;6;8;10"
    thermal = row(index, "Thermal/2/male_front_t_00002_2.bmp")
    assert (thermal["camera"], thermal["modality"], thermal["test_trials"]) == (2, "ir", "2;4;6;8;10")


def test_regdb_missing_trial_file_is_an_error(tmp_path):
    root = regdb(tmp_path)
    (root / "idx/test_thermal_10.txt").unlink()
    with pytest.raises(AtreidError, match=r"idx/test_thermal_10\.txt: required RegDB file missing"):
        get_benchmark("regdb").build_index(tmp_path)


# ---- LLCM ---------------------------------------------------------------------------------------------
def llcm(images: Path) -> Path:
    root = images / "LLCM"
    write(root, "idx/train_vis.txt", "vis/0001/0001_c01_s185535_f7010_vis.jpg 0\n")
    write(root, "idx/train_nir.txt", "nir/0001/0001_c04_s185535_f7011_nir.jpg 0\n")
    write(root, "idx/test_id.txt", "3")
    touch(root, "vis/0001/0001_c01_s185535_f7010_vis.jpg", "nir/0001/0001_c04_s185535_f7011_nir.jpg",
          "test_vis/cam2/0003/0003_c02_s185734_f3195_vis.jpg", "test_nir/cam2/0003/0003_c02_s185734_f3196_nir.jpg",
          "test_nir/cam5/0009/0009_c05_s185734_f3196_nir.jpg")
    return root


def test_llcm_shifts_ir_cameras_and_filters_test_ids(tmp_path):
    llcm(tmp_path)
    index = index_of("llcm", tmp_path)
    assert len(index) == 4  # person 9 is not a test id
    assert row(index, "nir/0001/0001_c04_s185535_f7011_nir.jpg")["camera"] == 4 + 9
    vis = row(index, "test_vis/cam2/0003/0003_c02_s185734_f3195_vis.jpg")
    nir = row(index, "test_nir/cam2/0003/0003_c02_s185734_f3196_nir.jpg")
    assert (vis["camera"], vis["modality"], vis["split"]) == (2, "rgb", "test")
    assert (nir["camera"], nir["modality"], nir["split"]) == (11, "ir", "test")


# ---- PRCC ------------------------------------------------------------------------------------------------
def prcc(images: Path) -> Path:
    root = images / "prcc"
    touch(root, "rgb/train/001/A_cropped_rgb001.jpg", "rgb/train/001/C_cropped_rgb002.jpg",
          "rgb/val/002/B_cropped_rgb003.jpg",
          "rgb/test/A/010/cropped_rgb001.jpg", "rgb/test/B/010/cropped_rgb002.jpg",
          "rgb/test/C/010/cropped_rgb003.jpg", "sketch/test/A/010/cropped_rgb001.jpg")
    return root


def test_prcc_cameras_clothes_and_test_splits(tmp_path):
    prcc(tmp_path)
    index = index_of("prcc", tmp_path)
    assert len(index) == 6
    expect = {"rgb/test/A/010/cropped_rgb001.jpg": (1, 1, "gallery"),
              "rgb/test/B/010/cropped_rgb002.jpg": (2, 1, "query"),
              "rgb/test/C/010/cropped_rgb003.jpg": (3, 2, "query"),
              "rgb/train/001/C_cropped_rgb002.jpg": (3, 2, "train"),
              "rgb/val/002/B_cropped_rgb003.jpg": (2, 1, "val")}
    for path, (camera, clothes, split) in expect.items():
        r = row(index, path)
        assert (r["camera"], r["clothes"], r["split"], r["person"]) == (camera, clothes, split, int(path.split("/")[-2]))


# ---- LTCC --------------------------------------------------------------------------------------------------
def ltcc(images: Path) -> Path:
    root = images / "LTCC_ReID"
    write(root, "info/cloth-change_id_train.txt", "1\n")
    write(root, "info/cloth-unchange_id_train.txt", "2\n")
    write(root, "info/cloth-change_id_test.txt", "10\n")
    write(root, "info/cloth-unchange_id_test.txt", "11\n")
    touch(root, "train/001_1_c1_000001.png", "train/002_1_c2_000002.png", "query/010_1_c3_000003.png",
          "test/010_2_c4_000004.png", "test/011_1_c5_000005.png")
    return root


def test_ltcc_clothes_and_changing_ids(tmp_path):
    root = ltcc(tmp_path)
    index = index_of("ltcc", tmp_path)
    gallery = row(index, "test/010_2_c4_000004.png")
    assert (gallery["split"], gallery["clothes"], gallery["camera"], gallery["clothes_changing"]) == ("gallery", 2, 4, 1)
    assert row(index, "test/011_1_c5_000005.png")["clothes_changing"] == 0
    assert row(index, "train/001_1_c1_000001.png")["clothes_changing"] == 1
    write(root, "info/cloth-unchange_id_test.txt", "11\n10\n")
    with pytest.raises(AtreidError, match="person 10 is also in cloth-unchange_id_test.txt"):
        get_benchmark("ltcc").build_index(tmp_path)


# ---- DeepChange / VC-Clothes ------------------------------------------------------------------------------
def test_deepchange_timestamp_is_the_clothes_proxy(tmp_path):
    root = tmp_path / "DeepChangeDataset"
    touch(root, "train-set/p0702_c13_20200813_154757_000038_bbox.jpg",
          "val-set-query/p0800_c01_20200101_080000_000001_bbox.jpg",
          "val-set-gallery/p0800_c02_20200101_090000_000002_bbox.jpg",
          "test-set-query/p0900_c05_20190720_141623_000010_bbox.jpg",
          "test-set-gallery/p0900_c05_20190721_101010_000011_bbox.jpg",
          "test-set-gallery/p0900_c06_20200720_141623_000012_bbox.jpg")
    index = index_of("deepchange", tmp_path)
    assert list(index.columns[-3:]) == ["clothes_with_year", "date", "time"]
    query = row(index, "test-set-query/p0900_c05_20190720_141623_000010_bbox.jpg")
    assert (query["person"], query["camera"], query["split"]) == (900, 5, "query")
    # clothes: the reference's proxy, (YYYYMMDD mod 10000) * 1,000,000 + hhmmss (no year);
    # clothes_with_year: the full timestamp.
    assert (query["clothes"], query["clothes_with_year"], query["date"], query["time"]) == (
        720141623, 20190720141623, 20190720, 141623)
    # Two captures that differ only by the year share the clothes id, not the year-aware one.
    year_later = row(index, "test-set-gallery/p0900_c06_20200720_141623_000012_bbox.jpg")
    assert year_later["clothes"] == query["clothes"]
    assert year_later["clothes_with_year"] == 20200720141623 != query["clothes_with_year"]
    assert row(index, "test-set-gallery/p0900_c05_20190721_101010_000011_bbox.jpg")["clothes"] == 721101010
    assert set(index["split"]) == {"train", "val_query", "val_gallery", "query", "gallery"}


def test_vc_clothes_outfit(tmp_path):
    root = tmp_path / "VC-Clothes"
    touch(root, "train/0001-01-01-01.jpg", "query/0227-02-01-05.jpg", "gallery/0227-04-03-06.jpg")
    index = index_of("vc_clothes", tmp_path)
    g = row(index, "gallery/0227-04-03-06.jpg")
    assert (g["person"], g["camera"], g["clothes"], g["split"]) == (227, 4, 3, "gallery")


# ---- verification -------------------------------------------------------------------------------------------
def test_verification_compares_published_counts_softly(tmp_path):
    market(tmp_path)
    adapter = get_benchmark("market1501")
    index, report = adapter.verify(tmp_path, expected="official")
    assert report["ok"] and report["statistics"]["gallery"]["ids"] == 2
    assert report["statistics"]["gallery"]["distractor_images"] == 1
    diff = {(d["group"], d["field"]) for d in report["count_differences"]}
    assert ("train", "images") in diff and ("query", "ids") in diff
    assert any("train images: 2 (expected 12,936, tolerance 2%)" in w for w in report["warnings"])
    text = adapter.format_report(report)
    assert "Market-1501 verification" in text and "gallery" in text and "junk boxes, person id -1" in text


def test_verification_against_synthetic_counts_is_exact(tmp_path):
    market(tmp_path)
    adapter = get_benchmark("market1501")
    with pytest.raises(AtreidError, match="synthetic_counts.json: missing"):
        adapter.verify(tmp_path, expected="synthetic")
    index, _, _ = adapter.build_index(tmp_path)
    stats = adapter.statistics(index)
    (tmp_path / "synthetic_counts.json").write_text(json.dumps({"statistics": stats}))
    _, report = adapter.verify(tmp_path, expected="synthetic")
    assert report["count_differences"] == [] and not any("expected" in w for w in report["warnings"])
    stats["query"]["images"] += 1
    (tmp_path / "synthetic_counts.json").write_text(json.dumps({"statistics": stats}))
    _, report = adapter.verify(tmp_path, expected="synthetic")
    assert [(d["group"], d["field"]) for d in report["count_differences"]] == [("query", "images")]


def test_verification_decodes_images_when_asked(tmp_path):
    root = tmp_path / "VC-Clothes"
    write_jpeg(root / "train/0001-01-01-01.jpg")
    write_jpeg(root / "query/0002-02-01-01.jpg")
    touch(root, "gallery/0002-03-02-01.jpg")  # empty: corrupt
    adapter = get_benchmark("vc_clothes")
    adapter.verify(tmp_path, expected="none")  # parsing alone does not decode
    with pytest.raises(AtreidError, match=r"gallery/0002-03-02-01\.jpg: unreadable or corrupt image"):
        adapter.verify(tmp_path, expected="none", decode_workers=1)
    _, report = get_benchmark("vc_clothes").verify(tmp_path, expected="official")
    assert any("no published statistics" in w for w in report["warnings"])


def test_a_release_wrapped_in_other_folders_is_found(tmp_path):
    market(tmp_path / "wrapper" / "Market-1501-v15.09.15", top="Market-1501")
    index, root, _ = get_benchmark("market1501").build_index(tmp_path)
    assert root == tmp_path / "wrapper" / "Market-1501-v15.09.15" / "Market-1501" and len(index) == 5
    for kind in ("labeled", "detected"):
        touch(tmp_path / "x" / "cuhk03-np" / kind, "bounding_box_train/0001_c1_1.png", "query/0003_c1_2.png",
              "bounding_box_test/0003_c2_1.png")
    assert get_benchmark("cuhk03").find_root(tmp_path / "x").name == "detected"
    assert get_benchmark("cuhk03_labeled").find_root(tmp_path / "x").name == "labeled"
