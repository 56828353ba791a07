"""AT-USTC protocols as data: list membership, rules, heads, Any-Time and the mixed test."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from atreid.constants import SCENARIOS
from atreid.errors import AtreidError
from atreid.eval.metrics import RemovalRule, RetrievalResult
from atreid.eval.oracle import oracle_distance, oracle_evaluate
from atreid.eval.protocols import (
    ATUSTC_SCENARIOS,
    MIXED_CASES,
    MIXED_GROUPS,
    Protocol,
    evaluate_atustc,
    index_labels,
    protocol_rows,
    result_to_dict,
    weighted_average,
)


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
    assert [p.name for p in ATUSTC_SCENARIOS] == list(SCENARIOS)
    assert [p.head for p in ATUSTC_SCENARIOS] == [0, 1, 2, 3, 4, 5]
    by_name = {p.name: p for p in ATUSTC_SCENARIOS}
    for name, p in by_name.items():
        term, = {"ST": [((2, 4), (6, 8), "same")], "LT": [((3, 5), (7, 9), "changed")]}[name[3:]]
        assert (p.query_flags, p.gallery_flags, p.rule.clothes) == term
        assert p.rule.same_camera and p.rule.same_person_modality == "any" and not p.rule.excluded_camera_pairs
        expected = {"DT": ("rgb", "rgb", "any"), "NT": ("ir", "ir", "any"), "AD": (None, None, "cross")}[name[:2]]
        assert (p.query_modality, p.gallery_modality, p.rule.modality) == expected


def test_scenario_membership() -> None:
    index = tiny_index()
    flag, modality = index["flag"].to_numpy(), index["modality"].to_numpy()
    for p in ATUSTC_SCENARIOS:
        q_rows, g_rows = protocol_rows(index, p)
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
        assert (case.query_flags, case.gallery_flags) == lists[case.name]
        assert case.query_modality is None and case.gallery_modality is None
        assert case.rule == RemovalRule(same_camera=True, modality="any",
                                        same_person_modality="cross" if case.name.startswith("AD") else "same",
                                        clothes="same" if case.name.endswith("ST") else "changed")
    assert MIXED_GROUPS == {"Daytime": ("DT-ST", "DT-LT"), "Nighttime": ("NT-ST", "NT-LT"),
                            "All-day": ("AD-ST", "AD-LT"), "Short-term": ("DT-ST", "NT-ST", "AD-ST"),
                            "Long-term": ("DT-LT", "NT-LT", "AD-LT"), "Anytime": SCENARIOS}


def test_evaluate_atustc_matches_oracle_in_percent() -> None:
    index = tiny_index(seed=1, persons=5)
    features = identity_features(index, seed=1)
    out = evaluate_atustc(features, index, chunk_size=7)
    json.dumps(out, allow_nan=False)  # JSON-able as is
    labels = index_labels(index)
    for p in list(ATUSTC_SCENARIOS) + list(MIXED_CASES):
        q_rows, g_rows = protocol_rows(index, p)
        head = features[:, p.head].numpy()
        ref = oracle_evaluate(oracle_distance(head[q_rows], head[g_rows]), labels.take(q_rows), labels.take(g_rows),
                              p.rule)
        got = out[p.name] if p in ATUSTC_SCENARIOS else out["mixed"]["cases"][p.name]
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
    clean = evaluate_atustc(features, index)
    for head in range(6):
        broken = features.clone()
        # Shuffle this head's features across images: its rankings become arbitrary.
        broken[:, head] = broken[torch.randperm(len(index), generator=torch.Generator().manual_seed(head)), head]
        out = evaluate_atustc(broken, index)
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
    out = evaluate_atustc(features, index)
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
    with pytest.raises(ValueError, match="query_modality"):
        Protocol("x", (2,), (6,), query_modality="visible")
    with pytest.raises(ValueError, match="head"):
        Protocol("x", (2,), (6,), head=6)
    index = tiny_index()
    with pytest.raises(AtreidError, match="clothes"):
        evaluate_atustc(identity_features(index), index.drop(columns=["clothes"]))
    bad = index.copy()
    bad.loc[0, "modality"] = "thermal"
    with pytest.raises(AtreidError, match="thermal"):
        evaluate_atustc(identity_features(index), bad)
