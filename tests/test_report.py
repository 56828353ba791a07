"""Figures come from the run's own data: galleries, CMC tables, plots, the result table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from atreid.constants import SCENARIOS
from atreid.eval.oracle import removal_mask
from atreid.data.benchmarks.atustc import SCENARIO_PROTOCOLS
from atreid.eval.scoring import labels_of
from atreid.report.gallery import plot_gallery, ranked_queries
from atreid.report.plots import plot_cmc, plot_comparison, plot_training, write_cmc_csv
from atreid.report.table import build_table, table_markdown
from tests.conftest import write_jpeg

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_test_index(seed: int = 0) -> tuple[pd.DataFrame, torch.Tensor]:
    """A small AT-USTC-like test index (flags 2-9) and features correlated with identity."""
    rng = np.random.default_rng(seed)
    rows = []
    for person in range(1, 7):
        for flag, cameras, clothes in ((2, (1, 2), 1), (6, (3, 4), 1), (3, (1,), 1), (7, (2, 3), 2),
                                       (4, (9, 10), 1), (8, (11, 12), 1), (5, (9,), 1), (9, (10, 11), 2)):
            for camera in cameras:
                for frame in range(2):
                    rows.append({"path": f"p{person:03d}-d01-c{clothes:02d}/cam{camera:02d}-f{flag}-{frame:04d}.jpg",
                                 "person": person, "date": 1, "clothes": clothes, "camera": camera,
                                 "modality": "rgb" if camera <= 8 else "ir", "flag": flag, "frame": frame,
                                 "clip": f"p{person:03d}-d01-c{clothes:02d}-cam{camera:02d}"})
    index = pd.DataFrame(rows)
    identity = rng.normal(size=(7, 6, 16))
    features = torch.tensor(np.stack([identity[p] + 0.8 * rng.normal(size=(6, 16)) for p in index["person"]]),
                            dtype=torch.float32)
    return index, features


@pytest.mark.parametrize("protocol", SCENARIO_PROTOCOLS, ids=lambda p: p.name)
def test_gallery_green_frames_are_the_protocols_positives(protocol):
    index, features = synthetic_test_index()
    ranked = ranked_queries(features, index, protocol, num_queries=3, top_k=10, seed=1)
    assert ranked, "every scenario of the test index has valid queries"
    labels = labels_of(index)
    q_rows, g_rows = protocol.rows(index)
    q, g = labels.take(q_rows), labels.take(g_rows)
    for query in ranked:
        i = int(np.flatnonzero(q_rows == query.query_row)[0])
        allowed = set(g_rows[~removal_mask(i, q, g, protocol.rule)].tolist())
        assert set(query.gallery_rows) <= allowed  # nothing the protocol removes is shown
        for row, match in zip(query.gallery_rows, query.matches):
            assert match == (index.loc[row, "person"] == index.loc[query.query_row, "person"])
        # The shown list is the top-k of the allowed gallery by the head's cosine distance.
        q_feat = torch.nn.functional.normalize(features[query.query_row, protocol.head], dim=0)
        dist = {row: 1 - float(q_feat @ torch.nn.functional.normalize(features[row, protocol.head], dim=0))
                for row in allowed}
        expected = sorted(allowed, key=lambda r: (round(dist[r], 5), r))[: len(query.gallery_rows)]
        assert list(query.gallery_rows) == expected
        assert query.distances == tuple(sorted(query.distances))


def test_gallery_selection_is_seeded():
    index, features = synthetic_test_index()
    a = ranked_queries(features, index, SCENARIO_PROTOCOLS[0], num_queries=3, seed=5)
    b = ranked_queries(features, index, SCENARIO_PROTOCOLS[0], num_queries=3, seed=5)
    assert a == b


def test_gallery_png_is_written(tmp_path):
    index, features = synthetic_test_index()
    for path in index["path"]:
        write_jpeg(tmp_path / "imgs" / path, size=(32, 16))
    ranked = ranked_queries(features, index, SCENARIO_PROTOCOLS[4], num_queries=2, seed=0)
    out = tmp_path / "gallery.png"
    plot_gallery(ranked, index, tmp_path / "imgs", "AD-ST", out)
    assert out.read_bytes().startswith(PNG)


def fake_metrics(variant: str, offset: float) -> dict:
    protocols = {}
    for k, name in enumerate(SCENARIOS):
        cmc = [min(100.0, 10.0 * k + offset + r) for r in range(20)]
        protocols[name] = {"cmc": cmc, "R1": cmc[0], "mAP": cmc[0] / 2, "num_valid": 5}
    summary = {"Any-Time_R1": float(np.mean([p["R1"] for p in protocols.values()])),
               "Any-Time_mAP": float(np.mean([p["mAP"] for p in protocols.values()]))}
    for name in SCENARIOS:
        summary[f"{name}_R1"] = protocols[name]["R1"]
        summary[f"{name}_mAP"] = protocols[name]["mAP"]
    return {"variant": variant, "benchmark": "atustc", "protocols": protocols, "summary": summary,
            "synthetic": True, "settings": {"ncls": 6, "said": True, "moae": True, "hdw": True}}


def test_cmc_csv_holds_the_metrics_curves(tmp_path):
    metrics = fake_metrics("full", 3.0)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(metrics))
    write_cmc_csv(path, tmp_path / "cmc.csv")
    table = pd.read_csv(tmp_path / "cmc.csv")
    assert table["rank"].tolist() == list(range(1, 21))
    for name in SCENARIOS:
        assert table[name].tolist() == pytest.approx(metrics["protocols"][name]["cmc"])


def test_plots_are_written(tmp_path):
    metrics = {"full": fake_metrics("full", 3.0), "baseline": fake_metrics("baseline", 1.0)}
    plot_cmc(metrics, tmp_path / "cmc.png")
    files = []
    for variant, data in metrics.items():
        files.append(tmp_path / f"{variant}.json")
        files[-1].write_text(json.dumps(data))
    table = build_table(files)
    plot_comparison(table, tmp_path / "bars.png")
    history = pd.DataFrame({"epoch": [1, 2, 3], "lr": [0.1, 0.2, 0.3],
                            **{f"loss_h{i}": [3.0, 2.0, 1.0] for i in range(6)},
                            **{f"acc_h{i}": [0.1, 0.5, 0.9] for i in range(6)}})
    plot_training(history, "full", tmp_path / "train.png")
    for name in ("cmc.png", "bars.png", "train.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_table_rows_and_paper_columns(tmp_path):
    files = []
    for variant, offset in (("full", 3.0), ("baseline", 1.0)):
        files.append(tmp_path / f"{variant}.json")
        files[-1].write_text(json.dumps(fake_metrics(variant, offset)))
    table = build_table(files, paper=True)
    assert table["variant"].tolist() == ["full", "baseline"]
    full = table.iloc[0]
    assert full["DT-ST_R1"] == pytest.approx(3.0)
    # full = SAID+MoAE+HDW = the paper's Uni-AT row: published DT-ST R1 97.76.
    assert full["paper:DT-ST_R1"] == pytest.approx(97.76)
    assert full["diff:DT-ST_R1"] == pytest.approx(3.0 - 97.76)
    assert "synthetic" in table_markdown(table)


def test_table_ends_with_the_random_ranking_row(tmp_path):
    files = []
    for variant, offset in (("full", 3.0), ("baseline", 1.0)):
        metrics = fake_metrics(variant, offset)
        metrics["chance_summary"] = {key: 1.5 for key in metrics["summary"]}
        files.append(tmp_path / f"{variant}.json")
        files[-1].write_text(json.dumps(metrics))
    table = build_table(files, paper=True)
    assert table["variant"].tolist() == ["full", "baseline", "chance"]
    chance = table.iloc[-1]
    assert chance["Any-Time_R1"] == pytest.approx(1.5) and chance["AD-LT_mAP"] == pytest.approx(1.5)
    assert chance["synthetic"]
    assert pd.isna(chance["paper:DT-ST_R1"])  # no published numbers for a random ranking
    plot_comparison(table, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes().startswith(PNG)


def write_run(tmp_path: Path, variant: str, run: str, benchmark: str, summary: dict, chance: dict | None = None,
              settings: dict | None = None) -> Path:
    """A hand-built metrics file of one run (as results/metrics/{variant}/{run}/{benchmark}.json)."""
    path = tmp_path / variant / run / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"variant": variant, "benchmark": benchmark, "summary": summary, "synthetic": False,
               "model": f"models/{variant}/{run}/model.pt",
               "settings": settings or {"ncls": 6, "said": True, "moae": True, "hdw": True}}
    if chance is not None:
        metrics["chance_summary"] = chance
    path.write_text(json.dumps(metrics))
    return path


FIVE = ("market1501", "cuhk03", "sysu_mm01", "prcc", "ltcc")


def test_table_is_the_mean_and_sample_std_over_the_runs(tmp_path):
    files = []
    for run, r1, m in (("seed0", 50.0, 30.004), ("seed1", 54.0, 31.0)):
        files.append(write_run(tmp_path, "full", run, "atustc", {"Any-Time_R1": r1, "DT-ST_mAP": m},
                               chance={"Any-Time_R1": 2.0, "DT-ST_mAP": 1.0}))
        for k, name in enumerate(FIVE):  # avg5 of seed0: 14, of seed1: 16
            files.append(write_run(tmp_path, "full", run, name, {"R1": 10.0 + 2 * k + (2.0 if run == "seed1" else 0),
                                                                  "mAP": 5.0}, chance={"R1": 0.5, "mAP": 0.25}))
    files.append(write_run(tmp_path, "ref", "imported", "atustc", {"Any-Time_R1": 70.0, "DT-ST_mAP": 40.0},
                           chance={"Any-Time_R1": 2.0, "DT-ST_mAP": 1.0}))
    table = build_table(files).set_index("variant")
    assert table.index.tolist() == ["full", "ref", "chance"]
    full, ref, chance = table.loc["full"], table.loc["ref"], table.loc["chance"]
    assert full["n"] == 2 and ref["n"] == 1 and chance["n"] == 1
    assert full["Any-Time_R1"] == 52.0 and full["Any-Time_R1:std"] == pytest.approx(2.83)  # sqrt(8)
    # Each run's value is rounded first (30.00, 31.00): mean 30.5, std sqrt(0.5) = 0.707.
    assert full["DT-ST_mAP"] == 30.5 and full["DT-ST_mAP:std"] == pytest.approx(0.71)
    assert full["market1501:R1"] == 11.0 and full["market1501:R1:std"] == pytest.approx(1.41)
    assert full["avg5:R1"] == 15.0 and full["avg5:R1:std"] == pytest.approx(1.41)  # over the runs' averages
    assert full["avg5:mAP"] == 5.0 and full["avg5:mAP:std"] == 0.0
    # One run: its own numbers, std 0.0 (no NaN); a benchmark it lacks is NaN.
    assert ref["Any-Time_R1"] == 70.0 and ref["Any-Time_R1:std"] == 0.0 and pd.isna(ref["market1501:R1"])
    assert chance["Any-Time_R1"] == 2.0 and chance["Any-Time_R1:std"] == 0.0 and chance["avg5:R1"] == 0.5
    columns = table.reset_index().columns.tolist()
    assert columns[:5] == ["variant", "synthetic", "n", "Any-Time_R1", "Any-Time_R1:std"]


def test_table_markdown_cells_are_mean_plus_minus_std(tmp_path):
    files = [write_run(tmp_path, "full", run, "atustc", {"Any-Time_R1": r1}, chance={"Any-Time_R1": 2.0})
             for run, r1 in (("seed0", 50.0), ("seed1", 54.0))]
    files.append(write_run(tmp_path, "base", "seed0", "atustc", {"Any-Time_R1": 40.0}, chance={"Any-Time_R1": 2.0}))
    lines = table_markdown(build_table(files)).splitlines()
    # data_source last (these files predate provenance: "unrecorded"); commit, settings and
    # pretrained file listed under the table.
    assert lines[0] == "| variant | synthetic | n | Any-Time_R1 | data_source |"
    assert lines[2] == "| full | False | 2 | 52.00 ± 2.83 | unrecorded |"
    assert lines[3] == "| base | False | 1 | 40.00 ± 0.00 | unrecorded |"
    assert lines[4] == "| chance | False | 1 | 2.00 | unrecorded |"  # computed, not measured: no spread shown
    assert any("mean ± sample std" in line for line in lines)
    assert "- full: commit unrecorded, settings " in "\n".join(lines) and "Synthetic data" not in "\n".join(lines)


def test_table_rows_say_what_they_came_from(tmp_path):
    """Provenance columns from the metrics files (atreid/provenance.py), one value per row
    (several runs' different values joined), and synthetic rows named in words."""
    files = []
    for run, commit in (("seed0", "a" * 40), ("seed1", "b" * 40)):
        path = write_run(tmp_path, "full", run, "atustc", {"Any-Time_R1": 50.0})
        metrics = json.loads(path.read_text())
        metrics["provenance"] = {"data": {"source": "synthetic", "generator": "atreid 0.1.0"},
                                 "model": {"code": {"commit": commit, "dirty": run == "seed1"},
                                           "data": {"source": "AT-USTC.zip", "sha256": "c" * 64},
                                           "pretrained_sha256": "d" * 64}}
        path.write_text(json.dumps(metrics))
        files.append(path)
    row = build_table(files).set_index("variant").loc["full"]
    assert row["data_source"] == f"AT-USTC.zip@{'c' * 12} / synthetic"
    assert row["commit"] == f"{'a' * 12} / {'b' * 12}+dirty"
    assert row["pretrained_sha256"] == "d" * 12 and len(row["settings_sha256"]) == 12
    markdown = table_markdown(build_table(files))
    assert "**Synthetic data**: the rows full come from the embedded synthetic dataset" in markdown


def test_paper_columns_compare_the_mean(tmp_path):
    files = [write_run(tmp_path, "full", run, "atustc", {"DT-ST_R1": r1})
             for run, r1 in (("seed0", 2.0), ("seed1", 4.0))]
    full = build_table(files, paper=True).iloc[0]
    assert full["DT-ST_R1"] == 3.0 and full["paper:DT-ST_R1"] == pytest.approx(97.76)
    assert full["diff:DT-ST_R1"] == pytest.approx(3.0 - 97.76)
    assert "paper:DT-ST_R1:std" not in full.index


def test_every_paper_preset_variant_gets_its_published_numbers(tmp_path):
    """The paper preset's six variants, by their switches: each ablation row's Any-Time R1
    and a Market-1501 cross-dataset number beside ours; none for the unified embedding
    (ncls1). (The paper-path run, tests/test_paper_path_e2e.py, trains two of them.)"""
    import yaml

    from tests.conftest import REPO

    variants = yaml.safe_load((REPO / "presets" / "paper.yaml").read_text())["variants"]
    files = []
    for variant, switches in variants.items():
        files.append(write_run(tmp_path, variant, "seed0", "atustc", {"Any-Time_R1": 40.0}, settings=switches))
        files.append(write_run(tmp_path, variant, "seed0", "market1501", {"R1": 10.0, "mAP": 5.0}, settings=switches))
    table = build_table(files, paper=True).set_index("variant")
    published = {"full": 55.80, "baseline": 50.90, "said": 52.03, "said_moae": 53.70, "said_hdw": 53.32}
    assert sorted(variants) == sorted([*published, "ncls1"])
    for variant, any_time in published.items():
        assert table.loc[variant, "paper:Any-Time_R1"] == any_time, variant
        assert table.loc[variant, "diff:Any-Time_R1"] == pytest.approx(40.0 - any_time), variant
        assert not pd.isna(table.loc[variant, "paper:market1501:R1"]), variant
    assert pd.isna(table.loc["ncls1", "paper:Any-Time_R1"]) and pd.isna(table.loc["ncls1", "paper:market1501:R1"])


def test_comparison_plot_draws_the_spread(tmp_path, monkeypatch):
    import matplotlib.axes

    files = [write_run(tmp_path, "full", run, "atustc", {"DT-ST_R1": r1, "DT-ST_mAP": r1 / 2})
             for run, r1 in (("seed0", 2.0), ("seed1", 4.0))]
    table = build_table(files)
    drawn = []
    original = matplotlib.axes.Axes.bar

    def bar(self, *args, **kwargs):
        drawn.append(kwargs.get("yerr"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    plot_comparison(table, tmp_path / "bars.png")
    assert drawn == [[pytest.approx(1.41)], [pytest.approx(0.71)]]
    assert (tmp_path / "bars.png").read_bytes().startswith(PNG)


def test_headline_shows_mean_std_and_chance_plainly(tmp_path):
    from atreid.report.table import headline

    table = pd.DataFrame([
        {"variant": "full", "n": 2, "Any-Time_R1": 11.19, "Any-Time_R1:std": 0.45, "Any-Time_mAP": 15.8,
         "Any-Time_mAP:std": 0.0},
        {"variant": "chance", "n": 1, "Any-Time_R1": 3.24, "Any-Time_R1:std": 0.0, "Any-Time_mAP": float("nan"),
         "Any-Time_mAP:std": 0.0},
    ])
    lines = headline(table).splitlines()
    assert lines[0] == "| variant | n | Any-Time R1 | Any-Time mAP |"
    assert lines[2] == "| full | 2 | 11.19 ± 0.45 | 15.80 ± 0.00 |"
    assert lines[3] == "| chance | 1 | 3.24 | - |"
    table["data_source"] = ["synthetic", "synthetic"]
    sourced = headline(table)
    assert sourced.splitlines()[2] == "| full | 2 | 11.19 ± 0.45 | 15.80 ± 0.00 | synthetic |"
    assert "**Synthetic data**: the rows full come from" in sourced
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    out = subprocess.run([sys.executable, "-m", "atreid", "show-table", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[2] == sourced.splitlines()[2]
    missing = subprocess.run([sys.executable, "-m", "atreid", "show-table", str(tmp_path / "none.csv")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no result table yet" in missing.stderr


def test_summary_holds_the_re_ranked_numbers_only_when_the_evaluations_re_ranked():
    from atreid.constants import CHANCE_ROW
    from atreid.report.table import STD_SUFFIX, summary_metrics

    plain = pd.DataFrame([{"variant": "full", "Any-Time_R1": 50.0, "Any-Time_R1" + STD_SUFFIX: 1.0,
                           "Any-Time_mAP": 40.0, "Any-Time_mAP" + STD_SUFFIX: 2.0},
                          {"variant": CHANCE_ROW, "Any-Time_R1": 5.0, "Any-Time_mAP": 4.0}])
    assert summary_metrics(plain) == {"full": {"Any-Time": {"R1": 50.0, "R1_std": 1.0, "mAP": 40.0, "mAP_std": 2.0}}}
    reranked = plain.assign(**{"Any-Time_R1@rr": [55.0, 5.0], "Any-Time_mAP@rr": [45.0, 4.0]})
    assert summary_metrics(reranked)["full"]["Any-Time"] == {
        "R1": 50.0, "R1_std": 1.0, "mAP": 40.0, "mAP_std": 2.0,
        "R1@rr": 55.0, "R1@rr_std": 0.0, "mAP@rr": 45.0, "mAP@rr_std": 0.0}
