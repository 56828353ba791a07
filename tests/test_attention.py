"""Attention maps of the CLS tokens: rollout is row-stochastic, a hand-set model looks where
it was told, ncls1 draws one map, and `atreid explain` works from an evaluation model file."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from PIL import Image

from atreid.model.attention import block_attentions, rollout, token_maps
from atreid.model.uniat import build_model

SIZE = (64, 32)  # a 4 x 2 patch grid


def tiny(ncls: int = 6, seed: int = 0, size=SIZE):
    torch.manual_seed(seed)
    return build_model("vit_tiny_uniat", ncls=ncls, moae=ncls == 6, num_persons=3, num_outfits=3, img_size=size,
                       said=False).eval()


def test_rollout_rows_sum_to_one_and_maps_have_the_grid():
    model = tiny()
    images = torch.randn(2, 3, *SIZE)
    attentions = block_attentions(model, images)
    assert len(attentions) == model.base.depth
    tokens = 6 + 8
    for attention in attentions:
        assert attention.shape == (2, tokens, tokens)
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, tokens), atol=1e-5, rtol=0)
    rolled = rollout(attentions)
    torch.testing.assert_close(rolled.sum(-1), torch.ones(2, tokens), atol=1e-5, rtol=0)
    assert (rolled >= 0).all()
    maps = token_maps(model, images)
    assert maps.shape == (2, 6, 4, 2)
    assert ((maps.sum((-1, -2)) > 0) & (maps.sum((-1, -2)) <= 1 + 1e-5)).all()
    # The recorded attentions are the model's own: the hooks leave its output unchanged.
    torch.testing.assert_close(model(images), model(images))


def _looks_at(model, patch: int) -> None:
    """Weights set by hand so that every token of every block attends (almost) only to ``patch``:
    patch tokens are their position embedding alone, only ``patch``'s is non-zero; q is a
    constant and k reads that embedding, so the logits favour ``patch``; the blocks add nothing
    to the residual stream, so every block sees the same tokens."""
    base = model.base
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        base.pos_embed[0, base.ncls + patch, 0] = 10.0
        dim = base.embed_dim
        for block in base.blocks:
            block.norm1.weight.fill_(1.0)
            head_dim = block.attn.head_dim
            for head in range(block.attn.num_heads):
                block.attn.qkv.bias[head * head_dim] = 1.0  # q: a constant
                block.attn.qkv.weight[dim + head * head_dim, 0] = 10.0  # k: reads feature 0


@pytest.mark.parametrize("patch", [0, 5])
@pytest.mark.parametrize("method", ["rollout", "last"])
def test_a_model_told_to_look_at_one_patch_gives_a_map_peaked_there(patch, method):
    model = tiny()
    _looks_at(model, patch)
    maps = token_maps(model, torch.randn(1, 3, *SIZE), method=method).reshape(1, 6, -1)
    assert (maps.argmax(-1) == patch).all()
    assert (maps[..., patch] > 0.9).all()  # rollout: 1 - 0.5^4 of each token comes from it


def test_ncls1_gives_one_map(tmp_path, monkeypatch):
    from atreid.report import attention as figure

    model = tiny(ncls=1)
    maps = token_maps(model, torch.randn(3, 3, *SIZE))
    assert maps.shape == (3, 1, 4, 2)
    drawn = []
    monkeypatch.setattr(figure, "save_figure", lambda fig, out: drawn.append(len(fig.axes)))
    figure.plot_token_maps([torch.zeros(*SIZE, 3, dtype=torch.uint8).numpy()] * 3, maps, ["a", "b", "c"], "ncls1",
                           tmp_path / "x.png")
    assert drawn == [3 * 2]  # each image and its one map


@pytest.mark.slow
def test_vit_base_at_256x128_gives_six_16x8_maps():
    model = build_model("vit_base_uniat", ncls=6, moae=True, num_persons=3, num_outfits=3, img_size=(256, 128),
                        said=False).eval()
    maps = token_maps(model, torch.randn(1, 3, 256, 128))
    assert maps.shape == (1, 6, 16, 8)
    torch.testing.assert_close(rollout(block_attentions(model, torch.randn(1, 3, 256, 128))).sum(-1),
                               torch.ones(1, 6 + 128), atol=1e-4, rtol=0)


def test_pick_person_images_rgb_and_ir_in_two_outfits():
    from atreid.errors import AtreidError
    from atreid.report.attention import pick_person_images

    rows = []
    for person, modalities, outfits in ((1, ("rgb",), (1, 2)), (2, ("rgb", "ir"), (1,)), (3, ("rgb", "ir"), (1, 2, 3))):
        for modality in modalities:
            for clothes in outfits:
                for k in range(2):
                    rows.append({"person": person, "modality": modality, "clothes": clothes, "flag": 2,
                                 "path": f"{person}/{modality}_{clothes}_{k}.jpg"})
    picked = pick_person_images(pd.DataFrame(rows))
    assert list(picked["path"]) == ["3/rgb_1_0.jpg", "3/ir_1_0.jpg", "3/rgb_2_0.jpg", "3/ir_2_0.jpg"]
    with pytest.raises(AtreidError, match="no test person"):
        pick_person_images(pd.DataFrame(rows), skip=1)


def test_explain_draws_from_an_evaluation_model_file(tmp_path):
    from atreid.cli import main
    from atreid.config import load_params, resolve_variant
    from atreid.engine.checkpoint import model_from_settings, save_trained_model
    from tests.conftest import REPO

    settings = resolve_variant(load_params(REPO / "params.yaml"), "ncls1", 0)
    settings["model"].update({"image_size": list(SIZE), "pretrained": "none"})
    labels = {"persons": [1, 2, 3], "outfits": [[1, 1], [2, 1], [3, 1]], "outfit_to_person": [0, 1, 2]}
    model_path = tmp_path / "models" / "ncls1" / "seed0" / "model.pt"
    save_trained_model(model_path, model=model_from_settings(settings, 3, 3), settings=settings, labels=labels,
                       epoch=1)
    images = []
    for i, colour in enumerate(("red", "gray")):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 90), colour).save(images[-1])
    out = tmp_path / "explain.png"
    assert main(["explain", "--model", str(model_path), "--images", *map(str, images), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["explain", "--model", str(model_path), "--out", str(out)]) == 2  # neither --images nor --atustc


def test_explain_reads_an_imported_reference_checkpoint(tmp_path):
    """The authors' checkpoint, imported as the pipeline imports it, is explained as is."""
    from tests.conftest import settings_file

    from atreid.cli import main
    from atreid.model.reference import atreid_to_reference
    from tests.conftest import write_jpeg
    from tests.test_reference_checkpoint import TINY_SETTINGS, TINY_SIZE, save_reference
    from tests.test_reference_checkpoint import tiny_model as reference_sized_model

    reference = save_reference(tmp_path / "epoch_best.t",
                               atreid_to_reference(reference_sized_model(ncls=6, moae=True, said=True)))
    model_path = tmp_path / "models" / "full" / "imported" / "model.pt"
    assert main(["import-checkpoint", str(reference), "--variant", "full", "--out", str(model_path),
                 "--settings", str(settings_file(tmp_path / "settings.json", {**TINY_SETTINGS, "said": True}))]) == 0
    image = tmp_path / "person.jpg"
    write_jpeg(image, value=90, size=TINY_SIZE)
    out = tmp_path / "imported.png"
    assert main(["explain", "--model", str(model_path), "--images", str(image), "--method", "last",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
