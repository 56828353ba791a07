"""Pretrained timm ViT weights -> Uni-AT backbone, through timm's file route."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from atreid.errors import AtreidError
from atreid.model import build_model
from atreid.model.moae import MoAE
from atreid.model.pretrained import PRETRAINED_FILE, load_pretrained

TIMM_NAME = "vit_tiny_patch16_224"
TIMM_KWARGS = {"depth": 4}  # our vit_tiny_uniat: 4 blocks of ViT-Tiny width


def timm_vit(seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    args = dict(pretrained=False, num_classes=0, **TIMM_KWARGS)
    args.update(kwargs)
    model = timm.create_model(TIMM_NAME, **args)
    with torch.no_grad():  # non-trivial norms and cls token, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or name == "cls_token":
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = timm_vit()
    path = tmp_path_factory.mktemp("pretrained") / "vit_tiny_random.pth"
    torch.save(model.state_dict(), path)
    return path, model


def ours(**kwargs) -> torch.nn.Module:
    args = dict(ncls=1, moae=False, num_persons=5, num_outfits=9, img_size=(224, 224), drop_path_rate=0.0)
    args.update(kwargs)
    torch.manual_seed(1)
    return build_model("vit_tiny_uniat", **args)


def load(model: torch.nn.Module, path: Path, **kwargs) -> dict:
    return load_pretrained(model, str(path), timm_name=TIMM_NAME, timm_kwargs=kwargs or TIMM_KWARGS)


def test_reproduces_timm_forward_features(weights) -> None:
    path, reference = weights
    model = ours()
    report = load(model, path)
    assert report["source_grid"] == [14, 14] and report["target_grid"] == [14, 14]
    assert report["tensors_loaded"] == len(reference.state_dict())
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_features(x)
        got = model.base.forward_features(x)
        cls = model.base(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls[:, 0], expected[:, 0], rtol=1e-5, atol=1e-5)


def test_head_in_file_is_dropped(tmp_path: Path) -> None:
    with_head = timm_vit(num_classes=10)
    path = tmp_path / "with_head.pth"
    torch.save(with_head.state_dict(), path)
    model = ours()
    load(model, path)
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.base.forward_features(x), with_head.forward_features(x),
                                   rtol=1e-5, atol=1e-5)


def test_moae_experts_start_as_the_shared_ffn(weights) -> None:
    path, _ = weights
    models = {}
    for gate in ("hard", "soft"):
        models[gate] = ours(ncls=6, moae=True, gate=gate)
        report = load(models[gate], path)
        assert report["moae_atom_tensors_from_ffn"] == 4 * 4
        assert report["gates_left_at_init"] == 4
    plain = ours(ncls=6, moae=False)
    load(plain, path)
    for block in models["hard"].base.blocks:
        mlp = block.mlp
        for k in range(5):
            assert torch.equal(mlp.in_w[k], mlp.fc1.weight.t()) and torch.equal(mlp.in_b[k], mlp.fc1.bias)
            assert torch.equal(mlp.out_w[k], mlp.fc2.weight.t()) and torch.equal(mlp.out_b[k], mlp.fc2.bias)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = plain.eval().base(x)
        for model in models.values():
            torch.testing.assert_close(model.eval().base(x), expected, rtol=1e-5, atol=1e-5)
    # Gates are not part of the pretrained weights: they keep the random init.
    torch.manual_seed(1)
    fresh = build_model("vit_tiny_uniat", ncls=6, moae=True, num_persons=5, num_outfits=9, img_size=(224, 224),
                        drop_path_rate=0.0, gate="hard")
    assert torch.equal(fresh.base.blocks[0].mlp.gate, models["hard"].base.blocks[0].mlp.gate)


def test_pos_embed_resampled_to_16x8_and_cls_rows_copied(weights) -> None:
    path, reference = weights
    model = ours(ncls=6, moae=True, img_size=(256, 128))
    report = load(model, path)
    assert report["source_grid"] == [14, 14] and report["target_grid"] == [16, 8]
    assert report["cls_tokens_copied"] == 6
    pos = model.base.pos_embed.detach()
    assert pos.shape == (1, 6 + 128, 192)
    src = reference.pos_embed.detach()
    for t in range(6):
        assert torch.equal(pos[0, t], src[0, 0])
        assert torch.equal(model.base.cls_token[0, t], reference.cls_token[0, 0])
    # Bicubic, align_corners False, no antialiasing (plain F.interpolate, as the reference).
    grid = src[:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 8), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 128, 192)
    torch.testing.assert_close(pos[:, 6:], expected, rtol=0, atol=1e-6)
    antialiased = F.interpolate(grid, size=(16, 8), mode="bicubic", align_corners=False, antialias=True)
    assert not torch.allclose(pos[:, 6:], antialiased.permute(0, 2, 3, 1).reshape(1, 128, 192), atol=1e-4)


def test_missing_file_names_it_and_the_download(tmp_path: Path) -> None:
    with pytest.raises(AtreidError, match=rf"nope\.pth.*{PRETRAINED_FILE}"):
        load_pretrained(ours(), str(tmp_path / "nope.pth"))


def test_missing_key_in_file_is_listed(weights, tmp_path: Path) -> None:
    path, reference = weights
    state = reference.state_dict()
    del state["blocks.2.mlp.fc1.weight"]
    bad = tmp_path / "missing.pth"
    torch.save(state, bad)
    with pytest.raises(AtreidError, match=r"missing keys: blocks\.2\.mlp\.fc1\.weight"):
        load(ours(), bad)


def test_shape_mismatch_in_file_is_listed(weights) -> None:
    path, _ = weights
    # A ViT-Tiny file read as ViT-Small (dim 384): every matrix mismatches.
    with pytest.raises(AtreidError, match=r"shape mismatches.*blocks\.0\.attn\.qkv\.weight"):
        load_pretrained(ours(), str(path), timm_name="vit_small_patch16_224", timm_kwargs=TIMM_KWARGS)


def test_weights_that_do_not_fit_our_backbone_are_listed(tmp_path: Path) -> None:
    deeper = timm_vit(depth=6)
    path = tmp_path / "deeper.pth"
    torch.save(deeper.state_dict(), path)
    with pytest.raises(AtreidError, match=r"unexpected keys: blocks\.4\."):
        load(ours(), path, depth=6)
    shallower = timm_vit(depth=3)
    torch.save(shallower.state_dict(), path)
    with pytest.raises(AtreidError, match=r"missing keys: base\.|missing keys: blocks\.3\."):
        load(ours(), path, depth=3)
    with pytest.raises(AtreidError, match=r"shape mismatches.*patch_embed\.proj\.weight"):
        # Patch 32 weights cannot feed our patch-16 convolution.
        wide = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=4, patch_size=32)
        torch.save(wide.state_dict(), path)
        load(ours(), path, patch_size=32, depth=4)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(AtreidError, match="junk.pth"):
        load(ours(), path)


def test_none_loads_nothing() -> None:
    model = ours()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, "none")
    assert report["parameters_loaded"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.base.blocks[0].mlp, MoAE)
