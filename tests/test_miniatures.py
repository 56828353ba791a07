"""Synthetic miniatures: exact release layouts, parsed by the real adapters, deterministic.

Every miniature is generated once per module (small 64x32 images), parsed by its
adapter and compared row by row with the rows the generator intended; its protocols
must have valid queries; the same seed must give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from atreid.cli import main
from atreid.data.benchmarks import benchmark_names, get_benchmark
from atreid.data.benchmarks.files import read_benchmark_index
from atreid.data.protocols import BenchmarkProtocols
from atreid.data.synthetic.miniatures import generate_miniature, plan_miniature
from atreid.errors import AtreidError
from atreid.eval.scoring import score_protocols
from atreid.eval.trials import candidate_rows

SIZE = {"image_height": 64, "image_width": 32}
# Every benchmark with a release has a miniature; custom (your own data) has none, and
# AT-USTC has its own generator (atreid.data.synthetic.atustc, its own rules).
RELEASES = [name for name in benchmark_names() if name != "custom" and not get_benchmark(name).own_rules]


@pytest.fixture(scope="module")
def miniatures(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("miniatures")
    out = {}
    for name in RELEASES:
        generate_miniature(get_benchmark(name), base / name / "images", seed=0, **SIZE)
        out[name] = base / name / "images"
    return out


def manifest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_benchmark_has_a_miniature():
    assert [name for name in benchmark_names() if get_benchmark(name).miniature is not None] == RELEASES
    with pytest.raises(AtreidError, match="no synthetic miniature for 'custom'"):
        plan_miniature(get_benchmark("custom"), 0)


@pytest.mark.parametrize("name", RELEASES)
def test_miniature_parses_into_exactly_the_intended_index(miniatures, name):
    adapter = get_benchmark(name)
    index, report = adapter.verify(miniatures[name], expected="synthetic", decode_workers=1)
    _, intended = plan_miniature(get_benchmark(name), 0)
    pd.testing.assert_frame_equal(index.reset_index(drop=True), intended, check_dtype=False)
    assert report["count_differences"] == [] and report["warnings"] == []
    counts = json.loads((miniatures[name] / "synthetic_counts.json").read_text())
    assert counts["statistics"] == report["statistics"] and counts["benchmark"] == name
    assert 60 <= len(index) <= 400  # a few hundred images at most
    assert (miniatures[name] / adapter.top_folders[0]).is_dir()  # the official top folder


def perfect_scores(index: pd.DataFrame, spec: BenchmarkProtocols) -> dict:
    """Every protocol of ``spec`` scored with 'perfect' features: one direction per person."""
    rows = candidate_rows(index, spec).reset_index(drop=True)
    persons = {p: i for i, p in enumerate(sorted(rows["person"].unique()))}
    features = torch.zeros(len(rows), 6, len(persons))
    for i, person in enumerate(rows["person"]):
        features[i, :, persons[person]] = 1.0
    return score_protocols(features, rows, spec)


@pytest.mark.parametrize("name", RELEASES)
def test_every_protocol_of_the_miniature_has_valid_queries(miniatures, name):
    """With 'perfect' features (one direction per person) every valid query ranks first."""
    index, _, _ = get_benchmark(name).build_index(miniatures[name])
    spec = get_benchmark(name).protocols
    results = perfect_scores(index, spec)
    for protocol in spec.protocols:
        for trial in results[protocol.name]["trials"]:
            assert trial["num_valid"] > 0, (protocol.name, trial)
            assert trial["R1"] == pytest.approx(100.0), (protocol.name, trial)


def test_conventions_of_the_real_releases(miniatures):
    market = get_benchmark("market1501")
    index, _, _ = market.build_index(miniatures["market1501"])
    assert market.dropped["junk boxes, person id -1"] == 6
    assert (index.loc[index["person"] == 0, "split"] == "gallery").all() and (index["person"] == 0).sum() == 8
    sysu_root = miniatures["sysu_mm01"] / "SYSU-MM01"
    assert sorted(p.name for p in (sysu_root / "exp").iterdir()) == ["test_id.txt", "train_id.txt", "val_id.txt"]
    regdb_idx = miniatures["regdb"] / "RegDB" / "idx"
    assert len(list(regdb_idx.glob("*.txt"))) == 40
    llcm = miniatures["llcm"] / "LLCM"
    alias = next((llcm / "test_nir").rglob("*.jpg"))
    original = llcm / "nir" / alias.parent.name / alias.name
    assert original.read_bytes() == alias.read_bytes()  # the test folders alias vis/ and nir/
    ltcc = miniatures["ltcc"] / "LTCC_ReID" / "info"
    assert sorted(p.name for p in ltcc.iterdir()) == ["cloth-change_id_test.txt", "cloth-change_id_train.txt",
                                                      "cloth-unchange_id_test.txt", "cloth-unchange_id_train.txt"]
    sysu = get_benchmark("sysu_mm01").build_index(miniatures["sysu_mm01"])[0]
    ir = sysu[sysu["modality"] == "ir"]
    assert set(ir["camera"]) <= {3, 6}
    image = np.asarray(Image.open(miniatures["sysu_mm01"] / "SYSU-MM01" / ir["path"].iloc[0]))
    assert (image[..., 0] == image[..., 1]).all()  # infrared cameras render grey images
    cuhk = miniatures["cuhk03"] / "cuhk03-np"
    assert (cuhk / "detected").is_dir() and (cuhk / "labeled").is_dir()
    deepchange = get_benchmark("deepchange").build_index(miniatures["deepchange"])[0]
    # Clothes proxies: the reference's year-less MMDDhhmmss and the full timestamp.
    assert (deepchange["clothes_with_year"] == deepchange["date"] * 1_000_000 + deepchange["time"]).all()
    assert (deepchange["clothes"] == deepchange["clothes_with_year"] % 10**10).all()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    generate_miniature(get_benchmark("prcc"), tmp_path / "a", seed=3, **SIZE)
    generate_miniature(get_benchmark("prcc"), tmp_path / "b", seed=3, **SIZE)
    generate_miniature(get_benchmark("prcc"), tmp_path / "c", seed=4, **SIZE)
    assert manifest(tmp_path / "a") == manifest(tmp_path / "b")
    assert manifest(tmp_path / "a") != manifest(tmp_path / "c")


def test_benchmarks_do_not_share_persons():
    """Different benchmarks draw their identities from different seed streams."""
    from atreid.data.synthetic.miniatures import Context

    a, b = Context("market1501", 0), Context("msmt17", 0)
    assert a.identity(5) != b.identity(5)


def test_cli_prepare_and_index(tmp_path):
    images = tmp_path / "data" / "ltcc" / "images"
    settings = json.dumps({"seed": 1, **SIZE, "jpeg_quality": 90})
    assert main(["prepare-benchmark", "--benchmark", "ltcc", "--source", '{"source": "synthetic"}',
                 "--synthetic", settings, "--out", str(images), "--record", str(tmp_path / "rec.json")]) == 0
    out = tmp_path / "data" / "ltcc"
    assert main(["index-benchmark", "--benchmark", "ltcc", "--images", str(images), "--expected", "synthetic",
                 "--workers", "1", "--index", str(out / "index.csv"), "--report", str(out / "verification.json"),
                 "--report-txt", str(out / "verification.txt")]) == 0
    index = read_benchmark_index(out / "index.csv")
    assert {"clothes_changing"} <= set(index.columns) and len(index) > 0
    assert "LTCC verification" in (out / "verification.txt").read_text()
    assert main(["prepare-benchmark", "--benchmark", "ltccc", "--source", '{"source": "synthetic"}',
                 "--out", str(tmp_path / "x"), "--record", str(tmp_path / "r.json")]) == 2


def test_cli_imports_a_user_copy_with_checksum(tmp_path, miniatures):
    import shutil

    archive = shutil.make_archive(str(tmp_path / "prcc"), "zip", miniatures["prcc"], "prcc")
    images = tmp_path / "data" / "prcc" / "images"
    record = tmp_path / "data" / "prcc" / "source.json"
    source = json.dumps({"source": archive, "sha256": None})
    assert main(["prepare-benchmark", "--benchmark", "prcc", "--source", source, "--out", str(images),
                 "--record", str(record)]) == 0
    assert json.loads(record.read_text())["sha256"] == hashlib.sha256(Path(archive).read_bytes()).hexdigest()
    index, _, _ = get_benchmark("prcc").build_index(images)
    assert len(index) == len(plan_miniature(get_benchmark("prcc"), 0)[1])
    wrong = json.dumps({"source": archive, "sha256": "0" * 64})
    assert main(["prepare-benchmark", "--benchmark", "prcc", "--source", wrong, "--out", str(images),
                 "--record", str(record)]) == 2
