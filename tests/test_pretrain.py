"""The pretrain_backbone stage: population, augmentation, the weights file and its loading."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from atreid.data.synthetic.atustc import person_identity, person_outfit
from atreid.engine import pretrain
from atreid.engine.trainer import load_pretrained_weights, pretrained_source
from atreid.errors import AtreidError
from atreid.model import build_model
from atreid.model.moae import MoAE

TINY = dict(seed=3, persons=4, outfits=2, cameras=4, views=3, infrared=True, labels="outfit", threads=1, iterations=6,
            batch_size=8, lr=1e-3, weight_decay=0.05, warmup_iterations=2, label_smoothing=0.1, pad=4, flip=0.5)
SIZE = (64, 32)


def settings(**overrides) -> dict:
    return {"arch": "vit_tiny_uniat", "image_size": list(SIZE), "pretrain": {**TINY, **overrides}}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("pretrain")
    summary = pretrain.pretrain_backbone(settings(), out_path=folder / "backbone.pth",
                                         history_path=folder / "history.csv")
    return folder, summary


def test_population_is_deterministic_and_labelled_by_look() -> None:
    images, labels = pretrain.render_population(TINY, SIZE)
    again, labels_again = pretrain.render_population(TINY, SIZE)
    assert images.shape == (4 * 2 * 3, *SIZE, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert labels.tolist() == [look for look in range(8) for _ in range(3)]
    _, persons = pretrain.render_population({**TINY, "labels": "person"}, SIZE)
    assert persons.tolist() == [p for p in range(4) for _ in range(6)]
    other, _ = pretrain.render_population({**TINY, "seed": 4}, SIZE)
    assert not np.array_equal(images, other)


def test_infrared_views_are_grey_and_rgb_only_population_has_none() -> None:
    def grey(images):
        return [bool((im[..., 0] == im[..., 1]).all() and (im[..., 1] == im[..., 2]).all()) for im in images]

    with_ir, _ = pretrain.render_population({**TINY, "views": 12}, SIZE)
    rgb_only, _ = pretrain.render_population({**TINY, "views": 12, "infrared": False}, SIZE)
    assert any(grey(with_ir)) and not all(grey(with_ir))
    assert not any(grey(rgb_only))


def test_population_shares_no_identity_or_outfit_with_synthetic_atustc() -> None:
    from atreid.data.synthetic.render import Identity, Outfit

    seed = 0
    ours_ids = [Identity.sample(pretrain._rng(seed, pretrain._IDENTITY, p)) for p in range(50)]
    ours_outfits = [Outfit.sample(pretrain._rng(seed, pretrain._OUTFIT, p, 0)) for p in range(50)]
    atustc_ids = [person_identity(seed, p) for p in range(1, 80)]
    atustc_outfits = [person_outfit(seed, p, 1) for p in range(1, 80)]
    assert not set(map(repr, ours_ids)) & set(map(repr, atustc_ids))
    assert not set(map(repr, ours_outfits)) & set(map(repr, atustc_outfits))


def test_batch_augment_is_a_function_of_the_generator() -> None:
    images = torch.randint(0, 256, (6, 3, *SIZE), dtype=torch.uint8)
    augment = pretrain.BatchAugment(pad=4, flip=0.5)
    a = augment(images, torch.Generator().manual_seed(1))
    b = augment(images, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.equal(a, augment(images, torch.Generator().manual_seed(2)))
    assert torch.equal(pretrain.BatchAugment(pad=0, flip=0.0)(images, torch.Generator()), images)
    # flip only: every image is itself or its mirror
    flipped = pretrain.BatchAugment(pad=0, flip=0.5)(images, torch.Generator().manual_seed(0))
    for original, out in zip(images, flipped):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))


def test_weights_file_is_a_timm_state_dict_with_history(weights) -> None:
    folder, summary = weights
    state = torch.load(folder / "backbone.pth", weights_only=True)
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "head.weight"} <= set(state)
    assert state["pos_embed"].shape == (1, 1 + (SIZE[0] // 16) * (SIZE[1] // 16), 192)
    assert state["head.weight"].shape == (summary["classes"], 192) and summary["classes"] == 8
    assert sum(k.startswith("blocks.") and k.endswith("attn.qkv.weight") for k in state) == 4
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == ["iteration", "lr", "loss", "accuracy"]
    assert history["iteration"].iloc[-1] == TINY["iterations"]
    assert not list(folder.glob("*.tmp"))


def test_pretraining_is_deterministic(weights, tmp_path) -> None:
    folder, _ = weights
    pretrain.pretrain_backbone(settings(), out_path=tmp_path / "b.pth", history_path=tmp_path / "h.csv")
    first = torch.load(folder / "backbone.pth", weights_only=True)
    second = torch.load(tmp_path / "b.pth", weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    pretrain.pretrain_backbone(settings(seed=4), out_path=tmp_path / "c.pth", history_path=tmp_path / "h2.csv")
    third = torch.load(tmp_path / "c.pth", weights_only=True)
    assert not torch.equal(first["blocks.0.attn.qkv.weight"], third["blocks.0.attn.qkv.weight"])


def test_variants_load_it_like_the_published_file(weights) -> None:
    folder, _ = weights
    state = torch.load(folder / "backbone.pth", weights_only=True)
    torch.manual_seed(0)
    model = build_model("vit_tiny_uniat", ncls=6, moae=True, num_persons=5, num_outfits=9, img_size=SIZE)
    gates = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".mlp.gate")}
    report = load_pretrained_weights(model, str(folder / "backbone.pth"), at_run_size=True)
    assert report["source_grid"] == report["target_grid"] == [SIZE[0] // 16, SIZE[1] // 16]
    loaded = model.base.state_dict()
    # every CLS token and its position row come from the single pre-trained one
    assert torch.equal(loaded["cls_token"], state["cls_token"].expand(-1, 6, -1))
    assert torch.equal(loaded["pos_embed"][:, :6], state["pos_embed"][:, :1].expand(-1, 6, -1))
    assert torch.equal(loaded["pos_embed"][:, 6:], state["pos_embed"][:, 1:])
    # MoAE atoms are copies of the pre-trained FFN; gates keep their init
    for name, module in model.base.named_modules():
        if isinstance(module, MoAE):
            for atom in range(module.in_w.shape[0]):
                assert torch.equal(module.in_w[atom], state[f"{name}.fc1.weight"].t())
                assert torch.equal(module.out_w[atom], state[f"{name}.fc2.weight"].t())
    for key, value in gates.items():
        assert torch.equal(model.state_dict()[key], value)


def test_synthetic_source_needs_the_stage_file(tmp_path) -> None:
    synthetic = {"model": {"pretrained": "synthetic"}}
    with pytest.raises(AtreidError, match="pretrained-file.*snakemake models/pretrained/backbone.pth"):
        pretrained_source(synthetic, None)
    assert pretrained_source(synthetic, tmp_path / "b.pth") == str(tmp_path / "b.pth")
    assert pretrained_source({"model": {"pretrained": "none"}}, tmp_path / "b.pth") == "none"


@pytest.mark.parametrize("overrides, message", [
    ({"labels": "clothes"}, "pretrain.labels"),
    ({"labels": "person", "persons": 1}, "pretrain.persons"),
    ({"infrared": True, "cameras": 1}, "pretrain.cameras"),
])
def test_bad_settings_are_one_line_errors(overrides, message, tmp_path) -> None:
    with pytest.raises(AtreidError, match=message):
        pretrain.pretrain_backbone(settings(**overrides), out_path=tmp_path / "b.pth",
                                   history_path=tmp_path / "h.csv")
    assert not list(tmp_path.iterdir())


def test_schema_fills_the_pretrain_defaults() -> None:
    from atreid.config import load_params, validate_params

    params = load_params("params.yaml")
    assert set(TINY) == set(params["pretrain"])
    broken = copy.deepcopy(params)
    broken["pretrain"]["labels"] = "clothes"
    with pytest.raises(AtreidError, match="pretrain.labels"):
        validate_params(broken)
