"""Cross-dataset protocols pinned on small hand-built indexes and features.

Each case builds a few index rows and features whose distances are known (unit vectors
and their mixtures), so whether a gallery entry is removed shows up as R1 = 0 or 100.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from atreid.data.benchmarks import benchmark_names, get_benchmark
from atreid.data.protocols import select
from atreid.eval.scoring import score_protocols, summary_of
from atreid.eval.trials import candidate_rows, draw_per_person_camera, trial_sets
from atreid.errors import AtreidError

DIM = 8
COLUMNS = ["path", "person", "camera", "modality", "clothes", "split"]


def index_frame(rows, extra=()):
    return pd.DataFrame(rows, columns=COLUMNS + list(extra))


def features_for(index: pd.DataFrame, vectors: dict[str, np.ndarray], heads=range(6), other=None) -> torch.Tensor:
    """(N, 6, DIM): ``vectors[path]`` at the given heads, ``other[path]`` (or zeros+noise) elsewhere."""
    rng = np.random.default_rng(0)
    out = np.zeros((len(index), 6, DIM))
    for i, path in enumerate(index["path"]):
        for h in range(6):
            if h in heads:
                out[i, h] = vectors[path]
            else:
                out[i, h] = other[path] if other else rng.normal(size=DIM)
    return torch.tensor(out, dtype=torch.float32)


def e(i: int, plus: dict[int, float] | None = None) -> np.ndarray:
    v = np.zeros(DIM)
    v[i] = 1.0
    for j, w in (plus or {}).items():
        v[j] += w
    return v


def run(benchmark, index, vectors, protocols=None, **kw):
    spec = get_benchmark(benchmark).protocols
    rows = candidate_rows(index, spec).reset_index(drop=True)
    return score_protocols(features_for(rows, vectors, **kw), rows, spec, protocols=protocols)


# ---- the table of protocols.md --------------------------------------------------------------
# Every registered benchmark's protocols, as its module declares them.
PROTOCOLS = {name: get_benchmark(name).protocols for name in benchmark_names()}


def test_every_benchmark_declares_its_protocols_with_the_published_heads():
    assert all(spec.benchmark == name for name, spec in PROTOCOLS.items())
    heads = {(b, p.name): p.head for b, spec in PROTOCOLS.items() for p in spec.protocols}
    for b in ("market1501", "cuhk03", "cuhk03_labeled", "msmt17"):
        assert heads[(b, "standard")] == 0
    for name in ("all-search-single-shot", "all-search-multi-shot-10x10", "all-search-multi-shot-all",
                 "indoor-single-shot", "indoor-multi-shot-10x10", "indoor-multi-shot-all"):
        assert heads[("sysu_mm01", name)] == 4
    for b in ("regdb", "llcm"):
        assert heads[(b, "IR->RGB")] == heads[(b, "RGB->IR")] == 4
    assert (heads[("prcc", "cc")], heads[("prcc", "sc")]) == (1, 0)
    assert heads[("ltcc", "general")] == heads[("ltcc", "cc")] == heads[("ltcc", "cc-query-only")] == 1
    assert heads[("deepchange", "cc")] == heads[("deepchange", "cc-year-aware")] == heads[("deepchange", "cc-date")] == 1
    assert (heads[("vc_clothes", "cc")], heads[("vc_clothes", "sc")]) == (1, 0)
    mains = {b: spec.main for b, spec in PROTOCOLS.items()}
    assert mains["sysu_mm01"] == "all-search-single-shot" and mains["prcc"] == "cc" and mains["ltcc"] == "cc"
    assert mains["deepchange"] == "cc"
    assert mains["regdb"] == mains["llcm"] == "both-directions"
    trials = {(b, p.name): p.trials for b, spec in PROTOCOLS.items() for p in spec.protocols}
    assert trials[("sysu_mm01", "all-search-single-shot")] == trials[("regdb", "IR->RGB")] == 10
    assert trials[("llcm", "RGB->IR")] == 10 and trials[("market1501", "standard")] == 1
    with pytest.raises(AtreidError, match="unknown protocol 'v2i' for regdb; valid: IR->RGB, RGB->IR, both-directions"):
        get_benchmark("regdb").protocols.get("v2i")


def test_only_single_shot_all_search_drops_camera_2_for_camera_3():
    rules = {p.name: p.rule for p in get_benchmark("sysu_mm01").protocols.protocols}
    assert rules["all-search-single-shot"].excluded_camera_pairs == ((3, 2),)
    assert all(r.excluded_camera_pairs == () for n, r in rules.items() if n != "all-search-single-shot")
    assert all(r.modality == "cross" and r.same_camera for r in rules.values())
    assert get_benchmark("deepchange").protocols.get("cc").rule.same_camera is False


# ---- SYSU-MM01 ---------------------------------------------------------------------------------
def sysu_case():
    index = index_frame([
        ("cam3/0001/0001.jpg", 1, 3, "ir", -1, "query"),
        ("cam6/0001/0001.jpg", 1, 6, "ir", -1, "query"),
        ("cam2/0002/0001.jpg", 2, 2, "rgb", -1, "gallery"),   # nearest, another person
        ("cam1/0001/0001.jpg", 1, 1, "rgb", -1, "gallery"),   # the positive
        ("cam3/0002/0001.jpg", 2, 3, "ir", -1, "query"),
    ])
    vectors = {"cam3/0001/0001.jpg": e(0), "cam6/0001/0001.jpg": e(0), "cam2/0002/0001.jpg": e(0),
               "cam1/0001/0001.jpg": e(0, {1: 0.6}), "cam3/0002/0001.jpg": e(0)}
    return index, vectors


def test_sysu_camera_rule_in_single_shot_all_search_only():
    index, vectors = sysu_case()
    res = run("sysu_mm01", index, vectors)
    single = res["all-search-single-shot"]["trials"][0]
    # Person 1's camera-3 query loses the nearer camera-2 impostor (R1 100); its camera-6
    # query does not (R1 0); person 2's camera-3 query loses its only positive (skipped).
    assert single["num_valid"] == 2 and single["R1"] == pytest.approx(50.0)
    # Without the rule every query is valid and only person 2's query ranks its positive first.
    for name in ("all-search-multi-shot-10x10", "all-search-multi-shot-all"):
        multi = res[name]["trials"][0]
        assert multi["num_valid"] == 3 and multi["R1"] == pytest.approx(100 / 3)
    indoor = res["indoor-single-shot"]["trials"][0]
    assert indoor["num_valid"] == 3 and indoor["R1"] == pytest.approx(100 / 3)
    assert len(res["all-search-single-shot"]["trials"]) == 10
    assert summary_of(res, get_benchmark("sysu_mm01").protocols) == {"R1": res["all-search-single-shot"]["mean"]["R1"],
                                                           "mAP": res["all-search-single-shot"]["mean"]["mAP"]}


def test_sysu_uses_head_4():
    index, vectors = sysu_case()
    noise = {p: np.random.default_rng(i).normal(size=DIM) for i, p in enumerate(index["path"])}
    good = run("sysu_mm01", index, vectors, heads=[4], other=noise)["indoor-single-shot"]["trials"][0]
    bad = run("sysu_mm01", index, noise, heads=[4], other=vectors)["indoor-single-shot"]["trials"][0]
    assert good["R1"] == pytest.approx(100 / 3)
    assert (bad["R1"], bad["mAP"]) != (good["R1"], good["mAP"])


def sysu_multi_shot_case():
    """One IR query (person 1, camera 3); gallery: person 1 has 12 images on camera 1 (more
    than the 10 shots) at cos 0.89, person 2 three nearer images on camera 2 (cos 0.995) and
    two far ones on camera 4 (cos 0.45)."""
    rows = [("cam3/0001/0001.jpg", 1, 3, "ir", -1, "query")]
    vectors = {"cam3/0001/0001.jpg": e(0)}
    for k in range(12):
        rows.append((f"cam1/0001/{k:04d}.jpg", 1, 1, "rgb", -1, "gallery"))
        vectors[rows[-1][0]] = e(0, {1: 0.5})
    for k in range(3):
        rows.append((f"cam2/0002/{k:04d}.jpg", 2, 2, "rgb", -1, "gallery"))
        vectors[rows[-1][0]] = e(0, {2: 0.1})
    for k in range(2):
        rows.append((f"cam4/0002/{k:04d}.jpg", 2, 4, "rgb", -1, "gallery"))
        vectors[rows[-1][0]] = e(0, {3: 2.0})
    return index_frame(rows), vectors


def test_sysu_multi_shot_both_definitions():
    index, vectors = sysu_multi_shot_case()
    res = run("sysu_mm01", index, vectors)

    def ap(positives: int, impostors_before: int) -> float:  # every positive right after the impostors
        return 100 * sum(k / (k + impostors_before) for k in range(1, positives + 1)) / positives

    # The SYSU authors' multi-shot: 10 images per (person, camera), 10 seeded trials.
    # All search: 10 of person 1's 12 + 3 + 2 = 15 gallery images per trial; indoor
    # (cameras 1, 2): 10 + 3 = 13. The 10 positives rank 4..13 behind the 3 camera-2
    # impostors (multi-shot keeps camera 2 for camera-3 queries).
    for name, size in (("all-search-multi-shot-10x10", 15), ("indoor-multi-shot-10x10", 13)):
        trials = res[name]["trials"]
        assert [t["trial"] for t in trials] == list(range(10)) and [t["seed"] for t in trials] == list(range(10))
        assert [t["num_gallery"] for t in trials] == [size] * 10
        assert res[name]["mean"]["R1"] == 0.0 and res[name]["mean"]["R5"] == 100.0
        assert res[name]["mean"]["mAP"] == pytest.approx(ap(10, 3))
    # Different trials draw different subsets of person 1's camera-1 images.
    spec = get_benchmark("sysu_mm01").protocols
    draws = {tuple(trial_sets(index, spec.get("all-search-multi-shot-10x10"), t)[1]["path"]) for t in range(10)}
    assert len(draws) > 1
    # The reference's multi-shot: every gallery image of the cameras, one evaluation.
    for name, size in (("all-search-multi-shot-all", 17), ("indoor-multi-shot-all", 15)):
        trials = res[name]["trials"]
        assert len(trials) == 1 and "seed" not in trials[0] and trials[0]["num_gallery"] == size
        assert res[name]["mean"]["R1"] == 0.0 and res[name]["mean"]["R5"] == 100.0
        assert res[name]["mean"]["mAP"] == pytest.approx(ap(12, 3))  # 12 positives at ranks 4..15
    # By hand: (1/4 + 2/5 + ... + 12/15) / 12 = 62.8776 %; (1/4 + ... + 10/13) / 10 = 59.5960 %.
    assert ap(12, 3) == pytest.approx(62.8776, abs=1e-4) and ap(10, 3) == pytest.approx(59.5960, abs=1e-4)
    _, gallery, info = trial_sets(index, spec.get("all-search-multi-shot-all"), 0)
    assert info == {"trial": 0} and gallery["path"].tolist() == sorted(index["path"][1:])


# ---- seeded trials -----------------------------------------------------------------------------
def gallery_pool(n_persons=6, cameras=(1, 2, 4, 5), per=7):
    rows = []
    for p in range(1, n_persons + 1):
        for c in cameras:
            for k in range(per):
                rows.append((f"cam{c}/{p:04d}/{k:04d}.jpg", p, c, "rgb", -1, "gallery"))
    return index_frame(rows)


def test_draws_are_reproducible_and_independent_of_listing_order():
    pool = gallery_pool()
    first = draw_per_person_camera(pool, 1, seed=3)["path"].tolist()
    assert first == draw_per_person_camera(pool, 1, seed=3)["path"].tolist()
    shuffled = pool.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert draw_per_person_camera(shuffled, 1, seed=3)["path"].tolist() == first
    drawn = draw_per_person_camera(pool, 1, seed=3)
    assert len(drawn) == 6 * 4 and not drawn.duplicated(["person", "camera"]).any()
    assert first != draw_per_person_camera(pool, 1, seed=4)["path"].tolist()
    ten = draw_per_person_camera(pool, 10, seed=0)
    assert len(ten) == len(pool)  # groups smaller than the shot count are kept whole
    five = draw_per_person_camera(pool, 5, seed=0)
    assert five.groupby(["person", "camera"]).size().eq(5).all()


def test_trial_t_is_seeded_with_t_in_every_sampled_protocol():
    pool = gallery_pool()
    query = index_frame([("cam3/0001/q.jpg", 1, 3, "ir", -1, "query")])
    index = pd.concat([pool, query], ignore_index=True)
    spec = get_benchmark("sysu_mm01").protocols
    for name in ("all-search-single-shot", "all-search-multi-shot-10x10", "indoor-single-shot",
                 "indoor-multi-shot-10x10"):
        protocol = spec.get(name)
        for trial in (0, 7):
            _, gallery, info = trial_sets(index, protocol, trial)
            assert info["seed"] == trial
            expected = draw_per_person_camera(select(index, protocol.gallery), protocol.gallery_shots, seed=trial)
            assert gallery["path"].tolist() == expected["path"].tolist()
    _, indoor, _ = trial_sets(index, spec.get("indoor-single-shot"), 0)
    assert set(indoor["camera"]) == {1, 2}
    a = trial_sets(index, spec.get("indoor-single-shot"), 1)[1]["path"].tolist()
    b = trial_sets(index.iloc[::-1], spec.get("indoor-single-shot"), 1)[1]["path"].tolist()
    assert a == b


# ---- RegDB / LLCM directions --------------------------------------------------------------------
def regdb_case():
    rows, vectors = [], {}
    odd, even = "1;3;5;7;9", "2;4;6;8;10"
    for person, test_in in ((1, odd), (2, even), (3, f"{odd};{even}")):
        for folder, mod, cam in (("Visible", "rgb", 1), ("Thermal", "ir", 2)):
            path = f"{folder}/{person}/x_{mod[0]}_00001_{person}.bmp"
            rows.append((path, person, cam, mod, -1, "test", "", test_in))
            vectors[path] = e(person)
    return index_frame(rows, ("train_trials", "test_trials")), vectors


def test_regdb_directions_and_split_files():
    index, vectors = regdb_case()
    spec = get_benchmark("regdb").protocols
    q, g, info = trial_sets(index, spec.get("IR->RGB"), 0)
    assert info["split_files"] == 1
    assert set(q["modality"]) == {"ir"} and set(g["modality"]) == {"rgb"}
    assert set(q["person"]) == set(g["person"]) == {1, 3}
    q, g, _ = trial_sets(index, spec.get("RGB->IR"), 1)
    assert set(q["modality"]) == {"rgb"} and set(g["modality"]) == {"ir"} and set(q["person"]) == {2, 3}
    res = run("regdb", index, vectors)
    assert len(res["IR->RGB"]["trials"]) == 10 and res["IR->RGB"]["trials"][0]["R1"] == 100.0
    assert res["both-directions"]["members"] == ["IR->RGB", "RGB->IR"]
    assert [t["split_files"] for t in res["RGB->IR"]["trials"]] == list(range(1, 11))
    assert res["both-directions"]["mean"]["mAP"] == pytest.approx(
        (res["IR->RGB"]["mean"]["mAP"] + res["RGB->IR"]["mean"]["mAP"]) / 2)


def test_llcm_directions_draw_one_gallery_image_per_person_camera():
    rows = []
    for person in (1, 2):
        for cam in (1, 2):
            for k in range(3):
                rows.append((f"test_vis/cam{cam}/{person:04d}/{k}_vis.jpg", person, cam, "rgb", -1, "test"))
                rows.append((f"test_nir/cam{cam}/{person:04d}/{k}_nir.jpg", person, cam + 9, "ir", -1, "test"))
    index = index_frame(rows)
    spec = get_benchmark("llcm").protocols
    q, g, info = trial_sets(index, spec.get("IR->RGB"), 2)
    assert set(q["modality"]) == {"ir"} and len(q) == 12
    assert set(g["modality"]) == {"rgb"} and len(g) == 4 and info["seed"] == 2
    q, g, _ = trial_sets(index, spec.get("RGB->IR"), 2)
    assert set(q["modality"]) == {"rgb"} and set(g["camera"]) == {10, 11}
    vectors = {p: e(int(p.split("/")[2])) for p in index["path"]}
    res = run("llcm", index, vectors)
    # Same physical camera, other modality: a positive (IR cameras are shifted by 9).
    assert res["IR->RGB"]["mean"]["R1"] == 100.0 and res["IR->RGB"]["mean"]["num_valid"] == 12


# ---- PRCC ------------------------------------------------------------------------------------
def test_prcc_changed_and_same_clothes():
    index = index_frame([
        ("rgb/test/A/001/a.jpg", 1, 1, "rgb", 1, "gallery"),
        ("rgb/test/A/002/a.jpg", 2, 1, "rgb", 1, "gallery"),
        ("rgb/test/B/001/b.jpg", 1, 2, "rgb", 1, "query"),
        ("rgb/test/C/001/c.jpg", 1, 3, "rgb", 2, "query"),
    ])
    spec = get_benchmark("prcc").protocols
    assert trial_sets(index, spec.get("cc"), 0)[0]["path"].tolist() == ["rgb/test/C/001/c.jpg"]
    assert trial_sets(index, spec.get("sc"), 0)[0]["path"].tolist() == ["rgb/test/B/001/b.jpg"]
    head1 = {"rgb/test/A/001/a.jpg": e(1), "rgb/test/A/002/a.jpg": e(2), "rgb/test/B/001/b.jpg": e(2),
             "rgb/test/C/001/c.jpg": e(1)}
    head0 = {"rgb/test/A/001/a.jpg": e(1), "rgb/test/A/002/a.jpg": e(2), "rgb/test/B/001/b.jpg": e(1),
             "rgb/test/C/001/c.jpg": e(2)}
    res = run("prcc", index, head1, heads=[1], other=head0)
    # cc reads head 1 (C query nearest its A image), sc reads head 0 (B query nearest its A image).
    assert res["cc"]["mean"]["R1"] == 100.0 and res["sc"]["mean"]["R1"] == 100.0
    swapped = run("prcc", index, head0, heads=[1], other=head1)
    assert swapped["cc"]["mean"]["R1"] == 0.0 and swapped["sc"]["mean"]["R1"] == 0.0


# ---- LTCC ------------------------------------------------------------------------------------
def ltcc_case():
    index = index_frame([
        ("query/001_1_c1_0001.png", 1, 1, "rgb", 1, "query", 1),
        ("query/002_1_c1_0002.png", 2, 1, "rgb", 1, "query", 0),
        ("test/001_1_c2_0003.png", 1, 2, "rgb", 1, "gallery", 1),   # same clothes, other camera
        ("test/001_2_c3_0004.png", 1, 3, "rgb", 2, "gallery", 1),   # changed clothes
        ("test/002_1_c2_0005.png", 2, 2, "rgb", 1, "gallery", 0),   # a non-changing person
    ], ("clothes_changing",))
    vectors = {"query/001_1_c1_0001.png": e(0), "test/002_1_c2_0005.png": e(0),
               "test/001_1_c2_0003.png": e(0, {1: 0.3}), "test/001_2_c3_0004.png": e(0, {2: 0.6}),
               "query/002_1_c1_0002.png": e(4)}
    return index, vectors


def test_ltcc_general_and_both_clothes_changing_settings():
    index, vectors = ltcc_case()
    spec = get_benchmark("ltcc").protocols
    q, g, _ = trial_sets(index, spec.get("cc"), 0)
    assert set(q["person"]) == {1} and set(g["person"]) == {1}
    q, g, _ = trial_sets(index, spec.get("cc-query-only"), 0)
    assert set(q["person"]) == {1} and set(g["person"]) == {1, 2}
    res = run("ltcc", index, vectors)
    general = res["general"]["mean"]
    assert general["num_valid"] == 2          # every query, no clothes rule
    assert res["cc"]["mean"]["R1"] == 100.0   # impostor of a non-changing person not in the gallery
    assert res["cc-query-only"]["mean"]["R1"] == 0.0  # ... but here it is, and ranks first
    # Changed clothes: the same-clothes image is removed, the changed one is at rank 2 of 2.
    assert res["cc-query-only"]["mean"]["mAP"] == pytest.approx(50.0)
    assert res["cc"]["mean"]["mAP"] == pytest.approx(100.0)


# ---- DeepChange -------------------------------------------------------------------------------
def test_deepchange_keeps_same_camera_positives_and_uses_timestamps():
    # clothes = MMDDhhmmss (the reference's, year dropped); clothes_with_year = YYYYMMDDhhmmss.
    rows = [("test-set-query/q.jpg", 1, 5, "rgb", 720141623, "query", 20190720141623, 20190720),
            ("test-set-gallery/same_moment.jpg", 1, 6, "rgb", 720141623, "gallery", 20190720141623, 20190720),
            ("test-set-gallery/same_cam_later.jpg", 1, 5, "rgb", 720170000, "gallery", 20190720170000, 20190720),
            ("test-set-gallery/next_day.jpg", 1, 7, "rgb", 721090000, "gallery", 20190721090000, 20190721),
            ("test-set-gallery/other.jpg", 2, 5, "rgb", 720141623, "gallery", 20190720141623, 20190720)]
    index = index_frame(rows, ("clothes_with_year", "date"))
    vectors = {"test-set-query/q.jpg": e(0), "test-set-gallery/same_moment.jpg": e(0),
               "test-set-gallery/same_cam_later.jpg": e(0, {1: 0.2}),
               "test-set-gallery/other.jpg": e(0, {1: 0.5}), "test-set-gallery/next_day.jpg": e(0, {1: 0.9})}
    res = run("deepchange", index, vectors)
    # cc: the same-moment image is removed; the same-camera image later that day is the
    # top positive (no camera rule) -> R1 100, positives at ranks 1 and 3.
    for name in ("cc", "cc-year-aware"):  # no two captures here differ by the year only
        assert res[name]["mean"]["R1"] == 100.0
        assert res[name]["mean"]["mAP"] == pytest.approx((1 + 2 / 3) / 2 * 100)
    # cc-date: every same-day image is removed; the next-day one ranks after the impostor.
    assert res["cc-date"]["mean"]["R1"] == 0.0 and res["cc-date"]["mean"]["mAP"] == pytest.approx(50.0)


def test_deepchange_clothes_proxy_ignores_the_year_by_default():
    # A query of 2019-07-20 14:16:23; the person's capture of 2020-07-20 14:16:23 (same
    # month-day-time, another year) is nearest, then another person, then the person's
    # capture of 2019-08-01.
    rows = [("test-set-query/q.jpg", 1, 5, "rgb", 720141623, "query", 20190720141623, 20190720),
            ("test-set-gallery/year_later.jpg", 1, 6, "rgb", 720141623, "gallery", 20200720141623, 20200720),
            ("test-set-gallery/other.jpg", 2, 5, "rgb", 801100000, "gallery", 20190801100000, 20190801),
            ("test-set-gallery/august.jpg", 1, 7, "rgb", 801100000, "gallery", 20190801100000, 20190801)]
    index = index_frame(rows, ("clothes_with_year", "date"))
    vectors = {"test-set-query/q.jpg": e(0), "test-set-gallery/year_later.jpg": e(0, {1: 0.1}),
               "test-set-gallery/other.jpg": e(0, {1: 0.5}), "test-set-gallery/august.jpg": e(0, {1: 0.9})}
    res = run("deepchange", index, vectors)
    # cc (main, the reference's): the year-later capture has the query's clothes id and is
    # removed; the August positive ranks 2nd behind the impostor.
    assert (res["cc"]["mean"]["R1"], res["cc"]["mean"]["mAP"]) == (0.0, pytest.approx(50.0))
    assert res["cc"]["clothes_column"] == "clothes"
    # cc-year-aware: it is another clothes id, a positive at rank 1; August at rank 3.
    year_aware = res["cc-year-aware"]
    assert year_aware["clothes_column"] == "clothes_with_year"
    assert (year_aware["mean"]["R1"], year_aware["mean"]["mAP"]) == (100.0, pytest.approx((1 + 2 / 3) / 2 * 100))
    # cc-date: another date too.
    assert res["cc-date"]["mean"]["mAP"] == pytest.approx(year_aware["mean"]["mAP"])
    assert summary_of(res, get_benchmark("deepchange").protocols) == {"R1": 0.0, "mAP": pytest.approx(50.0)}


def test_market_distractors_are_gallery_negatives_and_same_camera_is_removed():
    index = index_frame([
        ("query/0002_c1s1_000001_00.jpg", 2, 1, "rgb", -1, "query"),
        ("bounding_box_test/0000_c2s1_000001_01.jpg", 0, 2, "rgb", -1, "gallery"),
        ("bounding_box_test/0002_c1s1_000002_01.jpg", 2, 1, "rgb", -1, "gallery"),
        ("bounding_box_test/0002_c3s1_000003_01.jpg", 2, 3, "rgb", -1, "gallery"),
        ("bounding_box_train/0005_c3s1_000003_01.jpg", 5, 3, "rgb", -1, "train"),
    ])
    vectors = {p: e(0, {1: 0.1 * i}) for i, p in enumerate(index["path"])}
    vectors["bounding_box_test/0002_c1s1_000002_01.jpg"] = e(0)  # same camera: removed
    spec = get_benchmark("market1501").protocols
    assert "bounding_box_train/0005_c3s1_000003_01.jpg" not in set(candidate_rows(index, spec)["path"])
    res = run("market1501", index, vectors)["standard"]["trials"][0]
    # Ranking: same-camera positive (removed), distractor 0, then the positive -> R1 0, AP 1/2.
    assert (res["R1"], res["mAP"], res["num_gallery"], res["num_valid"]) == (0.0, 50.0, 3, 1)


# ---- the generic evaluator ------------------------------------------------------------------------
class ColourModel(torch.nn.Module):
    """A stand-in model: (B, 3, H, W) -> (B, 6, 12) features from coarse colour statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, (2, 2)).flatten(1)
        return pooled[:, None, :].repeat(1, 6, 1)


def test_evaluator_runs_every_protocol_from_the_index_and_images(tmp_path):
    import json

    from atreid.data.synthetic.miniatures import generate_miniature
    from atreid.eval.runner import evaluate_loaded
    from atreid.io import atomic_write_csv

    data = tmp_path / "data"
    generate_miniature(get_benchmark("regdb"), data / "regdb" / "images", seed=0, image_height=64, image_width=32)
    index, _, _ = get_benchmark("regdb").build_index(data / "regdb" / "images")
    atomic_write_csv(data / "regdb" / "index.csv", index)
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"weights")
    settings = {"batch_size": 32, "flip": False, "chunk_size": 64}
    out = evaluate_loaded("regdb", ColourModel(), model_file, data, settings, [64, 32], "cpu", tmp_path / "cache")
    assert set(out) >= {"protocols", "summary", "synthetic", "num_images", "main_protocol"}
    assert out["synthetic"] is True and out["main_protocol"] == "both-directions"
    assert out["summary"] == {"R1": out["protocols"]["both-directions"]["mean"]["R1"],
                              "mAP": out["protocols"]["both-directions"]["mean"]["mAP"]}
    assert len(out["protocols"]["IR->RGB"]["trials"]) == 10
    assert out["num_images"] == len(index[index["split"] == "test"])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # one extraction for every protocol
    from atreid.eval.outcomes import OUTCOMES_KEY, check_summary

    # The per-query outcomes (written to their own file) give the same summary; the rest is JSON-able.
    assert check_summary(out, out[OUTCOMES_KEY]) == []
    json.dumps({key: value for key, value in out.items() if key != OUTCOMES_KEY})
    assert {spec.scoring for spec in PROTOCOLS.values()} == {"trials", "scenarios"}  # one evaluator for all


def test_a_trial_without_valid_query_reports_none_not_zero():
    index = index_frame([("query/001_1_c1_0001.png", 1, 1, "rgb", 1, "query", 1),
                         ("test/001_1_c2_0003.png", 1, 2, "rgb", 1, "gallery", 1)], ("clothes_changing",))
    res = run("ltcc", index, {p: e(0) for p in index["path"]}, protocols=["cc"])
    assert res["cc"]["mean"]["R1"] is None and res["cc"]["trials"][0]["num_valid"] == 0
