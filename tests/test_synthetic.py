"""Synthetic AT-USTC: renderer, layout, flags, counts, determinism, atomicity, difficulty."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atreid.data.benchmarks import get_benchmark
from atreid.data.synthetic import atustc as synthetic_atustc
from atreid.data.synthetic.atustc import COUNTS_FILE, generate_atustc, plan_atustc
from atreid.data.synthetic.render import Camera, Identity, Outfit, render_image
from atreid.errors import AtreidError

NAME_RE = re.compile(r"^p(\d{3})-d(\d{2})-c(\d{2})/cam(0[1-9]|1[0-6])-f(\d)-(\d{4})\.jpg$")

SMALL = dict(seed=0, train_persons=4, test_persons=12, outfits=[2, 3], dates=3,
             train_cameras_per_outfit=4, train_frames_per_clip=3, val_fraction=0.25,
             image_height=128, image_width=64, jpeg_quality=90)
TINY = dict(SMALL, train_persons=2, test_persons=2, train_frames_per_clip=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict, object]:
    out = tmp_path_factory.mktemp("synthetic") / "images"
    counts = generate_atustc(out, **SMALL)
    atustc = get_benchmark("atustc")
    index, _, _ = atustc.build_index(out)  # a malformed name would raise
    assert atustc.ignored == []
    return out, counts, index


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- renderer

def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    return Identity.sample(rng), Outfit.sample(rng), Camera.sample(rng, 1)


def test_render_shape_and_determinism():
    identity, outfit, camera = _scene()
    for infrared in (False, True):
        a = render_image(identity, outfit, camera, infrared=infrared, rng=np.random.default_rng(5), height=128, width=64)
        b = render_image(identity, outfit, camera, infrared=infrared, rng=np.random.default_rng(5), height=128, width=64)
        c = render_image(identity, outfit, camera, infrared=infrared, rng=np.random.default_rng(6), height=128, width=64)
        assert a.shape == (128, 64, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)                 # per-frame jitter
        assert np.abs(a.astype(int) - c.astype(int)).mean() < 40   # ... but only slight
    other = render_image(identity, outfit, camera, infrared=False, rng=np.random.default_rng(0), height=96, width=48)
    assert other.shape == (96, 48, 3)


def test_render_infrared_is_grey_and_rgb_is_coloured():
    identity, outfit, camera = _scene(1)
    ir = render_image(identity, outfit, camera, infrared=True, rng=np.random.default_rng(0))
    rgb = render_image(identity, outfit, camera, infrared=False, rng=np.random.default_rng(0))
    assert np.array_equal(ir[..., 0], ir[..., 1]) and np.array_equal(ir[..., 0], ir[..., 2])
    assert (rgb.max(axis=2).astype(int) - rgb.min(axis=2)).mean() > 10


def test_records_are_frozen_and_deterministic():
    identity, outfit, camera = _scene(3)
    assert (identity, outfit, camera) == _scene(3)
    assert identity != _scene(4)[0]
    with pytest.raises(Exception):
        identity.height = 1.0  # type: ignore[misc]
    assert 0 < sum(identity.head_pattern) < 4     # the 2x2 pattern always has contrast
    assert hash(camera) == hash(_scene(3)[2])


def test_render_speed():
    identity, outfit, camera = _scene(2)
    rng = np.random.default_rng(0)
    import time

    render_image(identity, outfit, camera, infrared=True, rng=rng)
    start = time.perf_counter()
    for i in range(100):
        render_image(identity, outfit, camera, infrared=bool(i % 2), rng=rng)
    per_image = (time.perf_counter() - start) / 100
    assert per_image < 0.01   # ~1 ms on one core; generous for loaded CI machines


# ----------------------------------------------------------------------------- layout

def test_layout_and_names(small):
    out, counts, index = small
    assert sorted(p.name for p in out.iterdir()) == ["AT-USTC", COUNTS_FILE]
    paths = [p.relative_to(out / "AT-USTC").as_posix() for p in (out / "AT-USTC").rglob("*") if p.is_file()]
    assert len(paths) == counts["all"]["images"] > 0
    for path in paths:
        assert NAME_RE.match(path), path
    with Image.open(out / "AT-USTC" / paths[0]) as image:
        assert image.format == "JPEG" and image.size == (64, 128) and image.mode == "RGB"


def test_every_flag_and_camera_present(small):
    _, _, index = small
    assert sorted(index["flag"].unique()) == list(range(10))
    assert set(index["camera"]) == set(range(1, 17))
    rgb_flags, ir_flags = {2, 3, 6, 7}, {4, 5, 8, 9}
    assert set(index.loc[index["flag"].isin(rgb_flags), "camera"]) <= set(range(1, 9))
    assert set(index.loc[index["flag"].isin(ir_flags), "camera"]) <= set(range(9, 17))
    train = index[index["flag"] == 0]
    for person, rows in train.groupby("person"):
        assert set(rows["modality"]) == {"rgb", "ir"}, person      # the PK sampler needs both


def test_persons_disjoint_and_numbered(small):
    _, _, index = small
    train = set(index.loc[index["flag"] <= 1, "person"])
    test = set(index.loc[index["flag"] >= 2, "person"])
    assert train == set(range(1, 5)) and test == set(range(5, 17))
    assert not train & test


def test_outfit_schedule(small):
    _, _, index = small
    sessions = index.groupby(["person", "date"])["clothes"].nunique()
    assert (sessions == 1).all()                                   # one outfit per date
    outfits = index.groupby("person")["clothes"].nunique()
    assert outfits.between(2, 3).all()
    for person, rows in index[index["flag"] <= 1].groupby("person"):
        # every outfit keeps training images after the validation split
        assert set(rows["clothes"]) == set(rows.loc[rows["flag"] == 0, "clothes"]), person


def test_test_clips_have_three_frames_and_one_flag(small):
    _, _, index = small
    test = index[index["flag"] >= 2]
    assert (test.groupby("clip").size() == 3).all()
    assert (index.groupby("clip")["flag"].nunique() == 1).all()


def test_validation_share(small):
    _, counts, _ = small
    share = counts["val"]["clips"] / (counts["train"]["clips"] + counts["val"]["clips"])
    assert abs(share - SMALL["val_fraction"]) < 0.05
    assert counts["val"]["ids"] == SMALL["train_persons"]


def test_counts_match_files(small):
    out, counts, index = small
    assert counts == get_benchmark("atustc").statistics(index)
    assert json.loads((out / COUNTS_FILE).read_text()) == counts


# Scenario -> (query flags, gallery flags, modality rule, clothes rule), as protocols.md.
SCENARIOS = {
    "DT-ST": ((2,), (6,), "rgb", "same"), "NT-ST": ((4,), (8,), "ir", "same"),
    "AD-ST": ((2, 4), (6, 8), "cross", "same"), "DT-LT": ((3,), (7,), "rgb", "changed"),
    "NT-LT": ((5,), (9,), "ir", "changed"), "AD-LT": ((3, 5), (7, 9), "cross", "changed"),
}


def _lists(index, scenario):
    qf, gf, modality, _ = SCENARIOS[scenario]
    q = index[index["flag"].isin(qf)]
    g = index[index["flag"].isin(gf)]
    if modality in ("rgb", "ir"):
        q, g = q[q["modality"] == modality], g[g["modality"] == modality]
    return q, g


def _kept(row, g, scenario) -> tuple[np.ndarray, np.ndarray]:
    """(kept gallery mask, positive mask) for one query, with the protocol's removals."""
    _, _, modality, clothes = SCENARIOS[scenario]
    person = g["person"].to_numpy() == row.person
    keep = ~(person & (g["camera"].to_numpy() == row.camera))
    if modality == "cross":
        keep &= g["modality"].to_numpy() != row.modality
    same_clothes = person & (g["clothes"].to_numpy() == row.clothes)
    keep &= ~(person & ~same_clothes) if clothes == "same" else ~same_clothes
    return keep, keep & person


def test_every_query_is_valid_in_every_scenario(small):
    _, _, index = small
    for scenario in SCENARIOS:
        q, g = _lists(index, scenario)
        assert len(q) > 0
        for row in q.itertuples():
            _, positives = _kept(row, g, scenario)
            assert positives.any(), (scenario, row.path)


def test_plan_is_deterministic_and_seeded():
    kwargs = {k: v for k, v in SMALL.items() if k not in ("image_height", "image_width", "jpeg_quality")}
    assert plan_atustc(**kwargs) == plan_atustc(**kwargs)
    assert plan_atustc(**kwargs) != plan_atustc(**dict(kwargs, seed=1))


def test_generation_is_byte_identical(tmp_path):
    generate_atustc(tmp_path / "a", **TINY)
    generate_atustc(tmp_path / "b", **TINY, workers=2)
    generate_atustc(tmp_path / "c", **dict(TINY, seed=1))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a != c


def test_infrared_files_are_grey(small):
    out, _, index = small
    for modality, check in (("ir", lambda s: s.max() <= 6 and s.mean() < 1.0), ("rgb", lambda s: s.mean() > 10)):
        for path in index.loc[index["modality"] == modality, "path"].iloc[::25]:
            pixels = np.asarray(Image.open(out / "AT-USTC" / path).convert("RGB")).astype(int)
            spread = pixels.max(axis=2) - pixels.min(axis=2)
            assert check(spread), (path, spread.max(), spread.mean())


def test_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic_atustc._write_jpeg

    def failing(path, image, quality):
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError("disk full")
        real(path, image, quality)

    monkeypatch.setattr(synthetic_atustc, "_write_jpeg", failing)
    out = tmp_path / "images"
    with pytest.raises(OSError, match="disk full"):
        generate_atustc(out, **TINY)
    assert calls["n"] > 20
    assert not (out / "AT-USTC").exists()
    assert not (out / COUNTS_FILE).exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_dir() and p != out]
    assert leftovers == []


def test_invalid_settings_raise():
    with pytest.raises(AtreidError, match="data.synthetic"):
        generate_atustc("/nonexistent/never", **dict(TINY, outfits=[3, 2]))
    with pytest.raises(AtreidError, match="train_cameras_per_outfit"):
        generate_atustc("/nonexistent/never", **dict(TINY, train_cameras_per_outfit=1))


# ----------------------------------------------------------------------------- difficulty

def _histogram(path: Path, bins: int = 8) -> np.ndarray:
    """Joint RGB histogram of the body region, L1-normalised.

    The centre crop keeps mostly the person: whole-image histograms are dominated by the
    camera's background, which other persons seen by the same camera share.
    """
    pixels = np.asarray(Image.open(path).convert("RGB"))[24:112, 20:44] // (256 // bins)
    code = (pixels[..., 0].astype(int) * bins + pixels[..., 1]) * bins + pixels[..., 2]
    hist = np.bincount(code.ravel(), minlength=bins ** 3).astype(float)
    return hist / hist.sum()


def _rank1(index, features: dict[str, np.ndarray], scenario: str) -> tuple[float, int]:
    q, g = _lists(index, scenario)
    gallery = np.stack([features[p] for p in g["path"]])
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    hits = []
    for row in q.itertuples():
        keep, positives = _kept(row, g, scenario)
        if not positives.any():
            continue
        query = features[row.path] / np.linalg.norm(features[row.path])
        distance = np.where(keep, 1.0 - gallery @ query, np.inf)
        hits.append(bool(positives[int(np.argmin(distance))]))
    return float(np.mean(hits)), len(hits)


def test_difficulty_ordering_of_a_colour_histogram(small):
    """Same-clothes RGB retrieval must be clearly easier than clothes-changed and cross-modality.

    (The margin is 0.1: clothes are deliberately muted, see atreid.data.synthetic.render,
    so a colour histogram separates outfits less than it would with saturated clothes.)"""
    out, _, index = small
    test = index[index["flag"] >= 2]
    features = {p: _histogram(out / "AT-USTC" / p) for p in test["path"]}
    r1 = {s: _rank1(test, features, s)[0] for s in ("DT-ST", "DT-LT", "AD-ST")}
    chance = 1 / SMALL["test_persons"]
    assert r1["DT-ST"] > 2.5 * chance, r1
    assert r1["DT-ST"] > r1["DT-LT"] + 0.1, r1
    assert r1["DT-ST"] > r1["AD-ST"] + 0.1, r1
