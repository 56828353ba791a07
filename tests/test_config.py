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
    resolved = resolve_variant(validate_params(params), "full", 0)
    assert resolved["train"]["epochs"] == 3
    assert resolved["train"]["lr"] == params["train"]["lr"]
    assert resolved["model"] == params["model"] | resolved["model"]
    baseline = resolve_variant(validate_params(params), "baseline", 0)
    assert baseline["train"]["epochs"] == params["train"]["epochs"]
    with pytest.raises(AtreidError, match="valid variants"):
        resolve_variant(validate_params(params), "nope", 0)


def test_resolve_variant_takes_the_runs_seed(params):
    params = validate_params(params)
    assert params["seeds"] == [0, 1]
    first, second = resolve_variant(params, "full", 0), resolve_variant(params, "full", 1)
    assert (first["seed"], second["seed"]) == (0, 1)
    assert {**first, "seed": 1} == second  # the seed is all that differs between two runs
    for bad in (-1, "1", True, None):
        with pytest.raises(AtreidError, match="non-negative integer"):
            resolve_variant(params, "full", bad)


def test_seeds_is_a_list_of_unique_non_negative_ints(params):
    for bad, match in (([], "seeds"), ([0, 0], "seeds"), ([-1], r"seeds\.0"), (3, "seeds"), (["a"], r"seeds\.0")):
        with pytest.raises(AtreidError, match=match):
            validate_params({**params, "seeds": bad})
    assert validate_params({k: v for k, v in params.items() if k != "seeds"})["seeds"] == [0]


def test_the_old_seed_key_is_refused_naming_seeds(params):
    params = {k: v for k, v in params.items() if k != "seeds"} | {"seed": 0}
    with pytest.raises(AtreidError) as info:
        validate_params(params, source="params.yaml")
    message = str(info.value)
    assert "\n" not in message and "'seed' was renamed to seeds" in message and "a list" in message


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
           "eval": {"benchmarks": ["atustc"], "flip": "true"}, "model": {"image_size": ["256", "128"]}, "seeds": ["3"]}
    typed = typed_command_line_values(raw)
    assert typed == {"train": {"epochs": 2, "lr": 0.5, "amp": "none", "clip_grad_norm": None},
                     "eval": {"benchmarks": ["atustc"], "flip": True}, "model": {"image_size": [256, 128]},
                     "seeds": [3]}
    validate_params(deep_merge(params, typed))
    with pytest.raises(AtreidError, match="train.epochs"):
        validate_params(deep_merge(params, typed_command_line_values({"train": {"epochs": "two"}})))


def test_duplicate_keys_are_refused_with_file_line_and_key(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n")
    with pytest.raises(AtreidError, match=r"dup\.yaml \(line 4\): duplicate key 'epochs'; give each key once"):
        load_params(REPO / "params.yaml", dup)
    # YAML merge keys may still be overridden by the mapping's own keys
    merged = tmp_path / "merge.yaml"
    merged.write_text("x: &a {epochs: 2}\ntrain:\n  <<: *a\n  epochs: 3\n")
    from atreid.config import read_yaml

    assert read_yaml(merged)["train"] == {"epochs": 3}


def test_bad_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\ntrain: [unclosed\n")
    with pytest.raises(AtreidError, match=r"bad\.yaml \(line 3\): not valid YAML"):
        load_params(bad)


def test_unregistered_benchmark_is_refused(params):
    from atreid.data.benchmarks import check_params_benchmarks

    params["eval"]["benchmarks"] = ["atustc", "market1502"]
    with pytest.raises(AtreidError, match=r"x\.yaml: eval\.benchmarks: unknown benchmark 'market1502'; valid: atustc, "):
        check_params_benchmarks(validate_params(params), "x.yaml")
    params["eval"]["benchmarks"] = ["atustc"]
    params["data"]["benchmarks"]["nope"] = {"source": "synthetic"}
    with pytest.raises(AtreidError, match=r"data\.benchmarks: unknown benchmark 'nope'"):
        check_params_benchmarks(validate_params(params), "x.yaml")


def test_check_params_refuses_an_unregistered_benchmark(tmp_path):
    import subprocess
    import sys

    override = tmp_path / "o.yaml"
    override.write_text("eval:\n  benchmarks: [atustc, market1502]\n")
    result = subprocess.run([sys.executable, "-m", "atreid", "check-params", str(REPO / "params.yaml"),
                             str(override)], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown benchmark 'market1502'" in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["chance", "Chance", "CHANCE"])
def test_reserved_variant_names_in_any_case(params, name):
    params["variants"][name] = {"ncls": 1, "said": False, "moae": False, "hdw": False}
    with pytest.raises(AtreidError, match=rf"variants\.{name}: the name '{name}' is reserved.*rename"):
        validate_params(params)


@pytest.mark.parametrize("key", ["data.dir", "data.atustc.source", "model.pretrained",
                                 "data.benchmarks.market1501.source", "variants.full.reference_checkpoint"])
@pytest.mark.parametrize("value", ["", "-rf", "a\nb", "a\x00b", "trailing\n"])
def test_unusable_paths_are_refused(params, key, value):
    *parents, last = key.split(".")
    target = params
    for part in parents:
        target = target[part]
    target[last] = value
    with pytest.raises(AtreidError, match=rf"'{key}'.*not a usable"):
        validate_params(params)


def test_odd_but_valid_paths_are_kept(params):
    params["data"]["dir"] = "my data $(touch X) \"q\""
    params["model"]["pretrained"] = "weights dir/vit b.pth 'q'"
    resolved = validate_params(params)
    assert resolved["data"]["dir"] == "my data $(touch X) \"q\""
    for folder in ("data{x}", "it's data"):  # braces: Snakemake wildcards; ': dvc.yaml quotes it in '...'
        params["data"]["dir"] = folder
        with pytest.raises(AtreidError, match="not a usable folder"):
            validate_params(params)


def test_checkpoint_every_default_and_variant_override(params):
    """Absent: the schema's 5 (the paper recipe's); a variant's override is not reset by it."""
    assert validate_params(params)["train"]["checkpoint_every"] == 1  # the demo's params.yaml
    del params["train"]["checkpoint_every"]
    params["variants"]["full"]["train"] = {"checkpoint_every": 2}
    resolved = validate_params(params)
    assert resolved["train"]["checkpoint_every"] == 5
    assert resolved["variants"]["baseline"].get("train", {}).get("checkpoint_every") is None
    assert resolve_variant(resolved, "full", 0)["train"]["checkpoint_every"] == 2
    assert resolve_variant(resolved, "baseline", 0)["train"]["checkpoint_every"] == 5
    params["train"]["checkpoint_every"] = 0
    with pytest.raises(AtreidError, match=r"train\.checkpoint_every"):
        validate_params(params)
