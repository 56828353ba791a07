"""AT-USTC protocols as data: list membership, rules, heads, Any-Time and the mixed test."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from atreid.constants import IR, RGB, SCENARIOS
from atreid.errors import AtreidError
from atreid.data.benchmarks.atustc import MIXED_CASES, MIXED_GROUPS, PROTOCOLS, SCENARIO_PROTOCOLS
from atreid.data.protocols import Protocol, RemovalRule
from atreid.eval.metrics import Labels, RetrievalResult, evaluate_retrieval
from atreid.eval.oracle import oracle_distance, oracle_evaluate, removal_mask
from atreid.eval.scoring import evaluate_scenarios, labels_of, result_to_dict, weighted_average


def tiny_index(seed: int = 0, persons: int = 4, images: int = 3) -> pd.DataFrame:
    """Every person has ``images`` images per flag 2-9; DT flags RGB cameras, NT flags IR."""
    rng = np.random.default_rng(seed)
    rows = []
    for person in range(1, persons + 1):
        for flag in range(2, 10):
            rgb = flag in (2, 3, 6, 7)
            for _ in range(images):
                camera = int(rng.integers(1, 9)) + (0 if rgb else 8)
                rows.append((person, camera, "rgb" if rgb else "ir", int(rng.integers(1, 3)), flag))
    return pd.DataFrame(rows, columns=["person", "camera", "modality", "clothes", "flag"])


def identity_features(index: pd.DataFrame, seed: int = 0, noise: float = 0.6) -> torch.Tensor:
    """(N, 6, D) features clustered by person, different noise per head."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(int(index["person"].max()) + 1, 32, generator=gen)
    person = torch.as_tensor(index["person"].to_numpy().copy())
    heads = [centres[person] + noise * torch.randn(len(index), 32, generator=gen) for _ in SCENARIOS]
    return torch.stack(heads, dim=1).double()


def test_scenarios_are_in_head_order_with_their_rules() -> None:
    assert [p.name for p in SCENARIO_PROTOCOLS] == list(SCENARIOS)
    assert [p.head for p in SCENARIO_PROTOCOLS] == [0, 1, 2, 3, 4, 5]
    by_name = {p.name: p for p in SCENARIO_PROTOCOLS}
    for name, p in by_name.items():
        term, = {"ST": [((2, 4), (6, 8), "same")], "LT": [((3, 5), (7, 9), "changed")]}[name[3:]]
        assert (p.query["flag"], p.gallery["flag"], p.rule.clothes) == term
        assert p.rule.same_camera and p.rule.same_person_modality == "any" and not p.rule.excluded_camera_pairs
        expected = {"DT": (("rgb",), ("rgb",), "any"), "NT": (("ir",), ("ir",), "any"),
                    "AD": (None, None, "cross")}[name[:2]]
        assert (p.query.get("modality"), p.gallery.get("modality"), p.rule.modality) == expected


def test_scenario_membership() -> None:
    index = tiny_index()
    flag, modality = index["flag"].to_numpy(), index["modality"].to_numpy()
    for p in SCENARIO_PROTOCOLS:
        q_rows, g_rows = p.rows(index)
        lists = (2, 4) if p.name.endswith("ST") else (3, 5)
        expect_q = np.isin(flag, lists)
        expect_g = np.isin(flag, (6, 8) if p.name.endswith("ST") else (7, 9))
        if p.name.startswith("DT"):
            expect_q &= modality == "rgb"
            expect_g &= modality == "rgb"
        elif p.name.startswith("NT"):
            expect_q &= modality == "ir"
            expect_g &= modality == "ir"
        np.testing.assert_array_equal(q_rows, np.flatnonzero(expect_q))
        np.testing.assert_array_equal(g_rows, np.flatnonzero(expect_g))


def test_mixed_cases_are_head_5_with_same_person_rules() -> None:
    assert [c.name for c in MIXED_CASES] == list(SCENARIOS)
    lists = {"DT-ST": ((2,), (6, 8)), "DT-LT": ((3,), (7, 9)), "NT-ST": ((4,), (6, 8)), "NT-LT": ((5,), (7, 9)),
             "AD-ST": ((2, 4), (6, 8)), "AD-LT": ((3, 5), (7, 9))}
    for case in MIXED_CASES:
        assert case.head == 5
        assert (case.query["flag"], case.gallery["flag"]) == lists[case.name]
        assert "modality" not in case.query and "modality" not in case.gallery
        clothes = "same" if case.name.endswith("ST") else "changed"
        if case.name.startswith("AD"):  # the person's images of the query's own modality
            expected = RemovalRule(same_camera=True, modality="any", same_person_modality="cross", clothes=clothes)
        else:  # a FIXED modality of the person's images: DT removes IR, NT removes RGB
            expected = RemovalRule(same_camera=True, modality="any", same_person_modality="any", clothes=clothes,
                                   same_person_removed_modality=IR if case.name.startswith("DT") else RGB)
        assert case.rule == expected
    assert MIXED_GROUPS == {"Daytime": ("DT-ST", "DT-LT"), "Nighttime": ("NT-ST", "NT-LT"),
                            "All-day": ("AD-ST", "AD-LT"), "Short-term": ("DT-ST", "NT-ST", "AD-ST"),
                            "Long-term": ("DT-LT", "NT-LT", "AD-LT"), "Anytime": SCENARIOS}


def test_evaluate_atustc_matches_oracle_in_percent() -> None:
    index = tiny_index(seed=1, persons=5)
    features = identity_features(index, seed=1)
    out = evaluate_scenarios(features, index, PROTOCOLS, chunk_size=7)
    json.dumps(out, allow_nan=False)  # JSON-able as is
    labels = labels_of(index)
    for p in list(SCENARIO_PROTOCOLS) + list(MIXED_CASES):
        q_rows, g_rows = p.rows(index)
        head = features[:, p.head].numpy()
        ref = oracle_evaluate(oracle_distance(head[q_rows], head[g_rows]), labels.take(q_rows), labels.take(g_rows),
                              p.rule)
        got = out[p.name] if p in SCENARIO_PROTOCOLS else out["mixed"]["cases"][p.name]
        assert (got["num_valid"], got["num_queries"]) == (ref.num_valid, ref.num_queries)
        assert got["num_valid"] > 0
        np.testing.assert_allclose(got["cmc"], 100 * ref.cmc, atol=1e-4)
        assert len(got["cmc"]) == 20
        assert (got["R1"], got["R5"], got["R10"]) == (got["cmc"][0], got["cmc"][4], got["cmc"][9])
        assert got["mAP"] == pytest.approx(100 * ref.mAP, abs=1e-4)
        assert got["mINP"] == pytest.approx(100 * ref.mINP, abs=1e-4)
    # Any-Time: plain mean of the six scenarios.
    assert out["Any-Time"]["R1"] == pytest.approx(np.mean([out[s]["R1"] for s in SCENARIOS]))
    assert out["Any-Time"]["mAP"] == pytest.approx(np.mean([out[s]["mAP"] for s in SCENARIOS]))
    # Mixed groups: averages weighted by valid-query count.
    cases = out["mixed"]["cases"]
    for group, names in MIXED_GROUPS.items():
        got = out["mixed"]["groups"][group]
        weights = np.asarray([cases[n]["num_valid"] for n in names], dtype=float)
        assert got["num_valid"] == weights.sum()
        for metric in ("mAP", "mINP", "R1"):
            expected = np.dot(weights, [cases[n][metric] for n in names]) / weights.sum()
            assert got[metric] == pytest.approx(expected)


def test_each_scenario_uses_its_own_head() -> None:
    index = tiny_index(seed=2, persons=6)
    features = identity_features(index, seed=2, noise=0.3)
    clean = evaluate_scenarios(features, index, PROTOCOLS)
    for head in range(6):
        broken = features.clone()
        # Shuffle this head's features across images: its rankings become arbitrary.
        broken[:, head] = broken[torch.randperm(len(index), generator=torch.Generator().manual_seed(head)), head]
        out = evaluate_scenarios(broken, index, PROTOCOLS)
        changed = {s for s in SCENARIOS if out[s]["mAP"] != clean[s]["mAP"]}
        assert changed == {SCENARIOS[head]}
        mixed_changed = any(out["mixed"]["cases"][s]["mAP"] != clean["mixed"]["cases"][s]["mAP"] for s in SCENARIOS)
        assert mixed_changed == (head == 5)


def test_mixed_test_keeps_other_persons_of_any_modality() -> None:
    # One RGB DT-ST query (person 1); gallery: its RGB match, its IR image, person 2's IR image.
    index = pd.DataFrame(
        [(1, 1, "rgb", 1, 2), (1, 2, "rgb", 1, 6), (1, 9, "ir", 1, 8), (2, 10, "ir", 1, 8)],
        columns=["person", "camera", "modality", "clothes", "flag"])
    query, match, own_ir, other_ir = np.eye(4)[[0, 1, 2, 3]] * 1.0
    head5 = np.stack([query, query * 0.5 + match, query + own_ir * 0.1, query + other_ir * 0.01])
    features = torch.from_numpy(np.repeat(head5[:, None], 6, axis=1))
    out = evaluate_scenarios(features, index, PROTOCOLS)
    # Scenario DT-ST: RGB gallery only -> the match is first.
    assert out["DT-ST"]["R1"] == 100.0 and out["DT-ST"]["mAP"] == 100.0
    # Mixed DT-ST: own IR image removed, person 2's IR image stays and ranks first.
    case = out["mixed"]["cases"]["DT-ST"]
    assert case["R1"] == 0.0 and case["mAP"] == pytest.approx(50.0) and case["R5"] == 100.0
    # Mixed AD-ST keeps only the person's other-modality (IR) image as a positive.
    ad = out["mixed"]["cases"]["AD-ST"]
    assert ad["mAP"] == pytest.approx(50.0)  # rank 2 behind person 2's IR image (cos 0.99995 vs 0.995)
    assert (ad["num_valid"], ad["num_queries"]) == (1, 1)
    # No query in the LT lists: metrics are null, counts zero, Any-Time undefined.
    assert out["DT-LT"]["mAP"] is None and out["DT-LT"]["num_queries"] == 0
    assert out["Any-Time"] == {"R1": None, "mAP": None, "chance": {"R1": None, "mAP": None}}
    json.dumps(out, allow_nan=False)


def mixed_flag_index() -> pd.DataFrame:
    """Hand-built: a DT-flagged query that is IR and an NT-flagged query that is RGB.

    Rows (person, camera, modality, clothes, flag):
      0 person 1, IR camera 9, DT-ST query (flag 2)
      1 person 1, RGB camera 1, gallery flag 6     -> its positive under the documented rule
      2 person 1, IR camera 10, gallery flag 8     -> its positive under "the query's modality"
      3 person 2, IR camera 11, gallery flag 8     (another person)
      4 person 3, RGB camera 2, NT-ST query (flag 4)
      5 person 3, RGB camera 3, gallery flag 6     -> its positive under "the query's modality"
      6 person 3, IR camera 12, gallery flag 8     -> its positive under the documented rule
      7 person 4, IR camera 13, gallery flag 8     (another person)
    """
    return pd.DataFrame(
        [(1, 9, "ir", 1, 2), (1, 1, "rgb", 1, 6), (1, 10, "ir", 1, 8), (2, 11, "ir", 1, 8),
         (3, 2, "rgb", 1, 4), (3, 3, "rgb", 1, 6), (3, 12, "ir", 1, 8), (4, 13, "ir", 1, 8)],
        columns=["person", "camera", "modality", "clothes", "flag"])


def mixed_flag_features() -> torch.Tensor:
    """Head features: for each query, the person's same-modality image is nearest (cos 0.995),
    then the other person's (cos 0.958), then the person's other-modality image (cos 0.857);
    the two query groups are orthogonal (cos 0)."""
    eye = np.eye(8)
    vectors = np.stack([eye[0], eye[0] + 0.6 * eye[3], eye[0] + 0.1 * eye[1], eye[0] + 0.3 * eye[2],
                        eye[4], eye[4] + 0.1 * eye[5], eye[4] + 0.6 * eye[7], eye[4] + 0.3 * eye[6]])
    return torch.from_numpy(np.repeat(vectors[:, None], 6, axis=1))


def test_mixed_dt_nt_remove_a_fixed_modality_whatever_the_query_modality() -> None:
    index, features = mixed_flag_index(), mixed_flag_features()
    out = evaluate_scenarios(features, index, PROTOCOLS)
    cases = out["mixed"]["cases"]
    # DT-ST: the IR query (person 1) loses the person's IR image (row 2), keeps its RGB image
    # (row 1) as the only positive, ranked 2nd behind person 2 (row 3): R1 0, AP 1/2.
    dt = cases["DT-ST"]
    assert (dt["num_valid"], dt["num_queries"]) == (1, 1)
    assert (dt["R1"], dt["R5"], dt["mAP"], dt["mINP"]) == (0.0, 100.0, pytest.approx(50.0), pytest.approx(50.0))
    # NT-ST: the RGB query (person 3) loses the person's RGB image (row 5); row 6 ranks 2nd.
    nt = cases["NT-ST"]
    assert (nt["num_valid"], nt["num_queries"]) == (1, 1)
    assert (nt["R1"], nt["R5"], nt["mAP"]) == (0.0, 100.0, pytest.approx(50.0))
    # AD-ST (both queries): the person's images of the query's own modality are removed,
    # the same rows as above here -> each query's positive ranks 2nd.
    ad = cases["AD-ST"]
    assert (ad["num_valid"], ad["R1"], ad["mAP"]) == (2, 0.0, pytest.approx(50.0))
    assert out["mixed"]["groups"]["Daytime"]["R1"] == 0.0
    assert out["mixed"]["groups"]["Short-term"]["num_valid"] == 4
    # The oracle applies the same rule; the old rule ("remove the person's images of the
    # modality other than the query's") would keep the nearest same-modality image: R1 100.
    labels = labels_of(index)
    for name in ("DT-ST", "NT-ST"):
        case, = [c for c in MIXED_CASES if c.name == name]
        q_rows, g_rows = case.rows(index)
        head = features[:, case.head].numpy()
        dist = oracle_distance(head[q_rows], head[g_rows])
        ref = oracle_evaluate(dist, labels.take(q_rows), labels.take(g_rows), case.rule)
        assert (100 * ref.cmc[0], 100 * ref.mAP) == (0.0, pytest.approx(50.0))
        old = oracle_evaluate(dist, labels.take(q_rows), labels.take(g_rows),
                              RemovalRule(same_person_modality="same", clothes="same"))
        assert (100 * old.cmc[0], 100 * old.mAP) == (100.0, 100.0)


def test_mixed_cases_match_oracle_with_queries_of_either_modality() -> None:
    rng = np.random.default_rng(1005)  # not tiny_index's seed: its stream would correlate with the clothes
    index = tiny_index(seed=5, persons=6, images=4)
    ir = rng.random(len(index)) < 0.5  # any flag, any modality: the rule must not depend on the flag's usual one
    index["modality"] = np.where(ir, "ir", "rgb")
    index["camera"] = np.where(ir, rng.integers(9, 17, len(index)), rng.integers(1, 9, len(index)))
    features = identity_features(index, seed=5)
    out = evaluate_scenarios(features, index, PROTOCOLS, chunk_size=5)
    labels = labels_of(index)
    differs = 0
    for case in MIXED_CASES:
        q_rows, g_rows = case.rows(index)
        head = features[:, case.head].numpy()
        dist = oracle_distance(head[q_rows], head[g_rows])
        ref = oracle_evaluate(dist, labels.take(q_rows), labels.take(g_rows), case.rule)
        got = out["mixed"]["cases"][case.name]
        assert (got["num_valid"], got["num_queries"]) == (ref.num_valid, ref.num_queries) and ref.num_valid > 0
        np.testing.assert_allclose(got["cmc"], 100 * ref.cmc, atol=1e-4)
        assert got["mAP"] == pytest.approx(100 * ref.mAP, abs=1e-4)
        assert got["mINP"] == pytest.approx(100 * ref.mINP, abs=1e-4)
        if case.rule.same_person_removed_modality is not None:
            # The data exercise the difference: some queries of every DT/NT case see other
            # entries than under "remove the person's images of the other modality".
            q, g = labels.take(q_rows), labels.take(g_rows)
            old = RemovalRule(same_person_modality="same", clothes=case.rule.clothes)
            differs += any((removal_mask(i, q, g, case.rule) != removal_mask(i, q, g, old)).any()
                           for i in range(len(q)))
    assert differs == 4


@pytest.mark.parametrize("seed", range(6))
def test_fixed_same_person_modality_rule_fast_path_matches_oracle(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    q = Labels(rng.integers(0, 5, 40), rng.integers(1, 5, 40), rng.integers(0, 2, 40), rng.integers(0, 3, 40))
    g = Labels(rng.integers(0, 5, 90), rng.integers(1, 5, 90), rng.integers(0, 2, 90), rng.integers(0, 3, 90))
    # Few distinct unit vectors (four entries 0.5 of 16: dot products exact in any order),
    # so exact distance ties are frequent and must be resolved by gallery index alike.
    pool = np.zeros((6, 16))
    for row in pool:
        row[rng.choice(16, 4, replace=False)] = 0.5
    q_feat, g_feat = pool[rng.integers(0, 6, 40)], pool[rng.integers(0, 6, 90)]
    for removed in (RGB, IR):
        # (all-person modality rule, same-person modality rule): every combination that can
        # leave a positive ("same" with "cross" leaves none).
        modality, same_person = (("any", "any"), ("any", "cross"), ("cross", "any"), ("cross", "cross"),
                                 ("same", "any"), ("same", "same"))[seed]
        rule = RemovalRule(same_camera=bool(seed % 2), modality=modality, same_person_modality=same_person,
                           clothes=("any", "same", "changed")[seed % 3], same_person_removed_modality=removed)
        got = evaluate_retrieval(torch.from_numpy(q_feat), torch.from_numpy(g_feat), q, g, rule, chunk_size=7)
        ref = oracle_evaluate(oracle_distance(q_feat, g_feat), q, g, rule)
        assert (got.num_valid, got.num_queries) == (ref.num_valid, ref.num_queries) and ref.num_valid > 0
        np.testing.assert_allclose(got.cmc, ref.cmc, atol=1e-9)
        assert got.mAP == pytest.approx(ref.mAP, abs=1e-9) and got.mINP == pytest.approx(ref.mINP, abs=1e-9)
        assert got.chance_mAP == pytest.approx(ref.chance_mAP, abs=1e-9)


def test_fixed_same_person_modality_must_be_a_modality_code() -> None:
    assert RemovalRule(same_person_removed_modality=np.int64(1)).same_person_removed_modality == IR
    for bad in (2, -1, "ir", True, 0.0):
        with pytest.raises(ValueError, match="same_person_removed_modality"):
            RemovalRule(same_person_removed_modality=bad)


def test_weighted_average_by_valid_count() -> None:
    a = RetrievalResult(np.array([0.5, 1.0]), 0.4, 0.2, num_valid=1, num_queries=2)
    b = RetrievalResult(np.array([1.0, 1.0]), 0.8, 0.6, num_valid=3, num_queries=3)
    empty = RetrievalResult(np.full(2, np.nan), math.nan, math.nan, num_valid=0, num_queries=4)
    avg = weighted_average([a, b, empty])
    np.testing.assert_allclose(avg.cmc, [(0.5 + 3) / 4, 1.0])
    assert avg.mAP == pytest.approx((0.4 + 3 * 0.8) / 4)
    assert avg.mINP == pytest.approx((0.2 + 3 * 0.6) / 4)
    assert (avg.num_valid, avg.num_queries) == (4, 9)
    assert weighted_average([empty]).num_valid == 0
    as_dict = result_to_dict(avg)
    assert as_dict["R1"] == pytest.approx(87.5) and as_dict["mAP"] == pytest.approx(70.0)
    assert result_to_dict(empty)["mAP"] is None


def test_protocol_and_index_validation() -> None:
    with pytest.raises(ValueError, match="query modality"):
        Protocol("x", 0, {"flag": (2,), "modality": ("visible",)}, {"flag": (6,)})
    with pytest.raises(ValueError, match="head"):
        Protocol("x", 6, {"flag": (2,)}, {"flag": (6,)})
    index = tiny_index()
    with pytest.raises(AtreidError, match="clothes"):
        evaluate_scenarios(identity_features(index), index.drop(columns=["clothes"]), PROTOCOLS)
    bad = index.copy()
    bad.loc[0, "modality"] = "thermal"
    with pytest.raises(AtreidError, match="thermal"):
        evaluate_scenarios(identity_features(index), bad, PROTOCOLS)
