"""`atreid export-onnx`: onnxruntime gives the evaluation's features (within 1e-4) at any batch
size, for the tiny and the ViT-B models with the MoAE hard gate; bad input is one line."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from atreid.cli import main  # noqa: E402
from atreid.config import read_yaml, resolve_variant, validate_params  # noqa: E402
from atreid.constants import ONNX_DEFAULT_OPSET  # noqa: E402
from atreid.model import build_model  # noqa: E402
from atreid.engine.export import TOLERANCE, export_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
P, C = 7, 11  # persons, outfits


def randomise_running_stats(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Non-trivial BN running statistics (a fresh model has mean 0, variance 1)."""
    gen = torch.Generator().manual_seed(seed)
    for bn in model.bottleneck:
        bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
    return model.eval()


def tiny_model(**kwargs) -> torch.nn.Module:
    """As tests/test_model.py builds it: random weights, MoAE on, hard gate."""
    args = dict(ncls=6, moae=True, num_persons=P, num_outfits=C, img_size=(128, 64), drop_path_rate=0.1)
    args.update(kwargs)
    torch.manual_seed(0)
    return randomise_running_stats(build_model("vit_tiny_uniat", **args))


def eval_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What the evaluation ranks with: the model's eval output, L2-normalised (metrics._normalised)."""
    with torch.no_grad():
        return torch.nn.functional.normalize(model.eval()(images).float(), dim=-1)


def onnx_features(path: Path, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features, post_bn = session.run(["features", "post_bn"], {"images": images.numpy()})
    return features, post_bn


def images(batch: int, size=(128, 64), seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def assert_matches(model: torch.nn.Module, path: Path, batches, size=(128, 64)) -> float:
    worst = 0.0
    for n in batches:
        x = images(n, size, seed=n)
        features, post_bn = onnx_features(path, x)
        expected = eval_features(model, x).numpy()
        assert features.shape == expected.shape == (n, 6, model.embed_dim)
        diff = float(np.abs(features - expected).max())
        assert diff <= TOLERANCE, (n, diff)
        with torch.no_grad():
            np.testing.assert_allclose(post_bn, model(x).numpy(), atol=1e-4, rtol=1e-4)
        worst = max(worst, diff)
    return worst


@pytest.mark.slow
def test_tiny_moae_model_exports_with_a_dynamic_batch(tmp_path, capsys):
    model = tiny_model()
    # The hard gate does route: both experts are chosen somewhere (token, sample, block).
    choices = []
    hooks = [block.mlp.register_forward_hook(
        lambda module, inputs, output: choices.append(module.gate_choice(inputs[0][:, :6].transpose(0, 1))[0]))
        for block in model.base.blocks]
    eval_features(model, images(4))
    for hook in hooks:
        hook.remove()
    assert torch.cat([c.flatten() for c in choices]).unique().tolist() == [0, 1]
    path = export_model(model, tmp_path / "tiny.onnx", image_size=(128, 64), batch=2)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert any(o.domain in ("", "ai.onnx") and o.version == ONNX_DEFAULT_OPSET for o in proto.opset_import)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["atreid.heads"] == "DT-ST,DT-LT,NT-ST,NT-LT,AD-ST,AD-LT" and "flip" in meta["atreid.not_exported"]
    worst = assert_matches(model, path, (1, 5))
    with capsys.disabled():
        print(f"\ntiny: max |ORT - torch| = {worst:.3g}")


def test_tiny_ncls1_model_exports(tmp_path):
    model = tiny_model(ncls=1, moae=False)
    old_umask = os.umask(0o027)
    try:
        path = export_model(model, tmp_path / "ncls1.onnx", image_size=(128, 64), batch=1)
    finally:
        os.umask(old_umask)
    # Written through atreid.io: the user's umask decides the mode, as for every other output.
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and not list(tmp_path.glob(".*.tmp"))
    assert_matches(model, path, (1, 3))


@pytest.mark.slow
def test_highest_supported_opset(tmp_path):
    from atreid.constants import ONNX_OPSETS

    model = tiny_model()
    path = export_model(model, tmp_path / "latest.onnx", image_size=(128, 64), opset=ONNX_OPSETS[-1])
    proto = onnx.load(str(path))
    assert any(o.domain in ("", "ai.onnx") and o.version == ONNX_OPSETS[-1] for o in proto.opset_import)
    assert_matches(model, path, (2,))


@pytest.mark.slow
def test_vit_base_moae_model_exports(tmp_path, capsys):
    torch.manual_seed(0)
    model = randomise_running_stats(build_model("vit_base_uniat", ncls=6, moae=True, num_persons=P, num_outfits=C,
                                                img_size=(256, 128)))
    path = export_model(model, tmp_path / "vitb.onnx", image_size=(256, 128), batch=2)
    worst = assert_matches(model, path, (1, 2), size=(256, 128))
    with capsys.disabled():
        print(f"\nViT-B: max |ORT - torch| = {worst:.3g}")


# ---- the command -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny random trained-model file as training writes it (models/full/seed0/model.pt)."""
    from atreid.engine.checkpoint import model_from_settings, save_trained_model

    settings = resolve_variant(validate_params(read_yaml(REPO / "params.yaml")), "full", 0)
    settings["model"].update({"arch": "vit_tiny_uniat", "image_size": [64, 32], "pretrained": "none"})
    labels = {"persons": [1, 2, 3], "outfits": [[1, 1], [2, 1], [3, 1]], "outfit_to_person": [0, 1, 2]}
    torch.manual_seed(0)
    model = model_from_settings(settings, 3, 3)
    path = tmp_path_factory.mktemp("export") / "models" / "full" / "seed0" / "model.pt"
    save_trained_model(path, model=model, settings=settings, labels=labels, epoch=1)
    return path


def cli(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.mark.slow
def test_cli_writes_a_verified_file(model_file, tmp_path, capsys):
    from atreid.engine.checkpoint import load_trained_model

    out = tmp_path / "out" / "model.onnx"
    assert cli("export-onnx", "--model", model_file, "--out", out, "--batch", 3) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["opset"] == ONNX_DEFAULT_OPSET and report["image_size"] == [64, 32]
    assert report["feature_shape"] == ["N", 6, 192] and report["max_abs_diff"] <= TOLERANCE
    assert out.is_file() and not list(out.parent.glob("*.tmp"))
    model, _ = load_trained_model(model_file)
    assert_matches(model, out, (2, 7), size=(64, 32))


def one_line_error(capsys, *args: object) -> str:
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_bad_input_is_one_line_naming_the_file_and_the_fix(model_file, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    missing = tmp_path / "models" / "nope" / "model.pt"
    err = one_line_error(capsys, "export-onnx", "--model", missing, "--out", out)
    assert str(missing) in err and "not found" in err and "models/<variant>/seed<seed>/model.pt" in err
    err = one_line_error(capsys, "export-onnx", "--model", tmp_path, "--out", out)
    assert "folder" in err
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    err = one_line_error(capsys, "export-onnx", "--model", text, "--out", out)
    assert str(text) in err and "not a PyTorch file" in err
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    err = one_line_error(capsys, "export-onnx", "--model", other, "--out", out)
    assert str(other) in err and "not an atreid model file" in err
    err = one_line_error(capsys, "export-onnx", "--model", model_file, "--out", out, "--opset", 11)
    assert "--opset 11" in err and "18" in err
    err = one_line_error(capsys, "export-onnx", "--model", model_file, "--out", out, "--batch", 0)
    assert "--batch 0" in err
    assert not out.exists()
