"""DDP on CPU: two gloo processes train to identical weights on the single-process batches."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from atreid.engine import trainer
from tests.test_trainer import generated_data, real_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recording_run(settings: dict, data: dict, out: Path) -> dict:
    """Train the real tiny model, recording every step's samples; returns weights and records."""
    models, labels, images = [], [], []
    build_model, build_criterion = trainer.build_training_model, trainer.build_criterion

    def record_images(module, args):
        if module.training:
            images.append(args[0].detach().double().sum(dim=(1, 2, 3)).tolist())

    def record_labels(module, args):
        person, outfit, modality = args[2:5]
        labels.append(list(zip(person.tolist(), outfit.tolist(), modality.tolist())))

    def build(s, p, o):
        models.append(build_model(s, p, o))
        models[-1].register_forward_pre_hook(record_images)
        return models[-1]

    def criterion(s, lab):
        c = build_criterion(s, lab)
        c.register_forward_pre_hook(record_labels)
        return c

    trainer.build_training_model, trainer.build_criterion = build, criterion
    try:
        trainer.train_variant(settings, **data, out_path=out / "model.pt", history_path=out / "history.csv",
                              checkpoint_dir=out / "ckpt", threads=1, device="cpu")
    finally:
        trainer.build_training_model, trainer.build_criterion = build_model, build_criterion
    steps = [sorted((*lab, img) for lab, img in zip(ls, xs)) for ls, xs in zip(labels, images)]
    return {"state_dict": models[0].state_dict(), "steps": steps}


def _worker(rank: int, world: int, port: int, settings: dict, data: dict, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), ATREID_QUIET="1")
    result = recording_run(settings, data, out)
    torch.save(result, out / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes(tmp_path):
    data = generated_data(tmp_path / "data")
    settings = real_settings(epochs=2, iters_per_epoch=2)
    single = recording_run(settings, data, tmp_path / "single")

    settings_ddp = real_settings(epochs=2, iters_per_epoch=2, devices=2)
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_worker, args=(2, free_port(), settings_ddp, data, out), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # Both ranks end with identical weights, and rank 0 wrote them.
    written = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    # BN running statistics included: they are those of the global batch (GlooSyncBatchNorm).
    for key, value in ranks[0]["state_dict"].items():
        assert torch.equal(value, ranks[1]["state_dict"][key]), key
        assert torch.equal(value, written[key]), key
    # The two ranks' batches together are exactly the single-process batches (same
    # samples, same augmentation), step by step.
    assert len(ranks[0]["steps"]) == len(single["steps"]) == 4
    for step, expected in enumerate(single["steps"]):
        combined = sorted(ranks[0]["steps"][step] + ranks[1]["steps"][step])
        assert combined == expected, step
        assert len(ranks[0]["steps"][step]) == len(expected) // 2


@pytest.mark.slow
def test_cli_relaunches_under_torchrun(tmp_path):
    import json
    import subprocess
    import sys

    data = generated_data(tmp_path / "data")
    settings = real_settings(epochs=1, iters_per_epoch=1, devices=2)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "atreid", "train", "--settings", str(settings_file(tmp_path / "settings.json", settings)),
               "--index", str(data["index_csv"]), "--labels", str(data["labels_json"]),
               "--images", str(data["images_root"]), "--out", str(out / "model.pt"),
               "--history", str(out / "history.csv"), "--checkpoint-dir", str(out / "ckpt"),
               "--threads", "2", "--device", "cpu"]
    env = {**os.environ, "ATREID_QUIET": "1"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "relaunching under torchrun" in done.stderr
    assert "rank 1/2 joined the gloo process group" in done.stderr
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["epoch"] == 1 and payload["settings"] == settings
    assert not (out / "ckpt").exists()
