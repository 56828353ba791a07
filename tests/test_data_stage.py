"""The data stage keeps the good copy when an import is refused (issue 15, item 5).

The prepare rules declare a manifest (data/<name>/prepared.json) as their output and build
the new copy beside the old one; install rules swap it in. Through Snakemake, a changed
archive is refused with one line while images/, index.csv and what follows stay as they
were, and the documented recovery (``rm data/<name>/source.json && snakemake ...``) works.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from atreid.cli import main
from tests.e2e import copy_tracked_files, jobs_of_dry_run, run

SYNTHETIC = {"seed": 0, "train_persons": 4, "test_persons": 3, "outfits": [2, 2], "dates": 2,
             "train_cameras_per_outfit": 2, "train_frames_per_clip": 2, "val_fraction": 0.2,
             "image_height": 32, "image_width": 16, "jpeg_quality": 90}


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


def zip_folder(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files_of(folder).items():
            zf.writestr(rel, data)
        for rel, data in (extra or {}).items():
            zf.writestr(rel, data)
    return archive


@pytest.fixture(scope="module")
def atustc_copy(tmp_path_factory) -> Path:
    """A small AT-USTC in the released layout (AT-USTC/<clip>/<frame>.jpg)."""
    from atreid.data.synthetic.atustc import generate_atustc

    folder = tmp_path_factory.mktemp("copy")
    generate_atustc(folder, workers=1, **SYNTHETIC)
    (folder / "synthetic_counts.json").unlink()
    return folder


# ---- the CLI steps ----------------------------------------------------------------

def prepare(source: Path, images: Path, manifest: Path) -> int:
    return main(["prepare-atustc", "--source", json.dumps({"source": str(source), "sha256": None}),
                 "--synthetic", "{}", "--out", str(images), "--manifest", str(manifest),
                 "--record", str(images.parent / "source.json")])


def test_prepare_stages_and_install_swaps(tmp_path, atustc_copy, capsys):
    images, manifest = tmp_path / "data" / "images", tmp_path / "data" / "prepared.json"
    first = zip_folder(atustc_copy, tmp_path / "first.zip")
    assert prepare(first, images, manifest) == 0
    assert not images.exists() and (tmp_path / "data" / ".images.staged" / "AT-USTC").is_dir()
    assert json.loads(manifest.read_text())["staged"] == ".images.staged"
    assert main(["install-images", "--manifest", str(manifest), "--out", str(images)]) == 0
    good = files_of(images)
    assert not (tmp_path / "data" / ".images.staged").exists()

    # A changed archive: refused in one line; no manifest, the installed copy untouched.
    changed = zip_folder(atustc_copy, tmp_path / "changed.zip", {"AT-USTC/extra.txt": b"new"})
    manifest.unlink()  # as Snakemake does before the job
    capsys.readouterr()
    assert prepare(changed, images, manifest) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {changed}: sha256 ") and "recorded in" in err
    assert not manifest.exists() and files_of(images) == good

    # Installing again without a staged copy: one line naming the fix.
    manifest.write_text(json.dumps({"staged": ".images.staged"}))
    assert main(["install-images", "--manifest", str(manifest), "--out", str(images)]) == 2
    assert "--forcerun prepare_atustc" in capsys.readouterr().err
    assert files_of(images) == good


def test_prepare_removes_its_stale_staging(tmp_path, atustc_copy):
    images, manifest = tmp_path / "data" / "images", tmp_path / "data" / "prepared.json"
    stale = [tmp_path / "data" / ".images.staged" / "AT-USTC" / "half.jpg",
             tmp_path / "data" / "..images.staged.abcd1234.partial" / "AT-USTC" / "x.jpg",
             tmp_path / "data" / ".images.abcd1234.partial" / "x.jpg"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert prepare(zip_folder(atustc_copy, tmp_path / "copy.zip"), images, manifest) == 0
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".images.staged", "prepared.json",
                                                                       "source.json"]


# ---- through Snakemake --------------------------------------------------------------

TARGET = "data/atustc/train_sampled.csv"


def snakemake(work: Path, check: bool = True):
    return run(["snakemake", "--cores", "1", TARGET], work, check=check)


def use_atustc_archive(work: Path, archive: Path) -> None:
    """Point the copy's params.yaml at ``archive`` (no count comparison, one frame per clip)."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["atustc"].update(source=str(archive), expected_counts="none", frames_per_clip=1,
                                    decode_workers=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_refused_import_under_snakemake_keeps_the_good_copy(tmp_path, atustc_copy):
    work = copy_tracked_files(tmp_path / "repo")
    archive = zip_folder(atustc_copy, tmp_path / "AT-USTC.zip")
    use_atustc_archive(work, archive)
    data = work / "data" / "atustc"

    snakemake(work)
    images, index, sampled = files_of(data / "images"), (data / "index.csv").read_bytes(), \
        (data / "train_sampled.csv").read_bytes()
    assert "AT-USTC/extra.txt" not in images

    # The user's archive changes: the import refuses it, and nothing of the good copy goes.
    zip_folder(atustc_copy, archive, {"AT-USTC/extra.txt": b"new"})
    for _ in range(2):  # the same answer on every rerun
        result = snakemake(work, check=False)
        assert result.returncode != 0, result.stderr[-3000:]
        log = (work / "logs" / "data" / "prepare_atustc.log").read_text().strip().splitlines()
        assert log[-1].startswith(f"error: {archive}: sha256 ") and "rm data/atustc/source.json" in log[-1]
        assert files_of(data / "images") == images
        assert (data / "index.csv").read_bytes() == index
        assert (data / "train_sampled.csv").read_bytes() == sampled
        assert not (data / "prepared.json").exists()

    # The documented recovery for a copy that changed on purpose: one command.
    run(["sh", "-c", f"rm data/atustc/source.json && snakemake --cores 1 {TARGET}"], work)
    assert files_of(data / "images")["AT-USTC/extra.txt"] == b"new"
    assert (data / "prepared.json").is_file() and not (data / ".images.staged").exists()
    assert run(["snakemake", "-n", "--cores", "1", TARGET], work).stdout.count("rule ") == 0


@pytest.mark.slow
def test_refused_benchmark_import_under_snakemake_keeps_the_good_copy(tmp_path):
    from atreid.data.benchmarks import get_benchmark
    from atreid.data.synthetic.miniatures import generate_miniature

    work = copy_tracked_files(tmp_path / "repo")
    copy = tmp_path / "copy"
    generate_miniature(get_benchmark("market1501"), copy, image_height=32, image_width=16)
    (copy / "synthetic_counts.json").unlink(missing_ok=True)
    archive = zip_folder(copy, tmp_path / "Market-1501.zip")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["benchmarks"] = {"market1501": {"source": str(archive), "expected_counts": "none"}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data, target = work / "data" / "market1501", "data/market1501/index.csv"

    run(["snakemake", "--cores", "1", target], work)
    images, index = files_of(data / "images"), (data / "index.csv").read_bytes()
    zip_folder(copy, archive, {"extra.txt": b"new"})
    result = run(["snakemake", "--cores", "1", target], work, check=False)
    assert result.returncode != 0
    log = (work / "logs" / "data" / "prepare_market1501.log").read_text().strip().splitlines()
    assert log[-1].startswith(f"error: {archive}: sha256 ") and "rm data/market1501/source.json" in log[-1]
    assert files_of(data / "images") == images and (data / "index.csv").read_bytes() == index
    run(["sh", "-c", f"rm data/market1501/source.json && snakemake --cores 1 {target}"], work)
    assert "extra.txt" in {Path(rel).name for rel in files_of(data / "images")}


@pytest.mark.slow
def test_fixed_source_after_a_corrupt_image_recovers_in_one_command(tmp_path, atustc_copy):
    """A copy with a corrupt JPEG imports but fails verification; the user fixes the
    archive; the documented command brings the pipeline back (issue: three manual steps)."""
    work = copy_tracked_files(tmp_path / "repo")
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(atustc_copy, broken)
    victim = sorted((broken / "AT-USTC").rglob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg at all")
    archive = zip_folder(broken, tmp_path / "AT-USTC.zip")
    use_atustc_archive(work, archive)
    data = work / "data" / "atustc"

    assert snakemake(work, check=False).returncode != 0
    log = (work / "logs" / "data" / "index_atustc.log").read_text().strip().splitlines()
    assert log[-1].startswith("error: ") and victim.name in log[-1], log
    zip_folder(atustc_copy, archive)  # the fixed copy
    assert snakemake(work, check=False).returncode != 0  # a different archive: refused
    assert "rm data/atustc/source.json" in (work / "logs" / "data" / "prepare_atustc.log").read_text()
    run(["sh", "-c", f"rm data/atustc/source.json && snakemake --cores 1 {TARGET}"], work)
    assert files_of(data / "images") == files_of(atustc_copy)
    assert (data / "train_sampled.csv").is_file()


@pytest.mark.slow  # over the fast tier's 5 s (a Snakemake or interpreter start-up)
def test_corrupt_image_in_a_folder_fixed_in_place_recovers_with_the_named_command(tmp_path, atustc_copy):
    """A folder source whose corrupt JPEG is fixed in place (the folder's time does not
    change, so Snakemake sees no change): the index step's message names the one command
    that imports the copy again, and that command, run as given, brings the pipeline back."""
    import shutil

    work = copy_tracked_files(tmp_path / "repo")
    source = tmp_path / "my AT-USTC"
    shutil.copytree(atustc_copy, source)
    victim = sorted((source / "AT-USTC").rglob("*.jpg"))[0]
    good = victim.read_bytes()
    victim.write_bytes(b"not a jpeg at all")
    use_atustc_archive(work, source)
    data = work / "data" / "atustc"

    assert snakemake(work, check=False).returncode != 0
    line = (work / "logs" / "data" / "index_atustc.log").read_text().strip().splitlines()[-1]
    assert line.startswith(f"error: data/atustc/images/AT-USTC/{victim.relative_to(source / 'AT-USTC')}: "
                           "unreadable or corrupt image ("), line
    assert f"fix it in your copy (data.atustc.source: {source}), then import it again: " in line
    command = line.split("then import it again: ")[1].split(" (with data.atustc.sha256 set")[0]
    assert command == ("rm -f data/atustc/source.json && snakemake --cores all --forcerun "
                       "data/atustc/prepared.json")

    victim.write_bytes(good)  # fixed at the source, in place
    assert snakemake(work, check=False).returncode != 0  # a plain rerun does not see the fix
    # The named command, with this test's target and core count in front of its options.
    run(["sh", "-c", command.replace("snakemake --cores all", f"snakemake {TARGET} --cores 1")], work)
    assert files_of(data / "images") == files_of(source)
    assert (data / "train_sampled.csv").is_file()
    assert run(["snakemake", "-n", "--cores", "1", TARGET], work).stdout.count("rule ") == 0


@pytest.mark.slow  # over the fast tier's 5 s (a Snakemake or interpreter start-up)
def test_archive_inside_the_images_folder_is_refused_before_anything_is_touched(tmp_path, atustc_copy):
    """Under the rules too (Snakemake would delete install_atustc's output folder, and the
    archive in it, before the job could refuse): the run stops while building the DAG."""
    work = copy_tracked_files(tmp_path / "repo")
    (work / "data" / "atustc" / "images").mkdir(parents=True)
    archive = zip_folder(atustc_copy, work / "data" / "atustc" / "images" / "AT-USTC.zip")
    use_atustc_archive(work, Path("data/atustc/images/AT-USTC.zip"))
    kept = archive.read_bytes()
    for args in (["-n"], []):
        result = run(["snakemake", "--cores", "1", *args, TARGET], work, check=False)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines()[-1] == (
            "error: data/atustc/images/AT-USTC.zip: lies inside data/atustc/images, which the import replaces; "
            "move your copy elsewhere and set data.atustc.source (in params.yaml) to its new place")
        assert archive.read_bytes() == kept
        assert sorted(p.name for p in (work / "data" / "atustc").iterdir()) == ["images"]
        assert [p.name for p in (work / "data" / "atustc" / "images").iterdir()] == ["AT-USTC.zip"]


@pytest.mark.slow  # over the fast tier's 5 s (a Snakemake or interpreter start-up)
def test_paper_preset_after_the_demo_refuses_then_imports_its_own_data(tmp_path, atustc_copy):
    """The issue's sequence: the demo's data stage, then the paper preset with an empty
    weights file and no AT-USTC archive. Before: `snakemake --configfile presets/paper.yaml
    -n` exited 0 planning the re-indexing of the synthetic images with the official counts."""
    work = copy_tracked_files(tmp_path / "repo")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["synthetic"] = dict(SYNTHETIC, seed=1)  # not the archive's images below
    params["data"]["atustc"].update(frames_per_clip=1, decode_workers=1)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data = work / "data" / "atustc"
    snakemake(work)  # the demo's data stage
    demo_images, demo_index = files_of(data / "images"), (data / "index.csv").read_bytes()
    (work / "data" / "raw" / "jx_vit_base_p16_224-80ecf9dd.pth").write_bytes(b"")
    def paper(*args: str) -> list[str]:  # --configfile takes every word after it: last
        return ["snakemake", "--cores", "1", *args, "--configfile", "presets/paper.yaml"]

    for target in ([], [TARGET]):
        result = run(paper("-n", *target), work, check=False)
        assert result.returncode != 0, result.stdout[-3000:]
        assert result.stderr.strip().splitlines()[-1] == (
            "error: data.atustc.source: data/raw/AT-USTC.zip not found (set in presets/paper.yaml): put your "
            "signed-release copy of AT-USTC (zip, tar, tar.gz or folder) there, or change data.atustc.source in "
            "presets/paper.yaml")
        assert "index_atustc" not in result.stdout

    # The index step by hand: the official counts refuse the synthetic images.
    by_hand = run(["atreid", "index-atustc", "--images", "data/atustc/images", "--expected", "official",
                   "--index", "x/index.csv", "--report", "x/v.json", "--report-txt", "x/v.txt"], work, check=False)
    assert by_hand.returncode == 2 and not (work / "x").exists()
    assert by_hand.stderr.strip().splitlines()[-1].endswith(
        "not the release whose official counts data.atustc.expected_counts names; check data.atustc.source, "
        "or set data.atustc.count_differences: warn to use this copy on purpose")

    # The archive in place: the preset imports it (its source changed), and its counts,
    # not the official ones, stop the index step until accepted on purpose.
    zip_folder(atustc_copy, work / "data" / "raw" / "AT-USTC.zip")
    dry = run(paper("-n", TARGET), work)
    assert jobs_of_dry_run(dry.stdout) == {"prepare_atustc": 1, "install_atustc": 1, "index_atustc": 1,
                                           "sample_frames": 1}
    assert run(paper(TARGET), work, check=False).returncode != 0
    log = (work / "logs" / "data" / "index_atustc.log").read_text().strip().splitlines()
    assert "data.atustc.count_differences: warn" in log[-1]
    assert files_of(data / "images") == files_of(atustc_copy)  # imported, but not indexed
    assert not (data / "index.csv").exists()
    run([*paper(TARGET), "--config", 'data={"atustc": {"count_differences": "warn"}}'], work)
    assert (data / "index.csv").read_bytes() != demo_index

    # Back to the demo: its synthetic copy is generated again, byte for byte.
    snakemake(work)
    assert files_of(data / "images") == demo_images and (data / "index.csv").read_bytes() == demo_index


def test_install_after_a_swap_killed_halfway(tmp_path):
    """install-images swaps with atreid.io.install_dir: killed between its two moves, the
    old copy waits aside (.previous); the next install puts it back first, then swaps."""
    data = tmp_path / "data"
    aside = data / ".images.k1ll3d00.previous"
    (aside / "old.jpg").parent.mkdir(parents=True)
    (aside / "old.jpg").write_bytes(b"old")
    (data / ".images.staged" / "new.jpg").parent.mkdir(parents=True)
    (data / ".images.staged" / "new.jpg").write_bytes(b"new")
    manifest = data / "prepared.json"
    manifest.write_text(json.dumps({"staged": ".images.staged"}))
    assert main(["install-images", "--manifest", str(manifest), "--out", str(data / "images")]) == 0
    assert sorted(p.name for p in (data / "images").iterdir()) == ["new.jpg"]
    assert sorted(p.name for p in data.iterdir()) == ["images", "prepared.json"]
