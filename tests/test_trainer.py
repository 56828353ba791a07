"""Trainer: kill-and-resume equality, stale checkpoints, NaN guard, tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from atreid.config import load_params, resolve_variant
from atreid.engine import trainer
from atreid.engine.checkpoint import load_trained_model, safe_load, save_checkpoint
from atreid.errors import AtreidError
from tests.conftest import settings_file

REPO = Path(__file__).resolve().parents[1]


# ---- a small learnable dataset in the training-index format --------------------------------
def make_training_data(root: Path, *, persons: int = 6, outfits: int = 2, frames: int = 4,
                       size: tuple[int, int] = (32, 16)) -> dict[str, Path]:
    """Images whose identity is a horizontal stripe pattern (survives flips, crops and IR grey)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = root / "AT-USTC"
    rows = []
    h, w = size
    for person in range(1, persons + 1):
        code = [(person >> bit) & 1 for bit in range(4)]
        for clothes in range(1, outfits + 1):
            for camera, modality in ((1, "rgb"), (9, "ir")):
                for frame in range(frames):
                    image = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
                    band = h // 8
                    for bit, on in enumerate(code):
                        if on:
                            image[(2 * bit + 1) * band:(2 * bit + 2) * band] += 150
                    image[:, : w // 2, clothes % 3] += 40  # outfit colour
                    if modality == "ir":
                        image[:] = image.mean(axis=2, keepdims=True).astype(np.uint8)
                    rel = f"p{person:03d}-d{clothes:02d}-c{clothes:02d}/cam{camera:02d}-f0-{frame:04d}.png"
                    (images / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(images / rel)
                    rows.append({"path": rel, "person": person, "date": clothes, "clothes": clothes,
                                 "camera": camera, "modality": modality, "flag": 0, "frame": frame,
                                 "clip": f"p{person:03d}-d{clothes:02d}-c{clothes:02d}-cam{camera:02d}"})
    from atreid.data.labels import training_labels

    index, labels = training_labels(pd.DataFrame(rows))
    index_csv, labels_json = root / "train_sampled.csv", root / "labels.json"
    index.to_csv(index_csv, index=False)
    labels_json.write_text(json.dumps(labels))
    return {"index_csv": index_csv, "labels_json": labels_json, "images_root": images}


def tiny_settings(variant: str = "full", **train) -> dict:
    settings = resolve_variant(load_params(REPO / "params.yaml"), variant, 0)
    settings["model"].update({"image_size": [32, 16], "drop_path_rate": 0.1, "pretrained": "none"})
    # Explicit, so the tests do not follow params.yaml's demo recipe; random erasing and
    # drop-path on, so resume equality covers every random draw of a training step.
    settings["train"].update({"epochs": 3, "iters_per_epoch": 2, "batch_p": 4, "batch_k": 4, "num_workers": 0,
                              "warmup_epochs": 1, "warmup_factor": 0.1, "min_lr_factor": 0.002, "pad": 2,
                              "flip": 0.5, "random_erasing": 0.5, "optimizer": "adamw", "lr": 1e-3,
                              "large_lr_factor": 10, "weight_decay": 5e-4, "clip_grad_norm": 20.0,
                              "triplet_start_epoch": 999, "devices": 1})
    settings["train"].update(train)
    return settings


# ---- stand-ins for the model and the criterion (fast, with dropout to exercise RNGs) -----------
class StandInModel(nn.Module):
    def __init__(self, num_persons: int, num_outfits: int, size=(32, 16), dim: int = 8) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 6, dim))
        self.embed = nn.Linear(3 * size[0] * size[1], 6 * dim)
        self.drop = nn.Dropout(0.3)
        self.norm = nn.LayerNorm(dim)
        self.necks = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(6))
        for neck in self.necks:
            neck.bias.requires_grad_(False)
        self.classifiers = nn.ModuleList(nn.Linear(dim, num_outfits if i % 2 == 0 else num_persons, bias=False)
                                         for i in range(6))
        self.dim = dim

    def no_weight_decay(self):
        return {"cls_token", "norm.weight", "norm.bias"}

    def large_lr_parameter_names(self):
        return {n for n, _ in self.named_parameters() if n.startswith(("necks.", "classifiers."))}

    def forward(self, x):
        tokens = self.norm(self.drop(self.embed(x.flatten(1))).view(-1, 6, self.dim) + self.cls_token)
        feats = [neck(tokens[:, i]) for i, neck in enumerate(self.necks)]
        if not self.training:
            return torch.stack(feats, 1)
        return tokens, [clf(f) for clf, f in zip(self.classifiers, feats)]


class StandInCriterion(nn.Module):
    def forward(self, tokens, logits, person, outfit, modality, use_triplet):
        stats, total = {}, 0.0
        for i, lg in enumerate(logits):
            target = outfit if i % 2 == 0 else person
            loss = F.cross_entropy(lg, target)
            total = total + loss
            stats[f"loss_h{i}"] = loss.item()
            stats[f"acc_h{i}"] = (lg.argmax(1) == target).float().mean().item()
        stats["loss_triplet"] = 0.0
        return total, stats


@pytest.fixture
def stand_ins(monkeypatch):
    monkeypatch.setattr(trainer, "build_training_model",
                        lambda settings, p, o: StandInModel(p, o, tuple(settings["model"]["image_size"])))
    monkeypatch.setattr(trainer, "build_criterion", lambda settings, labels: StandInCriterion())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return make_training_data(tmp_path_factory.mktemp("train_data"))


def run(settings, data, out: Path, **kwargs):
    return trainer.train_variant(settings, **data, out_path=out / "model.pt", history_path=out / "history.csv",
                                 checkpoint_dir=out / "ckpt", threads=1, device="cpu", **kwargs)


class Interrupt(Exception):
    pass


def interrupt_after(monkeypatch, epoch: int):
    """Make the trainer die right after the checkpoint of ``epoch`` is written (like kill -9)."""
    real = trainer.save_checkpoint

    def save_then_die(directory, state):
        path = real(directory, state)
        if state["epoch"] == epoch:
            raise Interrupt
        return path

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)


def without_timing(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=list(trainer.TIMING_COLUMNS))


def assert_same_weights(a: Path, b: Path):
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_equals_uninterrupted(stand_ins, data, tmp_path, monkeypatch, num_workers):
    settings = tiny_settings(num_workers=num_workers)
    run(settings, data, tmp_path / "a")
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupt):
        run(settings, data, tmp_path / "b")
    assert (tmp_path / "b" / "ckpt" / "last.pt").is_file() and not (tmp_path / "b" / "model.pt").exists()
    monkeypatch.undo()
    stand_ins_again(monkeypatch)
    summary = run(settings, data, tmp_path / "b")
    assert summary["resumed_from"] == 2
    assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    ha, hb = (pd.read_csv(tmp_path / d / "history.csv") for d in ("a", "b"))
    assert list(ha["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(without_timing(ha), without_timing(hb))
    assert not (tmp_path / "b" / "ckpt").exists()  # removed once the model is written


def stand_ins_again(monkeypatch):
    monkeypatch.setattr(trainer, "build_training_model",
                        lambda settings, p, o: StandInModel(p, o, tuple(settings["model"]["image_size"])))
    monkeypatch.setattr(trainer, "build_criterion", lambda settings, labels: StandInCriterion())


def test_changed_settings_start_fresh(stand_ins, data, tmp_path, monkeypatch, caplog):
    settings = tiny_settings()
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupt):
        run(settings, data, tmp_path)
    monkeypatch.undo()
    stand_ins_again(monkeypatch)
    changed = tiny_settings(lr=2e-3)
    with caplog.at_level("WARNING", logger="atreid.checkpoint"):
        summary = run(changed, data, tmp_path)
    assert summary["resumed_from"] == 0
    assert "starting fresh" in caplog.text


def test_corrupt_checkpoint_is_ignored(stand_ins, data, tmp_path, caplog):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level("WARNING", logger="atreid.checkpoint"):
        summary = run(tiny_settings(epochs=1), data, tmp_path)
    assert summary["resumed_from"] == 0 and "corrupt" in caplog.text


def test_nan_loss_stops_training(stand_ins, data, tmp_path, monkeypatch):
    calls = {"n": 0}

    class NaNAtThirdStep(StandInCriterion):
        def forward(self, *args):
            loss, stats = super().forward(*args)
            calls["n"] += 1
            return (loss * float("nan") if calls["n"] == 3 else loss), stats

    monkeypatch.setattr(trainer, "build_criterion", lambda settings, labels: NaNAtThirdStep())
    with pytest.raises(AtreidError, match=r"epoch 2, iteration 1"):
        run(tiny_settings(), data, tmp_path)
    assert not (tmp_path / "model.pt").exists()


def test_model_file_is_weights_only(stand_ins, data, tmp_path):
    run(tiny_settings(epochs=1), data, tmp_path)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(payload) == {"state_dict", "settings", "labels", "arch", "num_persons", "num_outfits", "epoch",
                            "atreid_version", "provenance"}
    # What the run was built from (atreid/provenance.py): plain values, loadable weights-only.
    provenance = payload["provenance"]
    assert set(provenance) == {"code", "settings_sha256", "data", "pretrained_sha256", "packages"}
    assert provenance["pretrained_sha256"] == "none" and provenance["data"] == {"source": "unknown"}
    assert payload["num_persons"] == 6 and payload["num_outfits"] == 12 and payload["epoch"] == 1
    history = pd.read_csv(tmp_path / "history.csv")
    for column in ("epoch", "lr", "loss", "loss_h0", "acc_h5", "loss_triplet", "images_per_s", "epoch_time_s"):
        assert column in history


def test_untrusted_and_corrupt_model_files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "thing": Path("x")}, evil)
    with pytest.raises(AtreidError, match="non-tensor"):
        load_trained_model(evil)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(AtreidError, match="corrupt"):
        safe_load(bad, "trained model")
    with pytest.raises(AtreidError, match="not found"):
        load_trained_model(tmp_path / "missing.pt")


def test_pretrained_loaded_on_fresh_start_only(stand_ins, data, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(trainer, "load_pretrained_weights", lambda model, source, **_: calls.append(source) or "ok")
    settings = tiny_settings(epochs=3)
    settings["model"]["pretrained"] = "hub"
    interrupt_after(monkeypatch, 2)  # killed during the last epoch, before the model was written
    with pytest.raises(Interrupt):
        run(settings, data, tmp_path)
    assert calls == ["hub"]
    monkeypatch.setattr(trainer, "save_checkpoint", save_checkpoint)
    summary = run(settings, data, tmp_path)
    assert calls == ["hub"] and summary["resumed_from"] == 2  # resumed: weights come from the checkpoint
    assert (tmp_path / "model.pt").is_file()
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [1, 2, 3]


def test_no_checkpoint_after_the_last_epoch(stand_ins, data, tmp_path, monkeypatch):
    """model.pt follows the last epoch at once: a checkpoint there would be written only to
    be deleted (3 GB for a ViT-B MoAE variant)."""
    saved = []
    real = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda directory, state: saved.append(state["epoch"])
                        or real(directory, state))
    run(tiny_settings(epochs=3), data, tmp_path)
    assert saved == [1, 2]
    assert (tmp_path / "model.pt").is_file() and not (tmp_path / "ckpt").exists()
    saved.clear()
    run(tiny_settings(epochs=1), data, tmp_path / "one")
    assert saved == [] and (tmp_path / "one" / "model.pt").is_file()


@pytest.mark.parametrize("every, epochs, saved", [(2, 5, [2, 4]), (2, 4, [2]), (3, 2, []), (1, 3, [1, 2])])
def test_checkpoint_every(stand_ins, data, tmp_path, monkeypatch, every, epochs, saved):
    """Checkpoints every ``train.checkpoint_every`` epochs, never after the last one."""
    written = []
    real = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda directory, state: written.append(state["epoch"])
                        or real(directory, state))
    run(tiny_settings(epochs=epochs, checkpoint_every=every), data, tmp_path)
    assert written == saved and (tmp_path / "model.pt").is_file()
    assert [trainer.checkpoint_due(e, epochs, every) for e in range(1, epochs + 1)] == [
        e in saved for e in range(1, epochs + 1)]


@pytest.mark.parametrize("background", [False, True])
def test_resume_with_checkpoint_every(stand_ins, data, tmp_path, monkeypatch, background):
    """Killed after epoch 4 of 5 with checkpoints every 2 epochs: the run resumes after epoch 4
    and ends with the uninterrupted run's weights (synchronous and background writer)."""
    from atreid.engine import checkpoint

    monkeypatch.setattr(trainer, "CheckpointWriter", lambda **_: checkpoint.CheckpointWriter(background))
    settings = tiny_settings(epochs=5, checkpoint_every=2)
    run(settings, data, tmp_path / "a")
    interrupt_after(monkeypatch, 4)
    with pytest.raises(Interrupt):
        run(settings, data, tmp_path / "b")
    monkeypatch.setattr(trainer, "save_checkpoint", save_checkpoint)
    assert torch.load(tmp_path / "b" / "ckpt" / "previous.pt", weights_only=True)["epoch"] == 2
    assert run(settings, data, tmp_path / "b")["resumed_from"] == 4
    assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")


def test_writer_holds_live_tensors_only_when_it_writes_at_once():
    """The synchronous writer saves the live CPU tensors (no 3 GB snapshot for ViT-B MoAE);
    the background one a copy that later in-place updates do not reach."""
    from atreid.engine.checkpoint import CheckpointWriter

    weight = torch.ones(3)
    state = {"w": weight, "nested": [{"m": weight * 2}], "step": 7}
    live, frozen = CheckpointWriter(background=False).hold(state), CheckpointWriter(background=True).hold(state)
    weight.add_(1)
    assert live["w"].data_ptr() == weight.data_ptr() and torch.equal(live["w"], weight)
    assert frozen["w"].data_ptr() != weight.data_ptr() and torch.equal(frozen["w"], torch.ones(3))
    assert torch.equal(frozen["nested"][0]["m"], torch.full((3,), 2.0)) and frozen["step"] == 7


def test_cli_arguments_round_trip():
    import argparse

    from atreid.commands import train as train_command
    from atreid.engine.distributed import torchrun_command

    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers())
    argv = ["train", "--settings", "settings/train/tiny.json", "--out", "m.pt", "--history", "h.csv",
            "--checkpoint-dir", "ck", "--threads", "4"]
    args = parser.parse_args(argv)
    again = parser.parse_args(train_command.child_arguments(args))
    assert vars(again) == vars(args) and again.settings == "settings/train/tiny.json"  # the file, passed on
    command = torchrun_command(2, ["train"])
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]


# ---- the real model and criterion -----------------------------------------------------------
def generated_data(root: Path, train_persons: int = 8) -> dict[str, Path]:
    """A small synthetic AT-USTC from the project's generator, indexed and labelled."""
    from atreid.data.benchmarks import get_benchmark
    from atreid.data.benchmarks.atustc import sample_frames
    from atreid.data.labels import training_labels
    from atreid.data.synthetic.atustc import generate_atustc

    generate_atustc(root, seed=0, train_persons=train_persons, test_persons=2, outfits=[2, 2], dates=2,
                    train_cameras_per_outfit=2, train_frames_per_clip=8, val_fraction=0.0, image_height=64,
                    image_width=32, jpeg_quality=90)
    index, _, _ = get_benchmark("atustc").build_index(root)
    index, labels = training_labels(sample_frames(index[index["flag"] == 0], 8))
    index_csv, labels_json = root / "train_sampled.csv", root / "labels.json"
    index.to_csv(index_csv, index=False)
    labels_json.write_text(json.dumps(labels))
    return {"index_csv": index_csv, "labels_json": labels_json, "images_root": root / "AT-USTC"}


def real_settings(variant: str = "full", **train) -> dict:
    settings = tiny_settings(variant, **train)
    settings["model"].update({"arch": "vit_tiny_uniat", "image_size": [64, 32], "drop_path_rate": 0.1})
    return settings


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    return generated_data(tmp_path_factory.mktemp("generated"))


@pytest.mark.slow
def test_real_model_resume_equals_uninterrupted(generated, tmp_path, monkeypatch):
    settings = real_settings(epochs=3, iters_per_epoch=2, num_workers=1)
    run(settings, generated, tmp_path / "a")
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupt):
        run(settings, generated, tmp_path / "b")
    monkeypatch.undo()
    assert run(settings, generated, tmp_path / "b")["resumed_from"] == 2
    assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    ha, hb = (pd.read_csv(tmp_path / d / "history.csv") for d in ("a", "b"))
    pd.testing.assert_frame_equal(without_timing(ha), without_timing(hb))
    model, payload = load_trained_model(tmp_path / "b" / "model.pt")
    assert payload["settings"] == settings and not model.training


@pytest.mark.slow
def test_tiny_end_to_end_training_learns(generated, tmp_path):
    settings = real_settings(epochs=8, iters_per_epoch=6, batch_p=8, batch_k=4, lr=3e-4, warmup_epochs=1,
                             min_lr_factor=0.1, random_erasing=0.0)
    settings["model"]["drop_path_rate"] = 0.0
    summary = run(settings, generated, tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    num_persons = len(json.loads(generated["labels_json"].read_text())["persons"])
    chance = 1 / num_persons
    long_term = history[[f"acc_h{i}" for i in (1, 3, 5)]].iloc[-1]
    assert long_term.mean() > 3 * chance and (long_term > 2 * chance).all(), history.to_string()
    assert history["loss"].iloc[-1] < 0.7 * history["loss"].iloc[0]
    assert summary["history"][-1]["epoch"] == 8


def test_background_checkpoint_writer(stand_ins, data, tmp_path, monkeypatch):
    from atreid.engine import checkpoint

    writer = checkpoint.CheckpointWriter(background=True)
    tensor = torch.ones(3)
    writer.submit(lambda: checkpoint.save_checkpoint(tmp_path / "w", {"x": checkpoint.cpu_copy(tensor)}))
    writer.wait()
    assert torch.equal(safe_load(tmp_path / "w" / "last.pt", "checkpoint")["x"], tensor)
    writer.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.close()

    # The trainer's CUDA path (background writes) resumes exactly as well.
    monkeypatch.setattr(trainer, "CheckpointWriter", lambda background: checkpoint.CheckpointWriter(True))
    settings = tiny_settings()
    run(settings, data, tmp_path / "a")
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupt):
        run(settings, data, tmp_path / "b")
    monkeypatch.setattr(trainer, "save_checkpoint", save_checkpoint)
    assert run(settings, data, tmp_path / "b")["resumed_from"] == 2
    assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")


@pytest.mark.parametrize("variant, sizing", [("full", "reference"), ("baseline", "reference"),
                                             ("ncls1", "reference"), ("baseline", "by_loss")])
def test_model_and_criterion_agree_on_classifier_sizes(generated, variant, sizing):
    """Train, eval (model_from_settings) and the criterion size the heads alike: the reference
    gives heads 0, 2, 4 the outfit classes in every variant; by_loss is opt-in."""
    from atreid.engine.checkpoint import model_from_settings

    settings = real_settings(variant)
    settings["model"]["classifier_sizing"] = sizing
    labels = json.loads(generated["labels_json"].read_text())
    persons, outfits = len(labels["persons"]), len(labels["outfits"])
    assert outfits > persons
    torch.manual_seed(0)
    model = trainer.build_training_model(settings, persons, outfits)
    by_persons = sizing == "by_loss" and not settings["said"]
    assert model.head_classes == ([persons] * 6 if by_persons else [outfits, persons] * 3)
    assert model_from_settings(settings, persons, outfits).head_classes == model.head_classes
    criterion = trainer.build_criterion(settings, labels)
    model.train()
    tokens, logits = model(torch.randn(4, 3, 64, 32))
    person = torch.tensor([0, 1, 2, 3])
    outfit = torch.tensor([labels["outfit_to_person"].index(p) for p in range(4)])
    loss, _ = criterion(tokens, logits, person, outfit, torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(loss)
    other = {"reference": "by_loss", "by_loss": "reference"}[sizing]
    if not settings["said"]:  # the other sizing's criterion refuses these logits
        settings["model"]["classifier_sizing"] = other
        with pytest.raises(AtreidError, match="do not fit the loss"):
            trainer.build_criterion(settings, labels)(tokens, logits, person, outfit, torch.tensor([0, 1, 0, 1]))


def test_baseline_trains_and_loads_with_the_reference_sizes(generated, tmp_path):
    settings = real_settings("baseline", epochs=1, iters_per_epoch=1, num_workers=0)
    assert settings["model"]["classifier_sizing"] == "reference" and not settings["said"]
    run(settings, generated, tmp_path)
    model, payload = load_trained_model(tmp_path / "model.pt")
    assert model.head_classes == [payload["num_outfits"], payload["num_persons"]] * 3
    history = pd.read_csv(tmp_path / "history.csv")
    # The first step's loss at near-zero logits: 3 ln C + 3 ln P (the classifiers start at N(0, 0.001)).
    expected = 3 * np.log(payload["num_outfits"]) + 3 * np.log(payload["num_persons"])
    assert history["loss"].iloc[0] == pytest.approx(expected, rel=0.02)


# ---- issue 15: fallback to previous.pt, leftovers, one-line errors, full disks ----------------
CORRUPTIONS = {"empty": b"", "random": bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
               "text": b"not a checkpoint"}


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.parametrize("corruption", ["empty", "random", "truncated"])
def test_corrupt_last_resumes_from_previous(stand_ins, data, tmp_path, monkeypatch, caplog, corruption):
    settings = tiny_settings()
    run(settings, data, tmp_path / "a")
    interrupt_after(monkeypatch, 1)  # an uninterrupted run's checkpoint after epoch 1
    with pytest.raises(Interrupt):
        run(settings, data, tmp_path / "one")
    monkeypatch.undo()
    stand_ins_again(monkeypatch)
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupt):
        run(settings, data, tmp_path / "b")
    ckpt = tmp_path / "b" / "ckpt"
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt", "previous.pt"]
    assert torch.load(ckpt / "previous.pt", weights_only=True)["epoch"] == 1
    one = checkpoint_weights(tmp_path / "one" / "ckpt" / "last.pt")
    previous = checkpoint_weights(ckpt / "previous.pt")
    assert one.keys() == previous.keys() and all(torch.equal(one[k], previous[k]) for k in one)

    last = ckpt / "last.pt"
    last.write_bytes(last.read_bytes()[:1000] if corruption == "truncated" else CORRUPTIONS[corruption])
    monkeypatch.undo()
    stand_ins_again(monkeypatch)
    with caplog.at_level("WARNING"):
        summary = run(settings, data, tmp_path / "b")
    assert summary["resumed_from"] == 1
    assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    assert "falling back to the previous checkpoint" in caplog.text and "previous.pt" in caplog.text
    assert "non-tensor" not in caplog.text
    assert not ckpt.exists()


def test_both_checkpoints_corrupt_start_from_scratch(stand_ins, data, tmp_path, caplog):
    settings = tiny_settings()
    run(settings, data, tmp_path / "a")
    ckpt = tmp_path / "b" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "last.pt").write_bytes(CORRUPTIONS["random"])
    (ckpt / "previous.pt").write_bytes(b"")
    with caplog.at_level("WARNING"):
        summary = run(settings, data, tmp_path / "b")
    assert summary["resumed_from"] == 0
    assert "no usable checkpoint" in caplog.text and "training from scratch" in caplog.text
    assert "empty training checkpoint" in caplog.text and "not a PyTorch file" in caplog.text
    assert "non-tensor" not in caplog.text
    assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")


def test_random_bytes_are_not_called_python_objects(tmp_path):
    for name, content in CORRUPTIONS.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        with pytest.raises(AtreidError) as info:
            safe_load(path, "trained model")
        message = str(info.value)
        assert "non-tensor" not in message and "\n" not in message and str(path) in message
        assert ("empty" if name == "empty" else "not a PyTorch file") in message


KILL_DURING_WRITE = """
import os, signal, sys
import torch
from atreid.engine import checkpoint
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write, after the data
checkpoint.save_checkpoint(sys.argv[1], {"epoch": 1, "model": {"w": torch.ones(4)}})
"""


def test_killed_checkpoint_write_leftovers_removed_by_next_run(stand_ins, data, tmp_path):
    import subprocess
    import sys

    ckpt = tmp_path / "ckpt"
    done = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(ckpt)], cwd=REPO, capture_output=True,
                          timeout=120)
    assert done.returncode == -9, done.stderr
    leftovers = sorted(p.name for p in ckpt.iterdir())
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".tmp")
    (tmp_path / ".model.pt.abcdefgh.tmp").write_bytes(b"partial")
    foreign = [ckpt / ".notes.abcdefgh.tmp", tmp_path / "mine.tmp"]
    for path in foreign:
        path.write_bytes(b"keep")
    interrupt_after(stand_ins_monkeypatch := pytest.MonkeyPatch(), 1)
    try:
        with pytest.raises(Interrupt):
            run(tiny_settings(), data, tmp_path)
    finally:
        stand_ins_monkeypatch.undo()
    assert sorted(p.name for p in ckpt.iterdir()) == [".notes.abcdefgh.tmp", "last.pt"]
    assert not (tmp_path / ".model.pt.abcdefgh.tmp").exists()
    assert all(path.exists() for path in foreign)


KILL_DURING_SECOND_WRITE = """
import os, signal, sys
import torch
from atreid.engine import checkpoint
checkpoint.save_checkpoint(sys.argv[1], {"epoch": 1, "model": {"w": torch.ones(4)}})
keep_previous = checkpoint.keep_previous
# killed after previous.pt was linked to last.pt, before the new file replaced last.pt
checkpoint.keep_previous = lambda *paths: keep_previous(*paths) and os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save_checkpoint(sys.argv[1], {"epoch": 2, "model": {"w": torch.full((4,), 2.0)}})
"""


def test_checkpoint_save_after_a_kill_left_previous_and_last_as_one_file(tmp_path):
    """A kill between linking previous.pt to last.pt and replacing last.pt leaves two names of
    one file; the next saves must still end with two distinct files and no stray link."""
    import os
    import subprocess
    import sys

    from atreid.engine.checkpoint import remove_stale_checkpoint_temporaries

    ckpt = tmp_path / "ckpt"
    done = subprocess.run([sys.executable, "-c", KILL_DURING_SECOND_WRITE, str(ckpt)], cwd=REPO,
                          capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr
    last, previous = ckpt / "last.pt", ckpt / "previous.pt"
    assert os.path.samefile(last, previous)  # the state the kill leaves
    assert len(remove_stale_checkpoint_temporaries(ckpt)) == 1  # the epoch-2 file, as a resumed run does first
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt", "previous.pt"]
    for epoch in (2, 3):
        save_checkpoint(ckpt, {"epoch": epoch, "model": {"w": torch.full((4,), float(epoch))}})
        assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt", "previous.pt"], epoch
        assert not os.path.samefile(last, previous)
        assert [torch.load(p, weights_only=True)["epoch"] for p in (previous, last)] == [epoch - 1, epoch]
        assert os.stat(previous).st_nlink == os.stat(last).st_nlink == 1


def test_full_disk_while_checkpointing_is_one_line(stand_ins, data, tmp_path, monkeypatch):
    import errno
    import os

    from atreid import io as aio

    real_fsync = os.fsync
    calls = {"n": 0}

    def full_after_first(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1's checkpoint and history.csv fit; epoch 2's checkpoint does not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(aio.os, "fsync", full_after_first)
    with pytest.raises(AtreidError) as info:
        run(tiny_settings(), data, tmp_path)
    monkeypatch.setattr(aio.os, "fsync", real_fsync)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "ckpt" / "last.pt") in message
    assert "No space left on device" in message and "free space" in message
    # Nothing partial: epoch 1's checkpoint stays resumable and nothing was moved (previous.pt
    # is linked only once the new file is complete), no temporaries, no model.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.pt"]
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "history.csv"]


# ---- the same through the CLI, in a subprocess ------------------------------------------------
def atreid_cli(*args: str, timeout: int = 300):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ATREID_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "atreid", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_one_error_line(done, *needles: str) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("content", ["empty", "random"])
def test_cli_evaluate_unreadable_model_is_one_line(tmp_path, content):
    model = tmp_path / "models" / "full" / "seed0" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(CORRUPTIONS[content])
    out = tmp_path / "metrics.json"
    done = atreid_cli("evaluate", "--model", str(model), "--benchmark", "atustc", "--data-dir", str(tmp_path),
                      "--settings", str(settings_file(tmp_path / "eval.json", {"device": "cpu"})), "--out", str(out),
                      timeout=120)
    line = assert_one_error_line(done, str(model), "retrain")
    assert ("empty" if content == "empty" else "not a PyTorch file") in line and "non-tensor" not in line
    assert not out.exists()


def cli_train(settings, data, out: Path, ckpt: Path):
    settings_path = settings_file(out.parent / f"{out.name}.settings.json", settings)
    return atreid_cli("train", "--settings", str(settings_path), "--index", str(data["index_csv"]),
                      "--labels", str(data["labels_json"]), "--images", str(data["images_root"]),
                      "--out", str(out / "model.pt"), "--history", str(out / "history.csv"),
                      "--checkpoint-dir", str(ckpt), "--threads", "1", "--device", "cpu")


@pytest.mark.slow
def test_cli_train_empty_last_pt_warns_and_trains(generated, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"")
    done = cli_train(real_settings(epochs=1, iters_per_epoch=1), generated, tmp_path, ckpt)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "IndexError" not in done.stderr
    warning = [line for line in done.stderr.splitlines() if "no usable checkpoint" in line]
    assert len(warning) == 1 and "training from scratch" in warning[0] and "empty" in warning[0]
    assert (tmp_path / "model.pt").is_file() and not ckpt.exists()


@pytest.mark.slow
@pytest.mark.parametrize("full", ["checkpoint", "model"])
def test_cli_train_full_disk_is_one_line(generated, tmp_path, full):
    """A real small filesystem (tmpfs, root only; skipped elsewhere) fills up while saving."""
    from tests.test_io import small_filesystem

    with small_filesystem(tmp_path / "small", size="64k") as disk:
        out = disk if full == "model" else tmp_path / "out"
        ckpt = disk / "ckpt" if full == "checkpoint" else tmp_path / "ckpt"
        epochs = 2 if full == "checkpoint" else 1  # the first checkpoint is the one after epoch 1 of 2
        done = cli_train(real_settings(epochs=epochs, iters_per_epoch=1), generated, out, ckpt)
        target = ckpt / "last.pt" if full == "checkpoint" else out / "model.pt"
        assert_one_error_line(done, str(target), "No space left on device", "free space")
        leftovers = [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == [] and not target.exists()


def test_background_writer_reuses_its_host_buffers(tmp_path):
    """Later snapshots are copied into the first one's host buffers (no fresh 3 GB to page in),
    only after the write in flight is done, and each write saves its own snapshot."""
    from atreid.engine.checkpoint import CheckpointWriter

    writer = CheckpointWriter(background=True)
    weight = torch.ones(3)
    first = writer.hold({"w": weight, "groups": [{"lr": 0.1}]}, "model")
    writer.submit(lambda: save_checkpoint(tmp_path, {"epoch": 1, "model": first}))
    weight.add_(1)
    second = writer.hold({"w": weight, "groups": [{"lr": 0.1}]}, "model")  # waits for the write above
    assert second["w"].data_ptr() == first["w"].data_ptr() != weight.data_ptr()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["model"]["w"].tolist() == [1.0, 1.0, 1.0]
    writer.submit(lambda: save_checkpoint(tmp_path, {"epoch": 2, "model": second}))
    writer.close()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["model"]["w"].tolist() == [2.0, 2.0, 2.0]
    assert writer.hold({"w": torch.ones(4)}, "model")["w"].shape == (4,)  # a new shape: a new buffer
