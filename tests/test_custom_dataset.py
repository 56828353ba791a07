"""Your own dataset (``custom``): a hand-made tree of JPEGs listed in atreid.csv goes through
the index, the verification and the evaluation with each protocol family; every bad table
stops with one line naming the file and the fix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from atreid.cli import main
from atreid.config import load_params, resolve_variant, validate_params
from atreid.data.benchmarks import benchmark_names, get_benchmark
from atreid.data.benchmarks.base import INDEX_COLUMNS
from atreid.errors import AtreidError
from atreid.data.protocols import PROTOCOL_FAMILIES, protocol_family
from tests.conftest import REPO, settings_file
from tests.test_miniatures import perfect_scores

FAMILIES = ("standard", "cross_modality", "clothes_changing")
MAIN = {"standard": "standard", "cross_modality": "both-directions", "clothes_changing": "cc"}
SETTINGS = {"batch_size": 32, "flip": False, "chunk_size": 64, "device": "cpu"}


def good_rows() -> list[dict[str, object]]:
    """26 images: persons 1-2 train, persons 3-5 test (RGB and IR query, two outfits in the gallery)."""
    rows: list[dict[str, object]] = []
    for person in (1, 2):
        for camera, modality in ((1, "rgb"), (2, "rgb"), (3, "ir"), (4, "ir")):
            rows.append({"path": f"train/{person:03d}_c{camera}.jpg", "person": person, "camera": camera,
                         "modality": modality, "clothes": 1, "split": "train"})
    for person in (3, 4, 5):
        for camera, modality in ((1, "rgb"), (3, "ir")):
            rows.append({"path": f"query/{person:03d}_c{camera}.jpg", "person": person, "camera": camera,
                         "modality": modality, "clothes": 1, "split": "query"})
        for camera, modality in ((2, "rgb"), (4, "ir")):
            for clothes in (1, 2):
                rows.append({"path": f"gallery/{person:03d}_c{camera}_o{clothes}.jpg", "person": person,
                             "camera": camera, "modality": modality, "clothes": clothes, "split": "gallery"})
    return rows


def write_dataset(folder: Path, rows: list[dict[str, object]] | None = None, *,
                  columns: tuple[str, ...] = INDEX_COLUMNS, skip_images: tuple[str, ...] = ()) -> Path:
    """Small JPEGs for every listed path (but ``skip_images``) and atreid.csv in ``folder``."""
    from PIL import Image

    rows = good_rows() if rows is None else rows
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        rel = str(row["path"])
        target = folder / rel
        if rel in skip_images or ".." in Path(rel).parts or Path(rel).is_absolute() or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shade = (int(str(row["person"])) * 40 % 256) if str(row["person"]).isdigit() else 128
        Image.new("RGB", (16, 32), (shade, 255 - shade, 60)).save(target, format="JPEG", quality=90)
    with open(folder / "atreid.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return folder


def cli(*args: object) -> int:
    return main([str(a) for a in args])


def index_dataset(images: Path, out: Path, *extra: object) -> int:
    return cli("index-benchmark", "--benchmark", "custom", "--images", images, "--expected", "none",
               "--index", out / "index.csv", "--report", out / "verification.json",
               "--report-txt", out / "verification.txt", *extra)


# ---- registry, schema --------------------------------------------------------------------
def test_custom_is_registered_with_the_schema_s_protocol_families():
    assert "custom" in benchmark_names()
    assert tuple(PROTOCOL_FAMILIES) == FAMILIES
    schema = yaml.safe_load((REPO / "atreid" / "schema" / "params.schema.yaml").read_text())
    assert tuple(schema["$defs"]["custom_source"]["properties"]["protocol"]["enum"]) == FAMILIES
    # The families are the release benchmarks' own builders, named.
    assert protocol_family("cross_modality", "custom").protocols[0].rule == get_benchmark("llcm").protocols.protocols[0].rule
    assert [p.rule for p in protocol_family("clothes_changing", "custom").protocols] == \
        [p.rule for p in get_benchmark("vc_clothes").protocols.protocols]
    assert protocol_family("standard", "custom").protocols[0].rule == get_benchmark("market1501").protocols.protocols[0].rule
    with pytest.raises(AtreidError, match="unknown protocol 'v2i' for custom; valid: standard, cross_modality, "
                                          "clothes_changing"):
        protocol_family("v2i", "custom")


@pytest.mark.parametrize(("entry", "message"), [
    ({"source": "data/raw/mine", "protocol": "crossmodal"},
     r"wrong value for 'data.benchmarks.custom.protocol': 'crossmodal' \(expected \['standard', "
     r"'cross_modality', 'clothes_changing'\]\)"),
    ({"source": "synthetic"}, r"'data.benchmarks.custom.source': 'synthetic' \(your own dataset has no "
                              r"synthetic miniature: give the folder or archive holding atreid.csv\)"),
    ({"protocol": "standard"}, r"missing key in 'data.benchmarks.custom': 'source' is a required property"),
], ids=["unknown-protocol", "synthetic-source", "no-source"])
def test_params_refuse_bad_custom_entries(entry, message):
    params = load_params(REPO / "params.yaml")
    params["data"]["benchmarks"]["custom"] = entry
    with pytest.raises(AtreidError, match=message):
        validate_params(params, source="params.yaml")


def test_params_fill_the_custom_defaults_and_leave_the_demo_alone():
    params = load_params(REPO / "params.yaml")
    assert "custom" not in params["data"]["benchmarks"] and "custom" not in params["eval"]["benchmarks"]
    params["data"]["benchmarks"]["custom"] = {"source": "data/raw/mine"}
    filled = validate_params(params, source="params.yaml")["data"]["benchmarks"]["custom"]
    assert filled == {"source": "data/raw/mine", "sha256": None, "expected_counts": "none", "protocol": "standard",
                      "count_differences": "error"}


def test_prepare_refuses_a_synthetic_custom_dataset(tmp_path, capsys):
    code = cli("prepare-benchmark", "--benchmark", "custom", "--source", '{"source": "synthetic"}',
               "--out", tmp_path / "images", "--record", tmp_path / "source.json")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no synthetic miniature for 'custom'; set data.benchmarks.custom.source to your copy" in err


# ---- the good case ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """data/custom/images/custom/{atreid.csv, train/, query/, gallery/} as an import leaves it."""
    root = tmp_path_factory.mktemp("custom")
    write_dataset(root / "data" / "custom" / "images" / "custom")
    return root


def test_index_and_verification_of_the_good_table(dataset, tmp_path):
    out = tmp_path / "out"
    assert index_dataset(dataset / "data" / "custom" / "images", out, "--protocol", "cross_modality") == 0
    index = pd.read_csv(out / "index.csv", keep_default_na=False)
    expected = pd.DataFrame(good_rows()).sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(index, expected, check_dtype=False)
    report = json.loads((out / "verification.json").read_text())
    assert report["benchmark"] == "custom" and report["protocol"] == "cross_modality"
    assert report["statistics"]["train"] == {"ids": 2, "images": 8, "cameras": 4, "rgb_images": 4, "ir_images": 4,
                                             "outfits": 2, "person_cameras": 8}
    assert report["statistics"]["test"]["ids"] == 3 and report["statistics"]["query"]["images"] == 6
    assert report["statistics"]["gallery"]["outfits"] == 6 and report["statistics"]["all"]["images"] == 26
    assert report["decoded"] and report["warnings"] == [] and report["expected"] == {}
    assert "Custom dataset verification" in (out / "verification.txt").read_text()


def test_the_dataset_s_own_counts_are_compared(tmp_path):
    folder = write_dataset(tmp_path / "images" / "mine")
    adapter = get_benchmark("custom")
    with pytest.raises(AtreidError, match=r"atreid_counts.json: missing; data.benchmarks.custom.expected_counts "
                                          r"is 'official' .* write that file or set expected_counts: none"):
        adapter.verify(tmp_path / "images", expected="official")
    (folder / "atreid_counts.json").write_text(json.dumps({"train": {"ids": 2, "images": 8}, "query": {"images": 7}}))
    _, report = get_benchmark("custom").verify(tmp_path / "images", expected="official")
    assert [(d["group"], d["field"], d["actual"]) for d in report["count_differences"]] == [("query", "images", 6)]
    assert report["warnings"] == ["query images: 6 (expected 7, tolerance 2%)"]
    (folder / "atreid_counts.json").write_text(json.dumps({"tset": {"ids": 3}}))
    with pytest.raises(AtreidError, match=r"atreid_counts.json: unknown group 'tset'; valid: train, query, gallery"):
        get_benchmark("custom").verify(tmp_path / "images", expected="official")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_protocol_of_each_family_scores_perfect_features(dataset, family):
    """With one direction per person every valid query ranks a positive first."""
    adapter = get_benchmark("custom")
    adapter.protocol = family
    index, _ = adapter.verify(dataset / "data" / "custom" / "images")
    spec = protocol_family(family, "custom")
    results = perfect_scores(index, spec)
    assert spec.main == MAIN[family] and MAIN[family] in results
    for protocol in spec.protocols:
        for trial in results[protocol.name]["trials"]:
            assert trial["num_valid"] == 3 and trial["R1"] == pytest.approx(100.0), (protocol.name, trial)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny random model (as tests/test_evaluate_runs.py)."""
    from atreid.engine.checkpoint import model_from_settings, save_trained_model

    settings = resolve_variant(load_params(REPO / "params.yaml"), "full", 0)
    settings["model"].update({"image_size": [64, 32], "pretrained": "none"})
    labels = {"persons": [1, 2, 3], "outfits": [[1, 1], [2, 1], [3, 1]], "outfit_to_person": [0, 1, 2]}
    torch.manual_seed(0)
    model = model_from_settings(settings, 3, 3)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_trained_model(path, model=model, settings=settings, labels=labels, epoch=1)
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_scores_the_recorded_family(dataset, model_path, tmp_path, family):
    data = dataset / "data"
    assert index_dataset(data / "custom" / "images", data / "custom", "--protocol", family) == 0
    out = tmp_path / "custom.json"
    assert cli("evaluate", "--model", model_path, "--benchmark", "custom", "--data-dir", data,
               "--settings", settings_file(tmp_path / "eval.json", SETTINGS), "--cache-dir", tmp_path / "cache", "--out", out) == 0
    metrics = json.loads(out.read_text())
    assert metrics["main_protocol"] == MAIN[family]
    assert set(metrics["protocols"]) == {p.name for p in protocol_family(family, "custom").protocols} | \
        set(protocol_family(family, "custom").combined)
    assert metrics["summary"]["R1"] is not None and 0 <= metrics["summary"]["mAP"] <= 100


# ---- bad tables: one line naming the file and the fix ---------------------------------------------
def rows_with(change) -> list[dict[str, object]]:
    rows = good_rows()
    change(rows)
    return rows


def set_field(position: int, **values: object):
    def change(rows: list[dict[str, object]]) -> None:
        rows[position].update(values)
    return change


def bad_verify(tmp_path: Path, rows: list[dict[str, object]], *, protocol: str = "standard", **kw) -> str:
    folder = write_dataset(tmp_path / "images" / "mine", rows, **kw)
    adapter = get_benchmark("custom")
    adapter.protocol = protocol
    with pytest.raises(AtreidError) as caught:
        adapter.verify(tmp_path / "images")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(folder / "atreid.csv")) or message.startswith("data.benchmarks.custom"), message
    return message


def test_missing_columns(tmp_path):
    message = bad_verify(tmp_path, good_rows(), columns=("path", "person", "modality", "clothes"))
    assert message.endswith("atreid.csv: missing column(s) camera, split; the header row must name path, person, "
                            "camera, modality, clothes, split (other columns are ignored)")


def test_unknown_split_name(tmp_path):
    message = bad_verify(tmp_path, rows_with(set_field(9, split="test")))
    assert message.endswith("atreid.csv:11: split 'test' unknown; write train, query, gallery")


def test_bad_modality(tmp_path):
    message = bad_verify(tmp_path, rows_with(set_field(2, modality="thermal")))
    assert message.endswith("atreid.csv:4: modality 'thermal' unknown; write rgb or ir")


@pytest.mark.parametrize(("column", "value", "message"), [
    ("person", "p7", "atreid.csv:3: person 'p7' is not a whole number; person ids must be whole numbers"),
    ("camera", "2.5", "atreid.csv:3: camera '2.5' is not a whole number; camera ids must be whole numbers"),
    ("clothes", "red", "atreid.csv:3: clothes 'red' is not a whole number; clothes ids must be whole numbers "
                       "(-1 or empty: unknown)"),
    ("person", -3, "atreid.csv:3: person -3 is below 0; person ids must be 0 or more"),
])
def test_non_integer_ids(tmp_path, column, value, message):
    assert bad_verify(tmp_path, rows_with(set_field(1, **{column: value}))).endswith(message)


def test_images_not_found_names_the_first_and_the_count(tmp_path):
    message = bad_verify(tmp_path, good_rows(), skip_images=("query/004_c1.jpg", "gallery/005_c2_o1.jpg"))
    folder = tmp_path / "images" / "mine"
    assert message == (f"{folder / 'atreid.csv'}: 2 listed image(s) not found, the first "
                       f"{folder / 'query/004_c1.jpg'} (line 16); fix the paths (relative to {folder}) "
                       "or remove those rows")


def test_person_in_train_and_test(tmp_path):
    def change(rows):
        for row in rows:
            if row["person"] == 4:
                row["person"] = 1 if row["split"] == "query" else 4
    message = bad_verify(tmp_path, rows_with(change))
    assert message.endswith("atreid.csv:16: person 1 is in train and in query (1 such person) (and 1 more row); "
                            "a person is in train or in the test splits (query, gallery), never both: move their "
                            "rows or give them another id")


@pytest.mark.parametrize("split", ["query", "gallery"])
def test_empty_query_or_gallery(tmp_path, split):
    rows = [r for r in good_rows() if r["split"] != split]
    message = bad_verify(tmp_path, rows)
    assert message.endswith(f"atreid.csv: no {split} rows; the evaluation needs query and gallery rows "
                            "(persons not in train)")


def test_duplicate_paths(tmp_path):
    message = bad_verify(tmp_path, rows_with(lambda rows: rows.append(dict(rows[3]))))
    assert message.endswith("atreid.csv:28: path 'train/001_c4.jpg' listed twice (first on line 5); "
                            "list each image once")


@pytest.mark.parametrize(("path", "why"), [
    ("/etc/passwd", "is absolute"),
    ("../outside.jpg", "leaves the dataset folder (..)"),
    ("train/../../outside.jpg", "leaves the dataset folder (..)"),
    ("C:\\images\\a.jpg", "is absolute"),
])
def test_unsafe_paths(tmp_path, path, why):
    message = bad_verify(tmp_path, rows_with(set_field(5, path=path)))
    assert message.endswith(f"atreid.csv:7: path {path!r} {why}; write each path relative to the folder "
                            "holding atreid.csv, without '..'")


def test_cross_modality_needs_both_modalities(tmp_path):
    rows = [r for r in good_rows() if r["modality"] == "rgb"]
    message = bad_verify(tmp_path, rows, protocol="cross_modality")
    assert message.endswith("atreid.csv: protocol cross_modality (IR->RGB) finds no queries (split query, "
                            "modality ir); add such rows or choose another protocol "
                            "(data.benchmarks.custom.protocol)")


def test_clothes_changing_needs_the_clothes_of_queries_and_gallery(tmp_path):
    message = bad_verify(tmp_path, rows_with(set_field(8, clothes="")), protocol="clothes_changing")
    assert message.endswith("atreid.csv:10: clothes unknown (-1) for 'query/003_c1.jpg', one of protocol "
                            "clothes_changing's queries; give every query and gallery image its clothes id, "
                            "or choose protocol standard (data.benchmarks.custom.protocol)")
    # The standard protocol does not need them.
    folder = tmp_path / "images"
    adapter = get_benchmark("custom")
    index, _ = adapter.verify(folder)
    assert index.loc[index["path"] == "query/003_c1.jpg", "clothes"].item() == -1


def test_unknown_protocol_on_the_command_line(dataset, tmp_path, capsys):
    assert index_dataset(dataset / "data" / "custom" / "images", tmp_path, "--protocol", "crossmodal") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: data.benchmarks.custom.protocol: unknown protocol 'crossmodal' for custom; valid: "
                   "standard, cross_modality, clothes_changing; fix it in params.yaml")
    assert not (tmp_path / "index.csv").exists()


# ---- through the workflow ---------------------------------------------------------------------
@pytest.mark.slow
def test_workflow_imports_indexes_and_plans_the_evaluation_of_a_custom_dataset(tmp_path):
    """prepare_benchmark (folder import) -> install_benchmark -> index_custom for real, then
    the evaluation's plan; a changed protocol redoes the index; custom without a source stops."""
    from tests.e2e import copy_tracked_files, jobs_of_dry_run, run

    work = copy_tracked_files(tmp_path / "work")
    write_dataset(work / "data" / "raw" / "mine")

    def custom(protocol: str) -> str:
        return f'data={{"benchmarks": {{"custom": {{"source": "data/raw/mine", "protocol": "{protocol}"}}}}}}'

    evaluate = 'eval={"benchmarks": [atustc, custom]}'
    run(["snakemake", "--cores", "1", "data/custom/index.csv", "--config", custom("cross_modality")], work)
    report = json.loads((work / "data" / "custom" / "verification.json").read_text())
    assert report["protocol"] == "cross_modality" and report["statistics"]["all"]["images"] == 26
    assert (work / "data" / "custom" / "images" / "custom" / "atreid.csv").is_file()
    assert json.loads((work / "data" / "custom" / "source.json").read_text())["kind"] == "folder"

    plan = run(["snakemake", "-n", "results/metrics/full/seed0/custom.json", "--config",
                custom("cross_modality"), evaluate], work)
    jobs = jobs_of_dry_run(plan.stdout)
    assert jobs["evaluate_run"] == 1 and "index_custom" not in jobs and "prepare_benchmark" not in jobs
    plan = run(["snakemake", "-n", "data/custom/index.csv", "--config", custom("clothes_changing")], work)
    assert jobs_of_dry_run(plan.stdout) == {"index_custom": 1}

    refused = run(["snakemake", "-n", "--config", evaluate], work, check=False)
    assert refused.returncode != 0
    assert ("error: eval.benchmarks lists custom, but data.benchmarks.custom is not set; set its source to your "
            "folder or archive holding atreid.csv") in refused.stderr + refused.stdout
