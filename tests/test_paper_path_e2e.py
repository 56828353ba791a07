"""End to end: the paper's own path, `--configfile presets/paper.yaml`, through Snakemake on CPU.

Everything the preset says runs as it says: import of an AT-USTC archive at the preset's
path with ``expected_counts: official``, a timm-format ViT-B/16 weights file at the
preset's path (``jx_vit_base_p16_224-80ecf9dd.pth``; here a randomly initialised timm
``vit_base_patch16_224.orig_in21k_ft_in1k`` saved as timm saves it), ``vit_base_uniat``
at 256x128 with drop-path 0.2, Nesterov SGD with the 10x group, warm-up, random
erasing, eight DataLoader workers, and the paper columns in the table. Only the sizes
that decide the run time are shrunk, and only with ``--config`` (as a user would):
epochs, iterations, batch, and the benchmark list (AT-USTC only); and, since the archive is not
the release, its count differences are accepted on purpose (``count_differences: warn``). A ViT-B/16 feature
costs about 0.3 s of one CPU core, so each of the paper's five cross-dataset benchmarks
would add about a minute a variant for no new code path: the tiny pipeline evaluates
Market-1501 (tests/test_workflow_e2e.py), and tests/test_report.py checks the published
cross-dataset numbers beside ours and the five-benchmark average.

Two of the preset's six variants are trained: ``full`` (six CLS tokens, MoAE, SAID, HDW)
and ``ncls1`` (one CLS token, the plain MLP, no SAID): between them every ViT-B shape and
parameter group the other four have (``baseline``, ``said``, ``said_hdw``, ``said_moae``
differ from these in loss switches only, which the tiny pipeline and the unit tests run).
The preset's own file, its variants cut to those two (and params.yaml's likewise:
Snakemake merges the two files' variants), is the run's one configfile; a dry run of the
preset as it is plans all six first (each ablation's published numbers beside ours are
checked in tests/test_report.py). The overlapping-patches option (stride 12, a
21x10 grid) is checked in-process with the same weights file and recipe.

The dataset is a small synthetic AT-USTC in the release layout, zipped, with two test
persons (every scenario's queries and galleries; each ViT-B feature of a test image costs
about 0.3 s of CPU in the evaluations and the search page). One training step a variant.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from atreid.constants import SCENARIOS
from tests.e2e import copy_tracked_files, jobs_of_dry_run, run

PAPER_VARIANTS = ("baseline", "full", "ncls1", "said", "said_hdw", "said_moae")
TRAINED = ("full", "ncls1")  # of PAPER_VARIANTS, the two that the run trains (module docstring)
PRESET = "presets/paper.yaml"
TWO_VARIANTS = "paper_two_variants.yaml"  # the preset with its variants cut to TRAINED
SHRINK = [
    'train={"epochs": 1, "iters_per_epoch": 1, "batch_p": 2, "batch_k": 2}',
    'eval={"benchmarks": [atustc]}',
    # The miniature is not the release the official counts describe: used on purpose.
    'data={"atustc": {"count_differences": "warn"}}',
]
WEIGHTS = "data/raw/jx_vit_base_p16_224-80ecf9dd.pth"
ARCHIVE = "data/raw/AT-USTC.zip"
PERSONS, OUTFITS = 4, 8  # training identities and person-outfit classes of the archive below
# Test identities: each ViT-B feature costs ~0.3 s of a CPU core, and the evaluations and the
# search page extract every test image (48 a person); two persons give every scenario its
# queries and galleries (the clips per person are the same whatever the count).
TEST_PERSONS = 2


def paper_snakemake(*args: str, configfile: str = TWO_VARIANTS) -> list[str]:
    return ["snakemake", "--cores", "2", "--configfile", configfile, "--config", *SHRINK, *args]


def write_two_variant_preset(work: Path) -> None:
    """The preset, verbatim but for its variants: ``TRAINED`` only. Snakemake merges a
    configfile over params.yaml and cannot remove a variant that either lists, so this file
    replaces the preset, and params.yaml's variants are cut to ``TRAINED`` likewise."""
    import yaml

    preset = yaml.safe_load((work / PRESET).read_text())
    assert sorted(preset["variants"]) == sorted(PAPER_VARIANTS)
    preset["variants"] = {name: preset["variants"][name] for name in TRAINED}
    (work / TWO_VARIANTS).write_text(yaml.safe_dump(preset, sort_keys=False))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["variants"] = {name: spec for name, spec in params["variants"].items() if name in TRAINED}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def write_archive(path: Path, scratch: Path) -> None:
    """A small AT-USTC copy in the release layout, zipped like the signed release."""
    from atreid.data.synthetic.atustc import generate_atustc

    generate_atustc(scratch, workers=1, seed=0, train_persons=PERSONS, test_persons=TEST_PERSONS, outfits=[2, 2],
                    dates=2, train_cameras_per_outfit=2, train_frames_per_clip=3, val_fraction=0.2,
                    image_height=64, image_width=32, jpeg_quality=90)
    with zipfile.ZipFile(path, "w") as archive:
        for member in sorted((scratch / "AT-USTC").rglob("*")):
            archive.write(member, member.relative_to(scratch).as_posix())


def write_timm_weights(path: Path) -> dict[str, torch.Tensor]:
    """A randomly initialised ViT-B/16 in timm's file layout (head included, as in the real file)."""
    import timm

    torch.manual_seed(1234)
    state = timm.create_model("vit_base_patch16_224.orig_in21k_ft_in1k", pretrained=False).state_dict()
    torch.save(state, path)
    return state


# The run's peak on disk, measured (df, sampled every 2 s) on the 2-core VM: 4.5 GB, six
# ViT-B/16 models (1.4 GB each with MoAE, 0.33 GB without), the weights file, the data and
# the feature caches. The exported reference checkpoint (1.5 GB) goes to memory when
# /dev/shm has room. Below this, the run would stop on a full disk half-way.
DISK_NEEDED = 5 * 2**30


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The weights file, written once a module (a ViT-B/16 built and saved: seconds) for the
    run and the stride-12 check; the run links it into its copy of the repository."""
    path = tmp_path_factory.mktemp("weights") / Path(WEIGHTS).name
    return path, write_timm_weights(path)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, request) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    free = shutil.disk_usage(tmp_path_factory.getbasetemp()).free
    if free < DISK_NEEDED:
        pytest.skip(f"the paper run needs {DISK_NEEDED / 2**30:.0f} GB free in {tmp_path_factory.getbasetemp()}, "
                    f"{free / 2**30:.1f} GB are: free disk space (or point --basetemp elsewhere) to run it")
    timm_weights = request.getfixturevalue("timm_weights")  # after the check: 330 MB
    work = copy_tracked_files(tmp_path_factory.mktemp("paper") / "repo")
    write_archive(work / ARCHIVE, tmp_path_factory.mktemp("atustc"))
    os.link(timm_weights[0], work / WEIGHTS)  # the same file (and disk blocks)
    weights = timm_weights[1]
    planned = jobs_of_dry_run(run(paper_snakemake("-n", configfile=PRESET), work).stdout)
    write_two_variant_preset(work)
    run(paper_snakemake(), work)  # the default target: table, plots, galleries
    assert planned["train_model"] == len(PAPER_VARIANTS) and planned["evaluate_run"] == len(PAPER_VARIANTS)
    yield work, weights
    shutil.rmtree(work, ignore_errors=True)  # 4.5 GB of ViT-B models and feature caches


@pytest.fixture
def scratch_in_memory(tmp_path) -> Iterator[Path]:
    """A folder in /dev/shm when it has room for a ViT-B MoAE file (2 GB), else tmp_path:
    the export is checked, then deleted, and need not take disk beside the run's models."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 * 2**30):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="atreid-paper-export-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def trained(work: Path, variant: str) -> dict:
    return torch.load(work / "models" / variant / "seed0" / "model.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.paper
def test_the_archive_was_imported_checked_and_compared_with_the_official_counts(paper_run):
    work, _ = paper_run
    record = json.loads((work / "data" / "atustc" / "source.json").read_text())
    assert record["sha256"] == hashlib.sha256((work / ARCHIVE).read_bytes()).hexdigest()
    report = json.loads((work / "data" / "atustc" / "verification.json").read_text())
    # The official statistics are the yardstick: a miniature differs, and says so.
    assert any("train images" in w and "286087" in w for w in report["warnings"]), report["warnings"]
    sampled = pd.read_csv(work / "data" / "atustc" / "train_sampled.csv")
    assert sampled["person"].nunique() == PERSONS


@pytest.mark.slow
@pytest.mark.paper
def test_every_trained_variant_has_the_recipe_and_starts_from_the_weights_file(paper_run):
    work, weights = paper_run
    payloads = {variant: trained(work, variant) for variant in TRAINED}  # 1.4 GB for full: loaded once
    for variant, payload in payloads.items():
        settings = payload["settings"]
        model, recipe = settings["model"], settings["train"]
        assert model["arch"] == "vit_base_uniat" and model["image_size"] == [256, 128], variant
        assert model["pretrained"] == WEIGHTS and model["drop_path_rate"] == 0.2 and model["gate"] == "hard"
        assert model["patch_stride"] == 16
        assert (recipe["optimizer"], recipe["lr"], recipe["large_lr_factor"], recipe["random_erasing"],
                recipe["warmup_epochs"], recipe["num_workers"]) == ("sgd", 0.008, 10, 0.5, 10, 8), variant
        assert (recipe["epochs"], recipe["iters_per_epoch"], recipe["batch_p"], recipe["batch_k"]) == (1, 1, 2, 2)
        state = payload["state_dict"]
        # A warm-up step at lr 0.0008 leaves the backbone next to the file it started from;
        # a random initialisation would be nowhere near it.
        for ours, theirs in (("base.patch_embed.proj.weight", "patch_embed.proj.weight"),
                             ("base.blocks.5.attn.qkv.weight", "blocks.5.attn.qkv.weight"),
                             ("base.blocks.11.mlp.fc2.weight", "blocks.11.mlp.fc2.weight")):
            assert (state[ours] - weights[theirs]).abs().max() < 0.01, (variant, ours)
        assert state["base.pos_embed"].shape == (1, settings["ncls"] + 16 * 8, 768), variant
        # Heads as the reference sizes them: short-term heads per outfit whatever the loss.
        sizes = [state[f"classifier.{h}.weight"].shape[0] for h in range(6)]
        assert sizes == [OUTFITS, PERSONS] * 3, (variant, sizes)
        history = pd.read_csv(work / "models" / variant / "seed0" / "history.csv")
        # Warm-up from 0.1x to 1x over 10 epochs starts at 0.0008.
        assert history["lr"].round(8).tolist() == [0.0008], variant
        # One epoch, so no checkpoint was ever written (none after the last epoch).
        assert not (work / "checkpoints" / variant).exists(), variant
        log = (work / "logs" / "train" / variant / "seed0.log").read_text()
        assert f"pretrained weights {WEIGHTS}" in log and "'target_grid': [16, 8]" in log
    moae = payloads["full"]["state_dict"]
    plain = payloads["ncls1"]["state_dict"]
    assert "base.blocks.0.mlp.in_w" in moae and "base.blocks.0.mlp.in_w" not in plain
    assert plain["base.cls_token"].shape == (1, 1, 768) and moae["base.cls_token"].shape == (1, 6, 768)


@pytest.mark.slow
@pytest.mark.paper
def test_the_table_has_every_trained_variant_with_the_published_numbers_beside_it(paper_run):
    work, _ = paper_run
    table = pd.read_csv(work / "results" / "table.csv").set_index("variant")
    assert sorted(table.index[:-1]) == sorted(TRAINED) and table.index[-1] == "chance"
    for scenario in (*SCENARIOS, "Any-Time"):
        for metric in ("R1", "mAP"):
            assert table[f"{scenario}_{metric}"].between(0, 100).all(), (scenario, metric)
    # Uni-AT's published Any-Time R1 (the other ablations': tests/test_report.py).
    assert table.loc["full", "paper:Any-Time_R1"] == 55.80
    assert table.loc["full", "diff:Any-Time_R1"] == pytest.approx(table.loc["full", "Any-Time_R1"] - 55.80, abs=0.011)
    # The unified-embedding model has no row in the paper's ablation tables.
    assert pd.isna(table.loc["ncls1", "paper:Any-Time_R1"])
    for figure in ("plots/cmc_atustc.png", "plots/comparison.png", "plots/training_full.png",
                   "galleries/ncls1/AD-LT.png"):
        assert (work / "results" / figure).read_bytes().startswith(b"\x89PNG"), figure


@pytest.mark.slow
@pytest.mark.paper
def test_nothing_left_to_do_and_the_reference_export_has_the_documented_layout(paper_run, scratch_in_memory):
    work, _ = paper_run
    dry = run(paper_snakemake("-n"), work)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # reference_checkpoint.md: ViT-B/16, 256x128, stride 16, ncls 6, MoAE: 1,458 state_dict entries.
    out = scratch_in_memory / "epoch_best.t"
    run(["atreid", "export-checkpoint", str(work / "models" / "full" / "seed0" / "model.pt"), "--out", str(out)], work)
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert len(exported["model"]) == 1458
    assert exported["model"]["base.pos_embed"].shape == (1, 6 + 128, 768)
    assert exported["model"]["base.blocks.3.mlp.gate.5.weight"].shape == (2, 768)
    assert exported["model"]["classifier.0.weight"].shape == (OUTFITS, 768)


@pytest.mark.slow
@pytest.mark.paper
def test_overlapping_patches_stride_12_start_from_the_same_weights_file(timm_weights):
    """The paper's stride-12 option (21x10 overlapping patches) with the same file and recipe."""
    from atreid.config import load_params, resolve_variant
    from atreid.engine.trainer import build_criterion, build_training_model, load_pretrained_weights
    from tests.conftest import REPO

    path, weights = timm_weights
    params = load_params(REPO / "params.yaml", REPO / "presets" / "paper.yaml")
    params["model"]["patch_stride"] = 12
    settings = resolve_variant(params, "full", params["seeds"][0])
    torch.manual_seed(0)
    model = build_training_model(settings, PERSONS, OUTFITS)
    report = load_pretrained_weights(model, str(path))
    assert report["source_grid"] == [14, 14] and report["target_grid"] == [21, 10]
    state = model.state_dict()
    assert torch.equal(state["base.patch_embed.proj.weight"], weights["patch_embed.proj.weight"])
    # Every CLS token starts as the file's one; the patch rows are a resampled 21x10 grid.
    assert torch.equal(state["base.pos_embed"][0, :6], weights["pos_embed"][0, :1].expand(6, -1))
    assert state["base.pos_embed"].shape == (1, 6 + 21 * 10, 768)
    labels = {"outfit_to_person": [c // 2 for c in range(OUTFITS)]}
    criterion = build_criterion(settings, labels)
    model.train()
    # Two images, one RGB and one IR (SAID's two subsets): a training step's forward and backward.
    tokens, logits = model(torch.randn(2, 3, 256, 128))
    loss, _ = criterion(tokens, logits, torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([0, 1]), False)
    loss.backward()
    assert torch.isfinite(loss) and model.base.patch_embed.proj.weight.grad.abs().sum() > 0
