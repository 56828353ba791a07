"""data.train_on: training on a benchmark's training split (issue 16, item 3).

Unit level: label support and the refusal of variants needing labels a split lacks, the
report of heads with an empty subset, the labelled split of a synthetic miniature, the
params validation, settings and table of the default (unchanged). End to end: the
baseline trained on a synthetic Market-1501 miniature through Snakemake and evaluated on
every benchmark of eval.benchmarks (Market-1501 and AT-USTC), then SAID refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from atreid.config import deep_merge, load_params, resolve_variant, validate_params
from atreid.data.benchmarks import check_params_benchmarks
from atreid.data.labels import (build_training_split, check_trainable, empty_heads, label_support,
                                training_split)
from atreid.errors import AtreidError

REPO = Path(__file__).resolve().parents[1]
SIZE = {"image_height": 64, "image_width": 32}


def frame(modalities: list[str], clothes: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"path": [f"{i}.jpg" for i in range(len(modalities))], "person": 1, "camera": 1,
                         "modality": modalities, "clothes": clothes, "split": "train"})


def settings(variant: str, **overrides) -> dict:
    params = validate_params(load_params(REPO / "params.yaml"))
    params = deep_merge(params, {"data": overrides}) if overrides else params
    return resolve_variant(params, variant, 0)


MARKET_LIKE = label_support(frame(["rgb"] * 3, [-1] * 3), "market1501")  # RGB, no clothes labels
LTCC_LIKE = label_support(frame(["rgb"] * 3, [1, 2, 1]), "ltcc")  # RGB, clothes labels
SYSU_LIKE = label_support(frame(["rgb", "ir", "ir"], [-1] * 3), "sysu_mm01")  # RGB + IR, no clothes labels
ATUSTC_LIKE = label_support(frame(["rgb", "ir"], [1, 2]), "atustc")


# ---- labels a split carries, variants it refuses ---------------------------------------------
def test_label_support():
    assert MARKET_LIKE.modalities == ("rgb",) and not MARKET_LIKE.clothes
    assert LTCC_LIKE.clothes and SYSU_LIKE.modalities == ("rgb", "ir") and not SYSU_LIKE.clothes
    partial = label_support(frame(["rgb"] * 3, [1, -1, 2]), "custom")
    assert not partial.clothes and partial.unlabelled_clothes == 1


@pytest.mark.parametrize("support", [MARKET_LIKE, SYSU_LIKE])
def test_said_needs_clothes_labels(support):
    with pytest.raises(AtreidError) as refused:
        check_trainable(settings("full"), support)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"variant 'full' cannot train on {support.dataset}: said: true needs clothes labels")
    assert "has none (clothes -1)" in message


def test_partial_clothes_labels_are_named():
    support = label_support(frame(["rgb"] * 3, [1, -1, 2]), "custom")
    with pytest.raises(AtreidError, match="lacks them on 1 of 3 images"):
        check_trainable(settings("full"), support)


@pytest.mark.parametrize("variant", ["baseline", "ncls1"])
@pytest.mark.parametrize("support", [MARKET_LIKE, SYSU_LIKE, LTCC_LIKE, ATUSTC_LIKE])
def test_person_id_variants_train_on_anything(variant, support):
    check_trainable(settings(variant), support)  # no clothes or modality label needed
    assert empty_heads(settings(variant), support) == {}  # every head sees every image


def test_said_on_one_modality_trains_and_reports_the_empty_heads():
    check_trainable(settings("full"), LTCC_LIKE)
    empty = empty_heads(settings("full"), LTCC_LIKE)
    assert sorted(empty) == ["NT-LT", "NT-ST"]
    assert empty["NT-ST"] == "no ir image in ltcc's training split (SAID subset empty)"
    assert empty_heads(settings("full"), ATUSTC_LIKE) == {}
    triplet = settings("baseline")
    triplet["train"]["triplet_start_epoch"] = 0  # the triplet subsets are by modality, SAID or not
    assert sorted(empty_heads(triplet, LTCC_LIKE)) == ["NT-LT", "NT-ST"]


# ---- the labelled training split of a miniature ---------------------------------------------
@pytest.fixture(scope="module")
def miniatures(tmp_path_factory) -> dict[str, Path]:
    """Synthetic miniatures in their release layout, with their index.csv beside images/."""
    from atreid.data.benchmarks import get_benchmark
    from atreid.data.synthetic.miniatures import generate_miniature

    out = {}
    for name in ("market1501", "ltcc", "regdb"):
        folder = tmp_path_factory.mktemp(name)
        generate_miniature(get_benchmark(name), folder / "images", seed=0, **SIZE)
        index, _, _ = get_benchmark(name).build_index(folder / "images")
        index.to_csv(folder / "index.csv", index=False)
        out[name] = folder
    return out


def test_market_training_split(miniatures):
    folder = miniatures["market1501"]
    labelled, maps = build_training_split(folder / "index.csv", folder / "images", "market1501")
    index = pd.read_csv(folder / "index.csv")
    train = index[index["split"] == "train"]
    assert len(labelled) == len(train) and set(labelled["split"]) == {"train"}
    assert all((folder / "images" / path).is_file() for path in labelled["path"])  # relative to images/
    assert labelled["path"].iloc[0].startswith("Market-1501-v15.09.15/bounding_box_train/")
    assert maps["persons"] == sorted(train["person"].unique().tolist())
    assert len(maps["outfits"]) == len(maps["persons"])  # clothes -1: one outfit per person
    assert sorted(labelled["person_label"].unique()) == list(range(len(maps["persons"])))
    assert maps["dataset"] == "market1501" and maps["modalities"] == ["rgb"] and maps["clothes"] is False


def test_clothes_changing_training_split(miniatures):
    folder = miniatures["ltcc"]
    labelled, maps = build_training_split(folder / "index.csv", folder / "images", "ltcc")
    assert maps["clothes"] is True and len(maps["outfits"]) > len(maps["persons"])
    assert labelled["outfit_label"].max() == len(maps["outfits"]) - 1


def test_a_benchmark_without_training_images_is_refused(miniatures):
    folder = miniatures["regdb"]
    with pytest.raises(AtreidError, match=r"regdb has no training images \(split 'train'; its splits: test\)"):
        build_training_split(folder / "index.csv", folder / "images", "regdb")
    with pytest.raises(AtreidError, match="missing column"):
        training_split(pd.DataFrame({"path": ["a.jpg"]}), "x")


# ---- params, settings and table: the default is unchanged ------------------------------------
def test_train_on_is_validated_and_defaults_to_atustc():
    params = load_params(REPO / "params.yaml")
    assert params["data"]["train_on"] == "atustc"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["train_on"] = "market"
    with pytest.raises(AtreidError, match=r"data\.train_on: unknown benchmark 'market'; valid: atustc, .*market1501"):
        check_params_benchmarks(validate_params(raw), "params.yaml")
    del raw["data"]["train_on"]
    assert validate_params(raw)["data"]["train_on"] == "atustc"  # the schema's default


def test_default_settings_do_not_name_the_training_set():
    """The default's resolved settings, hence its jobs' params, model files and metrics
    files, are what they were before data.train_on existed."""
    default = settings("full")
    assert "train_on" not in default
    assert set(default) == {"name", "seed", "ncls", "said", "moae", "hdw", "model", "train"}
    other = settings("full", train_on="market1501")
    assert other.pop("train_on") == "market1501" and other == default


def test_table_names_the_training_set_only_when_not_atustc(tmp_path):
    from atreid.report.table import build_table, table_markdown

    def metrics_file(variant: str, extra: dict) -> Path:
        path = tmp_path / variant / "market1501.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"variant": variant, "benchmark": "market1501", "model": f"{variant}.pt",
                                    "summary": {"R1": 50.0, "mAP": 40.0}, "chance_summary": {"R1": 5.0},
                                    "settings": {"name": variant, **extra}}))
        return path

    default = build_table([metrics_file("baseline", {})])
    assert "trained_on" not in default.columns
    table = build_table([metrics_file("baseline", {"train_on": "market1501"}), metrics_file("ncls1", {})])
    assert list(table.columns[:4]) == ["variant", "synthetic", "trained_on", "n"]
    assert table.set_index("variant")["trained_on"].to_dict() == {"baseline": "market1501", "ncls1": "atustc",
                                                                  "chance": "-"}
    assert "| baseline | False | market1501 | 1 |" in table_markdown(table)


# ---- the trainer: refusal before anything is built, empty heads reported ---------------------
def test_trainer_refuses_and_reports(tmp_path, monkeypatch, caplog):
    from atreid.engine import trainer
    from tests.test_trainer import StandInCriterion, StandInModel, make_training_data, tiny_settings

    data = make_training_data(tmp_path / "data", persons=4)
    index = pd.read_csv(data["index_csv"])
    rgb = index[index["modality"] == "rgb"]
    (tmp_path / "rgb.csv").write_text(rgb.to_csv(index=False))
    no_clothes = rgb.assign(clothes=-1)
    (tmp_path / "no_clothes.csv").write_text(no_clothes.to_csv(index=False))
    built = []
    monkeypatch.setattr(trainer, "build_training_model",
                        lambda s, p, o: built.append(s["name"]) or StandInModel(p, o, tuple(s["model"]["image_size"])))
    monkeypatch.setattr(trainer, "build_criterion", lambda s, labels: StandInCriterion())
    full = tiny_settings("full", epochs=2)
    full["train_on"] = "ltcc"

    def train(settings, index_csv, out):
        return trainer.train_variant(settings, index_csv=index_csv, labels_json=data["labels_json"],
                                     images_root=data["images_root"], out_path=out / "model.pt",
                                     history_path=out / "history.csv", checkpoint_dir=out / "ckpt", threads=1,
                                     device="cpu")

    with pytest.raises(AtreidError, match="variant 'full' cannot train on ltcc: said: true needs clothes labels"):
        train(full, tmp_path / "no_clothes.csv", tmp_path / "refused")
    assert built == [] and not (tmp_path / "refused").exists()

    with caplog.at_level("WARNING", logger="atreid.train"):
        train(full, tmp_path / "rgb.csv", tmp_path / "rgb")
    assert "head NT-ST is not trained: no ir image in ltcc's training split" in caplog.text
    assert "epoch 1: no sample for head(s) NT-ST, NT-LT in any batch" in caplog.text
    history = pd.read_csv(tmp_path / "rgb" / "history.csv")
    for head in (2, 3):  # NT heads: empty cells, not 0
        assert history[f"loss_h{head}"].isna().all() and history[f"acc_h{head}"].isna().all()
    for head in (0, 1, 4, 5):
        assert history[f"loss_h{head}"].notna().all() and (history[f"loss_h{head}"] > 0).all()


def test_head_epoch_means_keep_full_epochs_exact():
    from atreid.engine.trainer import head_epoch_means

    row = {"loss_h0": 0.1 + 0.2, "acc_h0": 0.3, "loss_h2": 0.0, "acc_h2": 0.0, "loss_h4": 0.5, "loss": 1.0}
    empty = head_epoch_means(row, [1.0, 1.0, 0.0, 1.0, 0.5, 1.0])
    assert empty == ["NT-ST"]
    assert row["loss_h0"] == 0.1 + 0.2 and row["acc_h0"] == 0.3  # every batch had samples: unchanged
    assert math.isnan(row["loss_h2"]) and math.isnan(row["acc_h2"]) and row["loss_h4"] == 1.0 and row["loss"] == 1.0


# ---- end to end through Snakemake --------------------------------------------------------------
TRAIN_ON_MARKET = {"data": {"train_on": "market1501"},
                   "train": {"iters_per_epoch": 2, "batch_k": 2}}


@pytest.mark.slow
def test_train_on_a_market1501_miniature_through_snakemake(tiny_pipeline, tmp_path):
    """In a copy of the session's tiny pipeline: its data and pre-training are current."""
    from tests.e2e import copy_pipeline, jobs_of_dry_run, run, tiny_params

    work = copy_pipeline(tiny_pipeline.work, tmp_path / "repo")
    params = tiny_params(work, {"baseline": {"ncls": 6, "said": False, "moae": False, "hdw": False}},
                         benchmarks=["market1501", "atustc"], overrides=TRAIN_ON_MARKET)

    dry = run(["snakemake", "-n", "results/table.csv"], work)
    jobs = jobs_of_dry_run(dry.stdout)
    assert jobs["label_training_split"] == 1 and jobs["train_model"] == 1 and jobs["evaluate_run"] == 1
    assert "sample_frames" not in jobs  # AT-USTC is evaluated, not trained on
    run(["snakemake", "--cores", "2", "results/table.csv"], work)

    data = work / "data" / "market1501"
    maps = json.loads((data / "labels.json").read_text())
    train = pd.read_csv(data / "index.csv").query("split == 'train'")
    assert maps["persons"] == sorted(train["person"].unique().tolist()) and maps["modalities"] == ["rgb"]
    assert len(pd.read_csv(data / "train_labelled.csv")) == len(train)
    import torch

    model = torch.load(work / "models" / "baseline" / "seed0" / "model.pt", weights_only=True)
    assert model["settings"]["train_on"] == "market1501" and model["num_persons"] == len(maps["persons"])
    for benchmark in ("market1501", "atustc"):  # evaluated on every benchmark, AT-USTC too
        metrics = json.loads((work / "results" / "metrics" / "baseline" / "seed0" / f"{benchmark}.json").read_text())
        assert metrics["settings"]["train_on"] == "market1501"
    table = pd.read_csv(work / "results" / "table.csv").set_index("variant")
    assert table.loc["baseline", "trained_on"] == "market1501" and table.loc["chance", "trained_on"] == "-"
    assert table["market1501:R1"].notna().all() and table["Any-Time_R1"].notna().all()
    dry = run(["snakemake", "-n", "results/table.csv"], work)
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # SAID needs clothes labels: its training job is refused with one line naming the variant.
    params["variants"]["full"] = {"ncls": 6, "said": True, "moae": True, "hdw": True}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = run(["snakemake", "--cores", "1", "models/full/seed0/model.pt"], work, check=False)
    assert refused.returncode != 0
    line = ("error: variant 'full' cannot train on market1501: said: true needs clothes labels (its short-term "
            "heads classify person-outfit classes) and market1501's training split has none (clothes -1)")
    log = (work / "logs" / "train" / "full" / "seed0.log").read_text()
    assert line in log, log
    assert line in refused.stdout + refused.stderr  # show-failed-logs (profiles/default)
    assert not (work / "models" / "full" / "seed0" / "model.pt").exists()
