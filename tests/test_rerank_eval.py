"""eval.rerank: k-reciprocal re-ranked R1/mAP beside the plain ones, for every protocol.

Small hand-built cases: the option adds the re-ranked numbers (``"rerank"`` in each
protocol's dict, ``<column>@rr`` in the summaries and the table) and leaves the plain
numbers unchanged; with lambda = 1 the re-ranked distance is the row-scaled original one,
so every re-ranked number equals the plain one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atreid.config import read_yaml, validate_params
from atreid.constants import SCENARIOS
from atreid.errors import AtreidError
from atreid.data.benchmarks import get_benchmark
from atreid.data.benchmarks.atustc import PROTOCOLS as ATUSTC_PROTOCOLS
from atreid.data.protocols import RemovalRule
from atreid.eval.metrics import Labels, evaluate_reranked, evaluate_retrieval
from atreid.eval.oracle import oracle_evaluate
from atreid.eval.rerank import k_reciprocal_distances, rerank_options
from atreid.eval.scoring import evaluate_scenarios, score_protocols, summary_of
from atreid.eval.trials import candidate_rows
from atreid.report.table import build_table, table_markdown
from tests.test_cross_protocols import features_for, gallery_pool, index_frame
from tests.test_protocols import identity_features, tiny_index

PAPER = {"k1": 20, "k2": 6, "lambda": 0.3}
SMALL = {"k1": 4, "k2": 2, "lambda": 0.3}
IDENTITY = {"k1": 4, "k2": 2, "lambda": 1.0}


def strip_rerank(value):
    """``value`` without its ``"rerank"`` entries (at any depth)."""
    if isinstance(value, dict):
        return {k: strip_rerank(v) for k, v in value.items() if k != "rerank"}
    if isinstance(value, list):
        return [strip_rerank(v) for v in value]
    return value


def assert_same_numbers(a, b):
    """The same nested structure, numbers equal up to float rounding of the distances."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            assert_same_numbers(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_numbers(x, y)
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=1e-9)
    else:
        assert a == b


def test_rerank_options_from_params_values():
    assert rerank_options(None) is None and rerank_options(False) is None
    assert rerank_options(True) == PAPER
    assert rerank_options({"enabled": False, "k1": 5}) is None
    assert rerank_options({"enabled": True, "k2": 3}) == {"k1": 20, "k2": 3, "lambda": 0.3}
    with pytest.raises(AtreidError, match="eval.rerank: unknown key"):
        rerank_options({"enabled": True, "k3": 1})


def test_schema_accepts_bool_and_mapping_and_params_yaml_keeps_it_off():
    params = read_yaml(Path(__file__).resolve().parents[1] / "params.yaml")
    assert rerank_options(params["eval"]["rerank"]) is None  # the demo's metrics stay what they were
    for value in (True, False, {"enabled": True, "k1": 10, "k2": 3, "lambda": 0.5}):
        params["eval"]["rerank"] = value
        assert validate_params(params)["eval"]["rerank"] == value
    for bad in ({"enabled": True, "lambda": 2}, {"enabled": True, "k1": 0}, {"on": True}, "yes"):
        params["eval"]["rerank"] = bad
        with pytest.raises(AtreidError, match="rerank"):
            validate_params(params)


def test_reranked_metrics_score_the_reranked_distances_with_the_protocols_rule():
    rng = np.random.default_rng(3)
    q_feat, g_feat = rng.normal(size=(9, 6)), rng.normal(size=(23, 6))
    q = Labels(rng.integers(0, 4, 9), rng.integers(1, 5, 9), rng.integers(0, 2, 9), rng.integers(0, 2, 9))
    g = Labels(rng.integers(0, 4, 23), rng.integers(1, 5, 23), rng.integers(0, 2, 23), rng.integers(0, 2, 23))
    rule = RemovalRule(modality="cross", clothes="changed")
    qn = q_feat / np.linalg.norm(q_feat, axis=1, keepdims=True)
    gn = g_feat / np.linalg.norm(g_feat, axis=1, keepdims=True)
    dist = k_reciprocal_distances(torch.tensor(qn), torch.tensor(gn), k1=4, k2=2, lambda_value=0.3).numpy()
    ours = evaluate_reranked(torch.tensor(q_feat), torch.tensor(g_feat), q, g, rule, k1=4, k2=2, lambda_value=0.3,
                             chunk_size=4)
    expected = oracle_evaluate(dist, q, g, rule)
    assert ours.num_valid == expected.num_valid
    np.testing.assert_allclose(ours.cmc, expected.cmc)
    assert ours.mAP == pytest.approx(expected.mAP)


def test_lambda_one_reranking_equals_the_plain_ranking():
    rng = np.random.default_rng(0)
    q_feat, g_feat = torch.tensor(rng.normal(size=(12, 5))), torch.tensor(rng.normal(size=(30, 5)))
    q = Labels(rng.integers(0, 5, 12), rng.integers(1, 4, 12), rng.integers(0, 2, 12))
    g = Labels(rng.integers(0, 5, 30), rng.integers(1, 4, 30), rng.integers(0, 2, 30))
    for rule in (RemovalRule(), RemovalRule(modality="cross"), RemovalRule(excluded_camera_pairs=((1, 2),))):
        plain = evaluate_retrieval(q_feat, g_feat, q, g, rule)
        same = evaluate_reranked(q_feat, g_feat, q, g, rule, k1=3, k2=1, lambda_value=1.0)
        np.testing.assert_allclose(same.cmc, plain.cmc)
        assert (same.mAP, same.mINP, same.num_valid) == pytest.approx((plain.mAP, plain.mINP, plain.num_valid))


def test_atustc_rerank_adds_numbers_and_keeps_the_plain_ones():
    index = tiny_index(seed=1, persons=5)
    features = identity_features(index, noise=1.0).float()
    plain = evaluate_scenarios(features, index, ATUSTC_PROTOCOLS, chunk_size=16)
    out = evaluate_scenarios(features, index, ATUSTC_PROTOCOLS, chunk_size=16, rerank=SMALL)
    assert strip_rerank(out) == plain  # plain numbers bit for bit
    for name in (*SCENARIOS, "Any-Time"):
        assert set(out[name]["rerank"]) >= {"R1", "mAP", "chance"}
        assert out[name]["rerank"]["chance"] == out[name]["chance"]  # a random ranking does not care
    for part in ("cases", "groups"):
        assert all("rerank" in entry for entry in out["mixed"][part].values())
    assert any(out[name]["rerank"]["mAP"] != out[name]["mAP"] for name in SCENARIOS)  # it did re-rank
    json.dumps(out)
    identity = evaluate_scenarios(features, index, ATUSTC_PROTOCOLS, chunk_size=16, rerank=IDENTITY)
    for name in (*SCENARIOS, "Any-Time"):
        assert_same_numbers(strip_rerank(identity[name]["rerank"]), strip_rerank(identity[name]))
    for name in identity["mixed"]["cases"]:
        assert_same_numbers(identity["mixed"]["cases"][name]["rerank"], strip_rerank(identity["mixed"]["cases"][name]))


def test_cross_dataset_rerank_per_trial_mean_and_summary():
    index = gallery_pool()
    query = index.copy()
    query["path"] = "query/" + query["path"]
    query["split"] = "query"
    index = index_frame(list(index.itertuples(index=False)) + list(query.itertuples(index=False)))
    spec = get_benchmark("market1501").protocols
    rows = candidate_rows(index, spec).reset_index(drop=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(rows["person"].max() + 1, 8))
    vectors = {p: centres[person] + rng.normal(size=8) for p, person in zip(rows["path"], rows["person"])}
    features = features_for(rows, vectors)
    plain = score_protocols(features, rows, spec)
    out = score_protocols(features, rows, spec, rerank=SMALL)
    assert strip_rerank(out) == plain
    trial = out["standard"]["trials"][0]
    assert {"R1", "mAP", "cmc"} <= set(trial["rerank"]) and "rerank" in out["standard"]["mean"]
    summary = summary_of(out, spec)
    assert summary["R1"] == plain["standard"]["mean"]["R1"]
    assert summary["R1@rr"] == out["standard"]["mean"]["rerank"]["R1"]
    assert set(summary_of(out, spec, chance=True)) == {"R1", "mAP", "R1@rr", "mAP@rr"}
    assert set(summary_of(plain, spec)) == {"R1", "mAP"}
    identity = score_protocols(features, rows, spec, rerank=IDENTITY)["standard"]
    assert_same_numbers(strip_rerank(identity["trials"][0]["rerank"]),
                        {k: v for k, v in strip_rerank(identity["trials"][0]).items()
                         if k not in ("trial", "num_gallery")})


def test_table_gets_rr_columns_with_std(tmp_path):
    from tests.test_report import FIVE, write_run

    files = []
    for run, shift in (("seed0", 0.0), ("seed1", 2.0)):
        files.append(write_run(tmp_path, "full", run, "atustc",
                               {"Any-Time_R1": 50.0 + shift, "Any-Time_R1@rr": 60.0 + 2 * shift},
                               chance={"Any-Time_R1": 2.0, "Any-Time_R1@rr": 2.0}))
        for name in FIVE:
            files.append(write_run(tmp_path, "full", run, name,
                                   {"R1": 10.0, "mAP": 5.0, "R1@rr": 12.0 + shift, "mAP@rr": 7.0},
                                   chance={"R1": 0.5, "mAP": 0.25, "R1@rr": 0.5, "mAP@rr": 0.25}))
    table = build_table(files).set_index("variant")
    full, chance = table.loc["full"], table.loc["chance"]
    assert full["Any-Time_R1"] == 51.0 and full["Any-Time_R1@rr"] == 62.0
    assert full["Any-Time_R1@rr:std"] == pytest.approx(2.83)
    assert full["market1501:R1@rr"] == 13.0 and full["market1501:R1@rr:std"] == pytest.approx(1.41)
    assert full["avg5:R1@rr"] == 13.0 and full["avg5:mAP@rr"] == 7.0 and full["avg5:mAP@rr:std"] == 0.0
    assert chance["Any-Time_R1@rr"] == 2.0 and chance["avg5:R1@rr"] == 0.5
    header = table_markdown(build_table(files)).splitlines()[0]
    assert "Any-Time_R1@rr" in header and "market1501:mAP@rr" in header and "@rr:std" not in header


@pytest.mark.slow  # over the fast tier's 5 s (a Snakemake or interpreter start-up)
def test_workflow_gives_rerank_to_the_evaluation_jobs_only(tmp_path):
    """Off: no job's settings hold a rerank key. On: only the evaluation jobs' settings
    change (they rerun), not training's nor the galleries'."""
    from tests.e2e import copy_tracked_files, dry_run_commands, settings_of

    work = copy_tracked_files(tmp_path / "repo")
    steps = ("evaluate", "train", "galleries", "pretrain-backbone")
    off = dry_run_commands(work, steps)
    on = dry_run_commands(work, steps, "--config", 'eval={"rerank": {"enabled": true, "k1": 10}}')
    assert off["evaluate"] and off["train"] and off["galleries"]
    assert not any("rerank" in settings_of(work, line) for lines in off.values() for line in lines)
    assert all(settings_of(work, line)["rerank"] == {"enabled": True, "k1": 10, "k2": 6, "lambda": 0.3}
               for line in on["evaluate"])
    assert len(on["evaluate"]) == len(off["evaluate"])
    for step in ("train", "galleries", "pretrain-backbone"):
        assert on[step] == off[step]
