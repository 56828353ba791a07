"""Uni-AT model: backbone geometry, heads, optimiser name sets, registry errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from atreid.errors import AtreidError
from atreid.model import build_model, head_classes, list_archs
from atreid.model.moae import MoAE

P, C = 7, 11  # persons, outfits


def tiny(**kwargs) -> nn.Module:
    args = dict(ncls=6, moae=True, num_persons=P, num_outfits=C, img_size=(128, 64), drop_path_rate=0.1)
    args.update(kwargs)
    torch.manual_seed(0)
    return build_model("vit_tiny_uniat", **args)


def test_registry_and_unknown_arch() -> None:
    assert {"vit_base_uniat", "vit_tiny_uniat"} <= set(list_archs())
    with pytest.raises(AtreidError, match="vit_base_uniat.*vit_tiny_uniat"):
        build_model("vit_huge", ncls=6, moae=True, num_persons=P, num_outfits=C)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ncls=3), "ncls"), (dict(gate="cosine"), "gate"), (dict(num_persons=0), "person"),
    (dict(patch_stride=17), "patch_stride"), (dict(img_size=(8, 64)), "image size"),
    (dict(drop_path_rate=1.5), "drop_path_rate")])
def test_invalid_options(kwargs: dict, match: str) -> None:
    with pytest.raises(AtreidError, match=match):
        tiny(**kwargs)


def test_tiny_arch_dimensions() -> None:
    model = tiny()
    base = model.base
    assert (model.arch, model.ncls, model.moae, model.embed_dim) == ("vit_tiny_uniat", 6, True, 192)
    assert (model.num_persons, model.num_outfits) == (P, C)
    assert len(base.blocks) == 4 and base.blocks[0].attn.num_heads == 3
    assert base.blocks[0].mlp.fc1.weight.shape == (768, 192)
    assert base.patch_embed.proj.kernel_size == (16, 16) and base.patch_embed.proj.stride == (16, 16)
    assert base.grid_size == (8, 4)
    assert base.pos_embed.shape == (1, 6 + 32, 192) and base.cls_token.shape == (1, 6, 192)


def test_overlapping_patch_grid() -> None:
    # floor((256 - 16) / 12) + 1 = 21, floor((128 - 16) / 12) + 1 = 10
    model = tiny(img_size=(256, 128), patch_stride=12, ncls=1, moae=False)
    assert model.base.grid_size == (21, 10)
    assert model.base.pos_embed.shape == (1, 1 + 210, 192)
    assert model.base.patch_embed.proj.stride == (12, 12)
    model.eval()
    assert model(torch.randn(2, 3, 256, 128)).shape == (2, 6, 192)


def test_norms_activation_and_drop_path_schedule() -> None:
    model = tiny(drop_path_rate=0.3)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 4 + 1 and all(m.eps == 1e-6 for m in norms)
    acts = [m.act for m in model.modules() if isinstance(m, MoAE)]
    assert all(isinstance(a, nn.GELU) and a.approximate == "none" for a in acts)
    blocks = model.base.blocks
    assert isinstance(blocks[0].drop_path1, nn.Identity)
    rates = [b.drop_path1.drop_prob for b in list(blocks)[1:]]
    assert rates == pytest.approx([0.1, 0.2, 0.3])
    assert all(b.drop_path2.drop_prob == b.drop_path1.drop_prob for b in list(blocks)[1:])


@pytest.mark.parametrize("ncls, moae", [(6, True), (6, False), (1, False), (1, True)])
def test_forward_train_and_eval(ncls: int, moae: bool) -> None:
    model = tiny(ncls=ncls, moae=moae)
    assert model.moae == (moae and ncls == 6)
    x = torch.randn(4, 3, 128, 64)
    model.train()
    tokens, logits = model(x)
    assert tokens.shape == (4, 6, 192)
    assert [lg.shape for lg in logits] == [(4, C), (4, P)] * 3
    if ncls == 1:
        for h in range(1, 6):
            assert torch.equal(tokens[:, h], tokens[:, 0])
    model.eval()
    with torch.no_grad():
        feats = model(x)
        pre = model.base(x)
    assert feats.shape == (4, 6, 192)
    for h in range(6):
        token = pre[:, h if ncls == 6 else 0]
        torch.testing.assert_close(feats[:, h], model.bottleneck[h](token))


@pytest.mark.parametrize("ncls, said, moae", [(6, True, True), (6, False, False), (1, False, False)])
def test_classifier_sizes_are_the_references_whatever_the_loss(ncls: int, said: bool, moae: bool) -> None:
    """Full, baseline and ncls1: heads 0, 2, 4 one output per outfit, 1, 3, 5 one per person."""
    model = tiny(ncls=ncls, said=said, moae=moae)
    assert model.classifier_sizing == "reference"
    assert model.head_classes == [C, P, C, P, C, P]
    assert [fc.weight.shape[0] for fc in model.classifier] == [C, P, C, P, C, P]
    assert head_classes(said, P, C) == [C, P, C, P, C, P]


def test_classifier_sizing_by_loss_is_opt_in() -> None:
    assert tiny(said=True, classifier_sizing="by_loss").head_classes == [C, P, C, P, C, P]
    model = tiny(said=False, moae=False, classifier_sizing="by_loss")
    assert model.head_classes == [P] * 6 and [fc.weight.shape[0] for fc in model.classifier] == [P] * 6
    with pytest.raises(AtreidError, match="classifier_sizing must be one of reference, by_loss"):
        tiny(classifier_sizing="loss")
    # Without SAID the short-term heads take person ids as targets: C >= P is needed.
    with pytest.raises(AtreidError, match="3 outfit classes for 7 persons"):
        tiny(said=False, num_outfits=3)
    assert tiny(said=False, num_outfits=3, classifier_sizing="by_loss").head_classes == [P] * 6


def test_heads_init() -> None:
    torch.manual_seed(0)
    model = build_model("vit_tiny_uniat", ncls=6, moae=False, num_persons=300, num_outfits=400, img_size=(128, 64))
    weights = torch.cat([bn.weight.detach() for bn in model.bottleneck])
    assert weights.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert weights.std().item() == pytest.approx(0.01, rel=0.15)
    for bn in model.bottleneck:
        assert torch.count_nonzero(bn.bias) == 0 and not bn.bias.requires_grad and bn.weight.requires_grad
        assert bn.eps == 1e-5
    for fc in model.classifier:
        assert fc.bias is None
        assert fc.weight.std().item() == pytest.approx(0.001, rel=0.05)


def test_no_weight_decay_names() -> None:
    model = tiny()
    names = model.no_weight_decay()
    expected = {"base.pos_embed", "base.cls_token", "base.norm.weight", "base.norm.bias"}
    for i in range(4):
        expected |= {f"base.blocks.{i}.norm{j}.{p}" for j in (1, 2) for p in ("weight", "bias")}
    assert names == expected
    assert names <= {n for n, _ in model.named_parameters()}


def test_large_lr_names() -> None:
    model = tiny()
    names = model.large_lr_parameter_names()
    params = {n for n, _ in model.named_parameters()}
    assert names <= params
    expected = {n for n in params if n.startswith(("base.blocks.2.", "base.blocks.3.", "base.norm.",
                                                   "bottleneck.", "classifier."))}
    assert names == expected
    assert "base.blocks.3.mlp.in_w" in names and "base.blocks.3.mlp.gate" in names
    assert not any(n.startswith(("base.blocks.0.", "base.blocks.1.", "base.patch_embed", "base.pos_embed"))
                   for n in names)


def test_parameter_layout_maps_to_reference() -> None:
    model = tiny()
    keys = set(model.state_dict())
    for key in ("base.cls_token", "base.pos_embed", "base.patch_embed.proj.weight", "base.blocks.0.norm1.weight",
                "base.blocks.0.attn.qkv.weight", "base.blocks.0.attn.proj.bias", "base.blocks.0.norm2.bias",
                "base.blocks.0.mlp.fc1.weight", "base.blocks.0.mlp.fc2.bias", "base.blocks.3.mlp.gate",
                "base.norm.weight", "bottleneck.5.running_var", "classifier.5.weight"):
        assert key in keys, key


@pytest.mark.parametrize("gate", ["soft", "hard"])
def test_backward_reaches_all_trainable_parameters(gate: str) -> None:
    """Every trainable parameter gets a gradient; under the hard gate the gates' is exactly 0
    (so the optimiser still applies weight decay to them, as it does in the reference)."""
    model = tiny(gate=gate, drop_path_rate=0.0)
    tokens, logits = model(torch.randn(2, 3, 128, 64))
    (tokens.sum() + sum(lg.sum() for lg in logits)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    gates = [p.grad for n, p in model.named_parameters() if n.endswith(".mlp.gate")]
    assert len(gates) == 4
    assert all((torch.count_nonzero(g) == 0) == (gate == "hard") for g in gates)


# ---- random initialisation (pretrained: none), as the released code does it ----------------
def test_random_init_statistics() -> None:
    torch.manual_seed(0)
    model = build_model("vit_tiny_uniat", ncls=6, moae=True, num_persons=P, num_outfits=C, img_size=(128, 64))
    base = model.base
    assert torch.count_nonzero(base.cls_token) == 0  # CLS tokens start at zero
    assert base.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)
    for l, block in enumerate(base.blocks, start=1):
        mlp = block.mlp
        std = lambda t: t.std().item()  # noqa: E731
        assert std(block.attn.qkv.weight) == pytest.approx(0.02, rel=0.03)
        assert std(mlp.fc1.weight) == pytest.approx(0.02, rel=0.03)
        assert std(block.attn.proj.weight) == pytest.approx(0.02 / math.sqrt(2 * l), rel=0.03)
        assert std(mlp.fc2.weight) == pytest.approx(0.02 / math.sqrt(2 * l), rel=0.03)
        assert std(mlp.gate) == pytest.approx(0.02, rel=0.1)
        for a in range(5):
            assert std(mlp.in_w[a]) == pytest.approx(0.02, rel=0.03)
            # each out-atom: divided by sqrt(2l) once per each of the five experts using it
            assert std(mlp.out_w[a]) == pytest.approx(0.02 / (2 * l) ** 2.5, rel=0.03)
            assert std(mlp.out_w[a]) / std(mlp.in_w[a]) == pytest.approx((2 * l) ** -2.5, rel=0.05)
        for bias in (block.attn.qkv.bias, block.attn.proj.bias, mlp.fc1.bias, mlp.fc2.bias, mlp.in_b, mlp.out_b):
            assert torch.count_nonzero(bias) == 0
        for norm in (block.norm1, block.norm2):
            assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.count_nonzero(norm.bias) == 0
        # five independent atoms, none a copy of another or of the shared FFN
        atoms_in = [mlp.in_w[a] for a in range(5)] + [mlp.fc1.weight.t()]
        atoms_out = [mlp.out_w[a] * (2 * l) ** 2 for a in range(5)] + [mlp.fc2.weight.t()]
        for atoms in (atoms_in, atoms_out):
            for i in range(len(atoms)):
                for j in range(i + 1, len(atoms)):
                    corr = torch.corrcoef(torch.stack([atoms[i].flatten(), atoms[j].flatten()]))[0, 1]
                    assert abs(corr.item()) < 0.02
    assert torch.equal(base.norm.weight, torch.ones_like(base.norm.weight))


def test_random_init_rescaling_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same draws with and without the rescaling: block l's attn.proj and fc2 are divided by
    sqrt(2l) once, each out-atom five times (once per expert), nothing else changes."""
    from atreid.model.vit import MultiTokenViT

    def build() -> nn.Module:
        torch.manual_seed(4)
        return build_model("vit_tiny_uniat", ncls=6, moae=True, num_persons=P, num_outfits=C, img_size=(128, 64))

    scaled = build().state_dict()
    monkeypatch.setattr(MultiTokenViT, "rescale_output_layers", lambda self: None)
    raw = build().state_dict()
    rescaled = set()
    for l in range(1, 5):
        s = math.sqrt(2.0 * l)
        blk = f"base.blocks.{l - 1}"
        assert torch.equal(scaled[f"{blk}.attn.proj.weight"], raw[f"{blk}.attn.proj.weight"] / s)
        assert torch.equal(scaled[f"{blk}.mlp.fc2.weight"], raw[f"{blk}.mlp.fc2.weight"] / s)
        out = raw[f"{blk}.mlp.out_w"].clone()
        for _ in range(5):
            out /= s
        assert torch.equal(scaled[f"{blk}.mlp.out_w"], out)
        torch.testing.assert_close(scaled[f"{blk}.mlp.out_w"], raw[f"{blk}.mlp.out_w"] / (2 * l) ** 2.5)
        rescaled |= {f"{blk}.attn.proj.weight", f"{blk}.mlp.fc2.weight", f"{blk}.mlp.out_w"}
    for key in raw:
        if key not in rescaled:
            assert torch.equal(scaled[key], raw[key]), key  # in-atoms, fc1, gates, biases, ... untouched


def test_rescaling_without_moae_touches_proj_and_fc2_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from atreid.model.vit import MultiTokenViT

    def build() -> nn.Module:
        torch.manual_seed(5)
        return build_model("vit_tiny_uniat", ncls=1, moae=False, num_persons=P, num_outfits=C, img_size=(128, 64))

    scaled = build().state_dict()
    monkeypatch.setattr(MultiTokenViT, "rescale_output_layers", lambda self: None)
    raw = build().state_dict()
    for key in raw:
        l = int(key.split(".")[2]) + 1 if key.startswith("base.blocks.") else None
        if l is not None and key.endswith(("attn.proj.weight", "mlp.fc2.weight")):
            assert torch.equal(scaled[key], raw[key] / math.sqrt(2.0 * l)), key
        else:
            assert torch.equal(scaled[key], raw[key]), key
    assert torch.count_nonzero(scaled["base.cls_token"]) == 0
