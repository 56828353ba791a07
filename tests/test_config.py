"""params.yaml validation: defaults, unknown keys, wrong types, presets, variants."""

from __future__ import annotations

import copy

import pytest
import yaml

from atreid.config import deep_merge, load_params, resolve_variant, typed_command_line_values, validate_params
from atreid.errors import AtreidError
from tests.conftest import REPO


@pytest.fixture
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_default_params_are_valid_and_defaults_filled(params):
    resolved = validate_params(params)
    assert resolved["data"]["atustc"]["frames_per_clip"] == 18
    assert resolved["eval"]["paper_results"] is False  # default filled in
    assert set(resolved["variants"]) >= {"full", "baseline", "ncls1"}


def test_unknown_key_is_named(params):
    params["train"]["epoch"] = 3
    with pytest.raises(AtreidError, match=r"unknown key 'train\.epoch'"):
        validate_params(params)


def test_nested_unknown_key_in_variant_is_named(params):
    params["variants"]["full"]["train"] = {"lrr": 0.1}
    with pytest.raises(AtreidError, match=r"variants\.full\.train\.lrr"):
        validate_params(params)


def test_wrong_type_is_named(params):
    params["train"]["epochs"] = "many"
    with pytest.raises(AtreidError, match=r"'train\.epochs'"):
        validate_params(params)


def test_frames_per_clip_accepts_all_but_not_other_strings(params):
    params["data"]["atustc"]["frames_per_clip"] = "all"
    validate_params(params)
    params["data"]["atustc"]["frames_per_clip"] = "some"
    with pytest.raises(AtreidError, match="frames_per_clip"):
        validate_params(params)


def test_moae_requires_six_tokens(params):
    params["variants"]["bad"] = {"ncls": 1, "said": False, "moae": True, "hdw": False}
    with pytest.raises(AtreidError, match="variants.bad"):
        validate_params(params)


def test_resolve_variant_merges_overrides(params):
    params["variants"]["full"]["train"] = {"epochs": 3}
    resolved = resolve_variant(validate_params(params), "full")
    assert resolved["train"]["epochs"] == 3
    assert resolved["train"]["lr"] == params["train"]["lr"]
    assert resolved["model"] == params["model"] | resolved["model"]
    baseline = resolve_variant(validate_params(params), "baseline")
    assert baseline["train"]["epochs"] == params["train"]["epochs"]
    with pytest.raises(AtreidError, match="valid variants"):
        resolve_variant(validate_params(params), "nope")


def test_load_params_merges_files_like_snakemake(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("train:\n  epochs: 2\n")
    merged = load_params(REPO / "params.yaml", override)
    assert merged["train"]["epochs"] == 2
    assert merged["train"]["lr"] > 0


def test_load_params_reports_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(AtreidError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(AtreidError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}}
    before = copy.deepcopy(base)
    assert deep_merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}}
    assert base == before


def test_apply_preset_keeps_comments_and_validates(tmp_path):
    import subprocess
    import sys

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    result = subprocess.run([sys.executable, "-m", "atreid", "apply-preset", str(REPO / "presets" / "paper.yaml"),
                             "--params", str(params)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    merged = load_params(params)
    assert merged["model"]["arch"] == "vit_base_uniat" and merged["train"]["epochs"] == 120
    assert set(merged["variants"]) == {"full", "baseline", "ncls1", "said", "said_moae", "said_hdw"}
    assert "# atreid parameters" in params.read_text()  # comments survive

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 1\n")
    before = params.read_text()
    result = subprocess.run([sys.executable, "-m", "atreid", "apply-preset", str(bad), "--params", str(params)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "train.epochz" in result.stderr
    assert params.read_text() == before  # nothing written


def test_chance_is_a_reserved_variant_name(params):
    params["variants"]["chance"] = {"ncls": 1, "said": False, "moae": False, "hdw": False}
    with pytest.raises(AtreidError, match=r"variants\.chance: the name 'chance' is reserved.*rename"):
        validate_params(params)


def test_nested_command_line_values_get_their_yaml_types(params):
    # What Snakemake's --config parser hands over for
    # --config 'train={"epochs": 2, "amp": none}' 'eval={"benchmarks": [atustc], "flip": true}'
    raw = {"train": {"epochs": "2", "lr": "0.5", "amp": "none", "clip_grad_norm": "null"},
           "eval": {"benchmarks": ["atustc"], "flip": "true"}, "model": {"image_size": ["256", "128"]}, "seed": 3}
    typed = typed_command_line_values(raw)
    assert typed == {"train": {"epochs": 2, "lr": 0.5, "amp": "none", "clip_grad_norm": None},
                     "eval": {"benchmarks": ["atustc"], "flip": True}, "model": {"image_size": [256, 128]}, "seed": 3}
    validate_params(deep_merge(params, typed))
    with pytest.raises(AtreidError, match="train.epochs"):
        validate_params(deep_merge(params, typed_command_line_values({"train": {"epochs": "two"}})))
