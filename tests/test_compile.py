"""train.compile / eval.compile on CPU (Inductor's C++ backend): the same numbers as eager,
one graph per model with no graph break, no recompilation after the first epoch.

Compiling is slow on a small CPU (tens of seconds per model), so these tests are marked
slow and use the smallest model that still has every op of a training step: the tiny
arch cut to 2 blocks (the second one with drop-path), at 32x16. The six variants of the
paper preset compile three distinct graphs (MoAE, six plain CLS tokens, one CLS token):
the compiled model is the same for the variants that differ in loss switches only (SAID,
HDW: eager code in the criterion, outside the graph; the classifiers are sized alike with
the default ``classifier_sizing``). One variant per graph is trained: ``full`` (MoAE, with
SAID and HDW in its loss), ``baseline`` (six plain CLS tokens) and ``ncls1`` (one CLS token).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from atreid.config import load_params, resolve_variant
from atreid.engine import trainer
from atreid.model import uniat
from tests.conftest import REPO
from tests.test_trainer import make_training_data

# One per distinct compiled graph (module docstring): said and said_hdw compile baseline's
# graph, said_moae full's; their losses are full's switches, run eagerly.
VARIANTS = ("full", "baseline", "ncls1")
ARCH = "vit_tiny_uniat_2blocks"


def add_two_block_arch(monkeypatch) -> None:
    monkeypatch.setitem(uniat._ARCHS, ARCH, dataclasses.replace(uniat.get_arch("vit_tiny_uniat"), depth=2))


@pytest.fixture(autouse=True)
def two_block_arch(monkeypatch):
    add_two_block_arch(monkeypatch)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("compile_data"))


def settings_of(variant: str, **train) -> dict:
    params = load_params(REPO / "params.yaml", REPO / "presets" / "paper.yaml")
    settings = resolve_variant(params, variant, 0)
    settings["model"].update({"arch": ARCH, "image_size": [32, 16], "drop_path_rate": 0.1, "pretrained": "none"})
    settings["train"].update({"epochs": 2, "iters_per_epoch": 3, "batch_p": 4, "batch_k": 4, "num_workers": 0,
                              "warmup_epochs": 1, "checkpoint_every": 1, "devices": 1, "cpu_threads": 1})
    settings["train"].update(train)
    return settings


def train_recording(settings, data, out, monkeypatch) -> list[dict]:
    """Train; one record per step: its loss and dynamo's graph and graph-break counts after it."""
    steps = []
    real = trainer.train_step

    def recording(*args, **kwargs):
        stats = real(*args, **kwargs)
        steps.append({"epoch": kwargs["epoch"], "loss": stats["loss"],
                      "graphs": counters["stats"]["unique_graphs"], "breaks": sum(counters["graph_break"].values())})
        return stats

    monkeypatch.setattr(trainer, "train_step", recording)
    torch._dynamo.reset()
    counters.clear()
    trainer.train_variant(settings, **data, out_path=out / "model.pt", history_path=out / "history.csv",
                          checkpoint_dir=out / "ckpt", threads=1, device="cpu")
    monkeypatch.setattr(trainer, "train_step", real)
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_training_equals_eager(variant, data, tmp_path, monkeypatch):
    eager = train_recording(settings_of(variant), data, tmp_path / "eager", monkeypatch)
    compiled = train_recording(settings_of(variant, compile=True), data, tmp_path / "compiled", monkeypatch)
    assert eager[-1]["graphs"] == 0  # eager really is eager
    # The first three steps (drop-path masks included, fallback_random) as eager's.
    for step, (a, b) in enumerate(zip(eager[:3], compiled[:3]), start=1):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (step, a["loss"], b["loss"])
    # One graph for the whole model (no graph break: MoAE's routed path is not taken inside a
    # graph), compiled at the first step and never again (second epoch included).
    assert [s["graphs"] for s in compiled] == [1] * len(compiled)
    assert [s["breaks"] for s in compiled] == [0] * len(compiled), dict(counters["graph_break"])
    assert compiled[-1]["epoch"] == 2


# The variants not trained above, and the one whose compiled model they share.
SAME_GRAPH_AS = {"said": "baseline", "said_hdw": "baseline", "said_moae": "full"}


@pytest.mark.parametrize("variant", sorted(SAME_GRAPH_AS))
def test_loss_switch_variants_compile_a_trained_variant_s_model(variant):
    """What lets VARIANTS skip them: the same modules, shapes and outputs as the variant
    whose compiled graph test_compiled_training_equals_eager checks (a change that made
    SAID or HDW alter the model would fail here: add the variant to VARIANTS then)."""
    assert set(SAME_GRAPH_AS.values()) <= set(VARIANTS) and not set(SAME_GRAPH_AS) & set(VARIANTS)
    models = []
    for name in (variant, SAME_GRAPH_AS[variant]):
        torch.manual_seed(0)
        models.append(trainer.build_training_model(settings_of(name), 6, 12).train())
    ours, theirs = models
    assert repr(ours) == repr(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    images = torch.randn(4, 3, 32, 16)
    outputs = []
    for model in models:
        torch.manual_seed(1)  # the same drop-path masks
        outputs.append(model(images))
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_resume_equals_uninterrupted(data, tmp_path, monkeypatch):
    """Kill after epoch 1's checkpoint, resume compiled: the same weights, torch.equal."""
    from tests.test_trainer import Interrupt, assert_same_weights, interrupt_after

    settings = settings_of("full", compile=True)
    run = lambda out: trainer.train_variant(settings, **data, out_path=out / "model.pt",  # noqa: E731
                                            history_path=out / "history.csv", checkpoint_dir=out / "ckpt",
                                            threads=1, device="cpu")
    run(tmp_path / "a")
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupt):
        run(tmp_path / "b")
    monkeypatch.undo()
    add_two_block_arch(monkeypatch)
    assert run(tmp_path / "b")["resumed_from"] == 1
    assert_same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["full", "ncls1"])
def test_compiled_feature_extraction_equals_eager(variant, data, tmp_path):
    """eval.compile: the same features within 1e-5, one graph (the last, smaller batch padded)."""
    import pandas as pd

    from atreid.engine.checkpoint import model_from_settings
    from atreid.eval.features import extract_features

    torch.manual_seed(0)
    model = model_from_settings(settings_of(variant), 6, 12).eval()
    paths = pd.read_csv(data["index_csv"])["path"].tolist()[:10]
    kwargs = {"image_size": (32, 16), "batch_size": 4, "flip": True}
    eager = extract_features(model, data["images_root"], paths, **kwargs)
    torch._dynamo.reset()
    counters.clear()
    compiled = extract_features(model, data["images_root"], paths, compile=True, **kwargs)
    assert compiled.shape == eager.shape == (10, 6, 192)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


@pytest.mark.slow
def test_workflow_gives_eval_compile_to_the_feature_jobs_only(tmp_path):
    """Off (the default): the evaluation jobs' settings hold no compile key. On: the jobs
    that extract features get it (evaluation, galleries), not training."""
    from tests.e2e import copy_tracked_files, dry_run_commands, settings_of

    work = copy_tracked_files(tmp_path / "repo")
    steps = ("evaluate", "train", "galleries")
    off = dry_run_commands(work, steps)
    on = dry_run_commands(work, steps, "--config", 'eval={"compile": true}')
    assert off["evaluate"] and off["train"] and off["galleries"]
    assert not any("compile" in settings_of(work, line) for line in off["evaluate"] + off["galleries"])
    for step in ("evaluate", "galleries"):
        assert all(settings_of(work, line)["compile"] is True for line in on[step])
        assert len(on[step]) == len(off[step])
    assert on["train"] == off["train"]
