"""The data stage cannot silently use the wrong data, nor lose the user's copy (issue 23,
items 4 and 6), tested on the package's steps without Snakemake (fast):

- a user file a setting names (AT-USTC's source, the pretrained weights) that is missing
  is one line naming the setting and the params file that set it (a preset, --config or
  params.yaml), unless the installed copy was imported from it (the archive may go once
  imported); a source inside a folder its import replaces is refused;
- prepare-atustc/-benchmark refuse such a source before anything is deleted, and
  install-images refuses a manifest naming one;
- with the official counts, a count difference is an error with nothing written, unless
  count_differences is warn (AT-USTC and the cross-dataset benchmarks alike);
- a corrupt image names the one command that prepares the copy again;
- a params file that is empty or a list gets one line naming it, from `atreid
  check-params` and from the workflow's check alike.
"""

from __future__ import annotations

import json
import shlex
import zipfile
from pathlib import Path

import pytest
import yaml

from atreid.cli import main
from atreid.errors import AtreidError
from atreid.workflow import check_params_files, setting_origin, user_file_input

SYNTHETIC = {"seed": 0, "train_persons": 3, "test_persons": 2, "outfits": [2, 2], "dates": 2,
             "train_cameras_per_outfit": 2, "train_frames_per_clip": 2, "val_fraction": 0.2,
             "image_height": 32, "image_width": 16, "jpeg_quality": 90}


def last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# ---- which params file set a key ------------------------------------------------------

def test_setting_origin_follows_snakemakes_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "paper.yaml").write_text("data:\n  atustc:\n    source: data/raw/AT-USTC.zip\n")
    (tmp_path / "other.yaml").write_text("model:\n  arch: vit_base_uniat\n")
    files = [tmp_path / "presets" / "paper.yaml", "other.yaml"]
    assert setting_origin("data.atustc.source", files, {}) == "presets/paper.yaml"
    assert setting_origin("model.pretrained", files, {}) == "params.yaml"
    assert setting_origin("data.atustc.source", files, {"data": {"atustc": {"source": "x"}}}) == "--config"
    assert setting_origin("data.atustc.source", [], {"data": {"dir": "d"}}) == "params.yaml"
    # The later --configfile wins, as in Snakemake.
    (tmp_path / "other.yaml").write_text("data:\n  atustc:\n    source: mine.zip\n")
    assert setting_origin("data.atustc.source", files, {}) == "other.yaml"


# ---- a user file named by a setting ---------------------------------------------------

WHAT = "your signed-release copy of AT-USTC"


def test_missing_user_file_is_one_line_naming_the_key_and_its_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AtreidError) as info:
        user_file_input("data/raw/AT-USTC.zip", "data.atustc.source", WHAT, origin="presets/paper.yaml")
    assert str(info.value) == ("data.atustc.source: data/raw/AT-USTC.zip not found (set in presets/paper.yaml): "
                               f"put {WHAT} there, or change data.atustc.source in presets/paper.yaml")
    # Keywords and URLs are no files; a present file is the rule's input.
    for keyword in ("synthetic", "hub", "none", "https://example.org/AT-USTC.zip"):
        assert user_file_input(keyword, "k", WHAT, origin="params.yaml") == []
    Path("here.zip").write_bytes(b"x")
    assert user_file_input("here.zip", "k", WHAT, origin="params.yaml") == ["here.zip"]


def test_missing_archive_already_imported_keeps_the_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "prepared.json"
    warnings: list[str] = []
    manifest.write_text(json.dumps({"source": "synthetic", "staged": ".images.staged"}))
    with pytest.raises(AtreidError, match="not found"):  # the copy there is another one
        user_file_input("gone.zip", "data.atustc.source", WHAT, origin="params.yaml", manifest=manifest)
    manifest.write_text(json.dumps({"source": "gone.zip", "staged": ".images.staged"}))
    assert user_file_input("gone.zip", "data.atustc.source", WHAT, origin="params.yaml", manifest=manifest,
                           warn=warnings.append) == ["gone.zip"]
    assert warnings == [f"data.atustc.source: gone.zip not found; keeping the copy imported from it earlier "
                        f"({manifest})"]


@pytest.mark.parametrize("inside", ["images/AT-USTC.zip", ".images.staged/AT-USTC.zip", "images"])
def test_user_file_inside_a_replaced_folder_is_refused(tmp_path, monkeypatch, inside):
    from atreid.commands.data import replaced_folders

    monkeypatch.chdir(tmp_path)
    source = f"data/atustc/{inside}"
    with pytest.raises(AtreidError) as info:
        user_file_input(source, "data.atustc.source", WHAT, origin="params.yaml",
                        replaced=replaced_folders("data/atustc/images"))
    assert str(info.value).startswith(f"{source}: lies inside data/atustc/")
    assert str(info.value).endswith("which the import replaces; move your copy elsewhere and set "
                                    "data.atustc.source (in params.yaml) to its new place")
    # Beside images/ is not inside it.
    tiny_zip(Path("data/atustc/AT-USTC.zip"))
    assert user_file_input("data/atustc/AT-USTC.zip", "k", WHAT, origin="params.yaml",
                           replaced=replaced_folders("data/atustc/images")) == ["data/atustc/AT-USTC.zip"]


# ---- the prepare and install steps refuse such a source before touching anything -----

def tiny_zip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("AT-USTC/p001-d01-c01/cam01-f0-0000.jpg", b"not read: refused before")
    return path


def prepare_args(command: str, source: Path, images: Path) -> list[str]:
    args = [command, "--source", json.dumps({"source": str(source), "sha256": None}), "--synthetic", "{}",
            "--out", str(images), "--manifest", str(images.parent / "prepared.json"),
            "--record", str(images.parent / "source.json")]
    return args + (["--benchmark", "market1501"] if command == "prepare-benchmark" else [])


@pytest.mark.parametrize("command,key", [("prepare-atustc", "data.atustc.source"),
                                         ("prepare-benchmark", "data.benchmarks.market1501.source")])
@pytest.mark.parametrize("inside", ["images", ".images.staged", "..images.staged.abcd1234.partial", ".images.abcd1234.partial"])
def test_prepare_refuses_a_source_in_a_folder_it_replaces(tmp_path, capsys, command, key, inside):
    data = tmp_path / "data" / "x"
    images = data / "images"
    (images / "AT-USTC").mkdir(parents=True)
    (images / "AT-USTC" / "kept.jpg").write_bytes(b"the installed copy")
    archive = tiny_zip(data / inside / "AT-USTC.zip")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert main(prepare_args(command, archive, images)) == 2
    assert last_error(capsys) == (f"error: {archive}: lies inside {data / inside}, which the import replaces; "
                                  f"move your copy elsewhere and set {key} to its new place")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_install_refuses_a_manifest_whose_source_lies_in_its_folder(tmp_path, capsys):
    images = tmp_path / "images"
    archive = tiny_zip(images / "AT-USTC.zip")
    (tmp_path / ".images.staged" / "AT-USTC").mkdir(parents=True)
    manifest = tmp_path / "prepared.json"
    manifest.write_text(json.dumps({"source": str(archive), "staged": ".images.staged"}))
    assert main(["install-images", "--manifest", str(manifest), "--out", str(images)]) == 2
    assert last_error(capsys).startswith(f"error: {archive}: lies inside {images}, which the import replaces")
    assert archive.is_file() and (tmp_path / ".images.staged" / "AT-USTC").is_dir()


# ---- official counts: a difference is an error unless accepted ------------------------

@pytest.fixture(scope="module")
def synthetic_atustc(tmp_path_factory) -> Path:
    from atreid.data.synthetic.atustc import generate_atustc

    images = tmp_path_factory.mktemp("atustc") / "images"
    generate_atustc(images, workers=1, **SYNTHETIC)
    return images


def index_args(images: Path, out: Path, *extra: str, command: str = "index-atustc") -> list[str]:
    return [command, "--images", str(images), "--workers", "0", "--index", str(out / "index.csv"),
            "--report", str(out / "verification.json"), "--report-txt", str(out / "verification.txt"), *extra]


def test_official_count_differences_stop_the_index_step(synthetic_atustc, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(index_args(synthetic_atustc, out, "--expected", "official")) == 2
    assert last_error(capsys) == (
        f"error: {synthetic_atustc}: train ids: 3 (expected 135) (and 5 more): not the release whose official "
        "counts data.atustc.expected_counts names; check data.atustc.source, or set "
        "data.atustc.count_differences: warn to use this copy on purpose")
    assert not out.exists()
    # Accepted on purpose: the differences are the report's warnings, as before.
    assert main(index_args(synthetic_atustc, out, "--expected", "official", "--count-differences", "warn")) == 0
    report = json.loads((out / "verification.json").read_text())
    assert "train ids: 3 (expected 135)" in report["warnings"] and len(report["count_differences"]) == 6
    # The generator's own counts match: nothing to refuse.
    assert main(index_args(synthetic_atustc, tmp_path / "syn", "--expected", "synthetic")) == 0


def test_official_count_differences_stop_a_benchmark_index(tmp_path, capsys):
    from atreid.data.benchmarks import get_benchmark
    from atreid.data.synthetic.miniatures import generate_miniature

    images = tmp_path / "market1501" / "images"
    generate_miniature(get_benchmark("market1501"), images, image_height=32, image_width=16)
    out = tmp_path / "out"
    args = index_args(images, out, "--benchmark", "market1501", command="index-benchmark")
    assert main(args) == 2  # --expected official is index-benchmark's default
    err = last_error(capsys)
    assert err.startswith(f"error: {images}: ") and err.endswith(
        "not the release whose official counts data.benchmarks.market1501.expected_counts names; check "
        "data.benchmarks.market1501.source, or set data.benchmarks.market1501.count_differences: warn to use "
        "this copy on purpose")
    assert not out.exists()
    assert main([*args, "--count-differences", "warn"]) == 0 and (out / "index.csv").is_file()


# ---- a corrupt image names the command that prepares the copy again ------------------

@pytest.mark.parametrize("source", ["synthetic", "/copies/AT-USTC", None])
def test_corrupt_image_names_the_reimport(tmp_path, capsys, synthetic_atustc, source):
    import shutil

    data = tmp_path / "data dir" / "atustc"
    images = data / "images"
    shutil.copytree(synthetic_atustc, images)
    victim = sorted((images / "AT-USTC").rglob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    if source is not None:
        (data / "prepared.json").write_text(json.dumps({"source": source, "staged": ".images.staged"}))
    assert main(index_args(images, tmp_path / "out", "--expected", "synthetic", "--workers", "1")) == 2
    err = last_error(capsys)
    assert err.startswith(f"error: {victim}: unreadable or corrupt image (")
    rerun = f"snakemake --cores all --forcerun {shlex.quote(str(data / 'prepared.json'))}"
    fix = {"synthetic": f"; generate it again: {rerun}",
           "/copies/AT-USTC": f"; fix it in your copy (data.atustc.source: /copies/AT-USTC), then import "
                              f"it again: rm -f {shlex.quote(str(data / 'source.json'))} && {rerun} (with "
                              "data.atustc.sha256 set, set it to the fixed copy's)",
           None: "; re-extract the dataset or replace the file"}[source]
    assert err.endswith(fix), err
    assert not (tmp_path / "out").exists()


# ---- params files that hold no mapping -------------------------------------------------

@pytest.mark.parametrize("text,what", [("", "empty"), ("- a\n- b\n", "holds a list"), ("3\n", "holds a number")])
def test_params_file_without_a_mapping_is_one_line_naming_it(tmp_path, monkeypatch, capsys, text, what):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(text)
    line = (f"error: params.yaml: {what}; expected a mapping of settings at the top level (key: value lines, "
            "as in the repository's params.yaml); fix the file")
    assert main(["check-params"]) == 2
    assert last_error(capsys) == line
    with pytest.raises(SystemExit) as info:
        check_params_files(["params.yaml"])
    assert info.value.code == line
    # A preset that is empty is refused the same way (Snakemake refuses it too).
    Path("good.yaml").write_text(yaml.safe_dump({"seeds": [0]}))
    Path("preset.yaml").write_text(text)
    with pytest.raises(SystemExit) as info:
        check_params_files(["good.yaml", "preset.yaml"])
    assert info.value.code.startswith(f"error: preset.yaml: {what}; ")


def test_incomplete_copy_names_the_reimport_too(tmp_path, capsys, synthetic_atustc):
    import shutil

    data = tmp_path / "atustc"
    shutil.copytree(synthetic_atustc, data / "images")
    for image in (data / "images" / "AT-USTC").rglob("*-f9-*.jpg"):
        image.unlink()
    (data / "prepared.json").write_text(json.dumps({"source": "/copies/AT-USTC.zip", "staged": ".images.staged"}))
    assert main(index_args(data / "images", tmp_path / "out", "--expected", "none")) == 2
    assert last_error(capsys) == (
        f"error: {data / 'images' / 'AT-USTC'}: empty or missing split: flag 9 (NT-LT gallery); the copy is "
        "incomplete; fix it in your copy (data.atustc.source: /copies/AT-USTC.zip), then import it again: "
        f"rm -f {data / 'source.json'} && snakemake --cores all --forcerun {data / 'prepared.json'} (with "
        "data.atustc.sha256 set, set it to the fixed copy's)")
