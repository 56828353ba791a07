"""AT-USTC layout parsing, verification, frame sampling and training labels."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from atreid.data.benchmarks import get_benchmark
from atreid.data.benchmarks.atustc import parse_relative_path, sample_frames
from atreid.data.labels import training_labels
from atreid.errors import AtreidError
from tests.conftest import write_jpeg


def test_parse_valid_name():
    fields = parse_relative_path("p001-d01-c02/cam11-f4-0050.jpg")
    assert fields == {
        "path": "p001-d01-c02/cam11-f4-0050.jpg", "person": 1, "date": 1, "clothes": 2,
        "camera": 11, "modality": "ir", "flag": 4, "frame": 50, "clip": "p001-d01-c02-cam11",
    }
    assert parse_relative_path("p270-d13-c01/cam08-f0-1234.jpg")["modality"] == "rgb"


@pytest.mark.parametrize("bad", [
    "p01-d01-c01/cam01-f0-0050.jpg",      # person needs 3 digits
    "p001-d01-c01/cam17-f0-0050.jpg",     # camera 17 does not exist
    "p001-d01-c01/cam00-f0-0050.jpg",     # camera 0 does not exist
    "p001-d01-c01/cam01-fx-0050.jpg",     # flag must be a digit
    "p001-d01-c01/cam01-f0-50.jpg",       # frame needs 4 digits
    "p001-d01-c01/cam01-f0-0050.png",     # AT-USTC frames are JPEG
    "p001-d01/cam01-f0-0050.jpg",         # clothes missing
    "cam01-f0-0050.jpg",                  # no clip folder
    "x/p001-d01-c01/cam01-f0-0050.jpg",   # extra nesting
    "p000-d01-c01/cam01-f0-0050.jpg",     # persons are 1-based
])
def test_parse_malformed_names(bad):
    assert parse_relative_path(bad) is None


def test_verify_builds_index_and_statistics(tiny_atustc):
    index, report = get_benchmark("atustc").verify(tiny_atustc, expected="none")
    assert list(index.columns) == ["path", "person", "date", "clothes", "camera", "modality", "flag", "frame", "clip"]
    assert index["path"].is_monotonic_increasing
    stats = report["statistics"]
    assert stats["train"] == {"ids": 2, "outfits": 4, "rgb_cameras": 1, "ir_cameras": 1, "clips": 8, "images": 40}
    assert stats["val"]["images"] == 2
    assert stats["test"]["ids"] == 2 and stats["test"]["images"] == 2 * 8 * 3
    assert report["warnings"] == []


def test_verify_rejects_malformed_name(tiny_atustc):
    write_jpeg(tiny_atustc / "AT-USTC" / "p001-d01-c01" / "camera1.jpg")
    with pytest.raises(AtreidError, match=r"camera1\.jpg.*does not match.*rename or remove"):
        get_benchmark("atustc").verify(tiny_atustc, expected="none")


def test_verify_reports_corrupt_jpeg_by_name(tiny_atustc):
    bad = tiny_atustc / "AT-USTC" / "p003-d01-c01" / "cam01-f2-0001.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(AtreidError, match=r"cam01-f2-0001\.jpg.*corrupt"):
        get_benchmark("atustc").verify(tiny_atustc, expected="none", decode_workers=2)


def test_verify_rejects_missing_split(tiny_atustc):
    for path in (tiny_atustc / "AT-USTC").glob("*/cam10-f9-*.jpg"):
        path.unlink()
    with pytest.raises(AtreidError, match=r"flag 9"):
        get_benchmark("atustc").verify(tiny_atustc, expected="none")


def test_verify_missing_top_folder(tmp_path):
    with pytest.raises(AtreidError, match="no AT-USTC/ folder"):
        get_benchmark("atustc").verify(tmp_path, expected="none")


def test_count_differences_are_soft(tiny_atustc):
    expected = {"train": {"ids": 2, "images": 1000}}
    _, report = get_benchmark("atustc").verify(tiny_atustc, expected=expected)
    assert report["count_differences"] == [
        {"split": "train", "field": "images", "expected": 1000, "actual": 40, "relative_difference": 0.96}]
    assert any("train images" in w for w in report["warnings"])


def test_stray_files_are_reported_not_fatal(tiny_atustc):
    (tiny_atustc / "AT-USTC" / "README.txt").write_text("hello")
    _, report = get_benchmark("atustc").verify(tiny_atustc, expected="none")
    assert any("non-image" in w for w in report["warnings"])


def _clip_index(frames: int) -> pd.DataFrame:
    rows = [{"path": f"p001-d01-c01/cam01-f0-{i:04d}.jpg", "person": 1, "date": 1, "clothes": 1, "camera": 1,
             "modality": "rgb", "flag": 0, "frame": i, "clip": "p001-d01-c01-cam01"} for i in range(frames)]
    rows.append({"path": "p001-d01-c01/cam02-f1-0000.jpg", "person": 1, "date": 1, "clothes": 1, "camera": 2,
                 "modality": "rgb", "flag": 1, "frame": 0, "clip": "p001-d01-c01-cam02"})
    return pd.DataFrame(rows)


def test_frame_sampling_evenly_spaced_and_deterministic():
    index = _clip_index(100)
    sampled = sample_frames(index, 18)
    assert len(sampled) == 18
    frames = sampled["frame"].tolist()
    assert frames[0] == 0 and frames[-1] == 99
    gaps = {b - a for a, b in zip(frames, frames[1:])}
    assert gaps <= {5, 6}  # evenly spaced
    assert (sampled["flag"] == 0).all()  # validation frames never sampled
    pd.testing.assert_frame_equal(sampled, sample_frames(index.sample(frac=1, random_state=3), 18))


def test_frame_sampling_short_clips_and_all():
    index = _clip_index(7)
    assert len(sample_frames(index, 18)) == 7
    assert len(sample_frames(index, "all")) == 7
    assert len(sample_frames(_clip_index(100), "all")) == 100


def test_training_labels_relabel_sorted():
    train = pd.DataFrame({"person": [7, 3, 7, 3, 9], "clothes": [2, 1, 1, 4, 1]})
    labelled, maps = training_labels(train)
    assert maps["persons"] == [3, 7, 9]
    assert maps["outfits"] == [[3, 1], [3, 4], [7, 1], [7, 2], [9, 1]]
    assert maps["outfit_to_person"] == [0, 0, 1, 1, 2]
    assert labelled["person_label"].tolist() == [1, 0, 1, 0, 2]
    assert labelled["outfit_label"].tolist() == [3, 0, 2, 1, 4]


def test_cli_index_and_sample(tiny_atustc, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "atreid", "index-atustc", "--images", str(tiny_atustc), "--expected", "none",
           "--index", str(out / "index.csv"), "--report", str(out / "v.json"), "--report-txt", str(out / "v.txt")]
    subprocess.run(cmd, check=True, capture_output=True)
    assert "train" in (out / "v.txt").read_text()
    cmd = [sys.executable, "-m", "atreid", "sample-frames", "--index", str(out / "index.csv"), "--frames-per-clip", "3",
           "--out", str(out / "sampled.csv"), "--labels", str(out / "labels.json")]
    subprocess.run(cmd, check=True, capture_output=True)
    sampled = pd.read_csv(out / "sampled.csv")
    assert len(sampled) == 8 * 3
    labels = json.loads((out / "labels.json").read_text())
    assert labels["frames_per_clip"] == 3 and len(labels["outfits"]) == 4


def test_cli_error_is_one_line_and_writes_nothing(tiny_atustc, tmp_path):
    write_jpeg(tiny_atustc / "AT-USTC" / "p001-d01-c01" / "bad-name.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "atreid", "index-atustc", "--images", str(tiny_atustc), "--expected", "none",
           "--index", str(out / "index.csv"), "--report", str(out / "v.json"), "--report-txt", str(out / "v.txt")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "bad-name.jpg" in error_lines[0]
    assert not out.exists() or not any(out.iterdir())
