"""Reference checkpoints (epoch_best.t) <-> our model.pt: layout, bit-identical round trips,
the documented expert numbering and gate columns, strict errors, and the import rule."""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from atreid.cli import main
from atreid.commands.checkpoint import PLACEHOLDER_LABELS
from atreid.engine.checkpoint import load_trained_model
from atreid.errors import AtreidError
from atreid.eval.features import extract_features
from atreid.model import build_model
from atreid.model.reference import atreid_to_reference, expert_index, reference_to_atreid
from tests.conftest import REPO, settings_file, write_jpeg

TINY_SIZE = (128, 64)
# At 128x64 strides 15 and 16 give the same 8x4 grid: the tiny tests name the stride.
TINY_SETTINGS = {"model": {"image_size": list(TINY_SIZE), "patch_stride": 16}}
CASES = {"ncls6-moae": dict(ncls=6, moae=True, said=True),
         "ncls6-no-moae": dict(ncls=6, moae=False, said=False),
         "ncls1": dict(ncls=1, moae=False, said=False)}
SCENARIO_PAIRS = ((0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (2, 4))  # from the reference doc


def tiny_model(seed: int = 0, *, ncls: int, moae: bool, said: bool) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("vit_tiny_uniat", ncls=ncls, moae=moae, num_persons=5, num_outfits=7, img_size=TINY_SIZE,
                        said=said, drop_path_rate=0.0)
    with torch.no_grad():  # trained-looking necks, so a dropped or swapped statistic shows
        for h, bn in enumerate(model.bottleneck):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.normal_()
            bn.num_batches_tracked.fill_(1000 + h)
    return model.eval()


def same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Bit-identical: dtype, shape and values."""
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def save_reference(path: Path, state: dict, epoch: int | None = 37) -> Path:
    torch.save(state if epoch is None else {"model": state, "epoch": epoch}, path)
    return path


def cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("images")
    paths = [f"img{i}.jpg" for i in range(5)]
    for i, rel in enumerate(paths):
        write_jpeg(root / rel, value=40 * i + 20, size=TINY_SIZE)
    return root, paths


# ---- round trips -----------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_is_bit_identical(case: str, tmp_path: Path, image_folder) -> None:
    options = CASES[case]
    model = tiny_model(**options)
    reference = atreid_to_reference(model)
    ref_file = save_reference(tmp_path / "epoch_best.t", reference)

    out = tmp_path / "models" / case / "model.pt"
    # The variant's own flags (a baseline: said false), as the import rule passes them.
    settings_json = {**TINY_SETTINGS, "said": options["said"]}
    assert cli("import-checkpoint", ref_file, "--variant", case, "--out", out,
               "--settings", settings_file(tmp_path / "settings.json", settings_json)) == 0
    loaded, payload = load_trained_model(out)
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(theirs) == list(ours)
    assert all(same(theirs[k], ours[k]) for k in ours), [k for k in ours if not same(theirs[k], ours[k])]

    settings = payload["settings"]
    assert settings["imported_from"] == str(ref_file) and settings["name"] == case
    assert (settings["ncls"], settings["moae"], settings["said"]) == (options["ncls"], options["moae"],
                                                                     options["said"])
    info = settings["reference_import"]
    assert info["epoch"] == 37 and payload["epoch"] == 37 and info["patch_stride"] == 16
    assert info["arch"] == payload["arch"] == "vit_tiny_uniat"
    # The reference sizing in every variant: heads 0, 2, 4 have the 7 outfit classes.
    assert payload["num_persons"] == 5 and payload["num_outfits"] == 7
    assert loaded.head_classes == [7, 5, 7, 5, 7, 5] and settings["model"]["classifier_sizing"] == "reference"
    assert info["assumed"] == ["hdw", "model.pretrained", "model.drop_path_rate", "model.gate",
                               "model.classifier_sizing"]
    assert payload["labels"]["source"] == PLACEHOLDER_LABELS == info["labels"]
    assert len(payload["labels"]["persons"]) == 5

    root, paths = image_folder
    before = extract_features(model, root, paths, image_size=TINY_SIZE, batch_size=2)
    after = extract_features(loaded, root, paths, image_size=TINY_SIZE, batch_size=2)
    assert before.shape == (5, 6, 192) and torch.equal(before, after)

    # ... and back: the exported file is the original reference state_dict, bit for bit.
    back = tmp_path / "exported.t"
    assert cli("export-checkpoint", out, "--out", back) == 0
    exported = torch.load(back, weights_only=True)
    assert exported["epoch"] == 37
    assert list(exported["model"]) == list(reference)
    assert all(same(exported["model"][k], reference[k]) for k in reference)


def test_reference_to_ours_to_reference_keeps_the_unused_gates(tmp_path: Path) -> None:
    reference = atreid_to_reference(tiny_model(**CASES["ncls6-no-moae"]))
    gates = [k for k in reference if ".mlp.gate." in k]
    assert len(gates) == 4 * 6 and all(reference[k].shape == (1, 192) for k in gates)
    torch.manual_seed(3)
    for k in gates:  # the reference's unused gates keep their (random) init
        reference[k] = torch.randn(1, 192)
    out = tmp_path / "model.pt"
    cli("import-checkpoint", save_reference(tmp_path / "in.t", reference), "--variant", "b", "--out", out,
        "--settings", settings_file(tmp_path / "settings.json", TINY_SETTINGS))
    cli("export-checkpoint", out, "--out", tmp_path / "out.t")
    exported = torch.load(tmp_path / "out.t", weights_only=True)["model"]
    assert list(exported) == list(reference) and all(same(exported[k], reference[k]) for k in reference)


def test_export_repeats_each_atom_as_one_shared_tensor(tmp_path: Path) -> None:
    model = tiny_model(**CASES["ncls6-moae"])
    path = tmp_path / "model.pt"
    from atreid.engine.checkpoint import save_trained_model
    from atreid.config import load_params, resolve_variant

    settings = resolve_variant(load_params(REPO / "params.yaml"), "full", 0)
    labels = {"persons": list(range(5)), "outfits": [[p, c] for p in range(5) for c in range(2)][:7],
              "outfit_to_person": [0, 0, 1, 1, 2, 2, 3]}
    save_trained_model(path, model=model, settings=settings, labels=labels, epoch=8)
    assert cli("export-checkpoint", path, "--out", tmp_path / "epoch_best.t") == 0
    state = torch.load(tmp_path / "epoch_best.t", weights_only=True)["model"]
    for a in range(5):
        first = state[f"base.blocks.1.mlp.ffn.{expert_index(a, 0)}.0.weight"]
        for b in range(5):  # the same storage: torch.save wrote each atom once
            assert state[f"base.blocks.1.mlp.ffn.{expert_index(a, b)}.0.weight"].data_ptr() == first.data_ptr()
            assert (state[f"base.blocks.1.mlp.ffn.{expert_index(b, a)}.2.weight"].data_ptr()
                    == state[f"base.blocks.1.mlp.ffn.{expert_index(0, a)}.2.weight"].data_ptr())


# ---- ViT-B shape of the published checkpoint --------------------------------------------
@pytest.fixture(scope="module")
def vit_base_reference() -> dict[str, torch.Tensor]:
    """The reference layout of a ViT-B/16, ncls 6, MoAE model (init skipped: values are constants)."""
    import atreid.model.moae as moae_module
    import atreid.model.vit as vit_module

    with pytest.MonkeyPatch.context() as mp:
        skip = lambda tensor, *args, **kwargs: tensor  # noqa: E731 - 26 s of random init otherwise
        for module in (vit_module, moae_module):
            mp.setattr(module, "trunc_normal_", skip)
        for name in ("kaiming_uniform_", "uniform_", "normal_", "zeros_"):
            mp.setattr(torch.nn.init, name, skip)
        model = build_model("vit_base_uniat", ncls=6, moae=True, num_persons=300, num_outfits=900)
    with torch.no_grad():
        for i, tensor in enumerate(model.state_dict().values()):
            tensor.fill_(i % 97)
    return atreid_to_reference(model)


@pytest.mark.slow
def test_vit_base_layout_matches_the_documented_checkpoint(vit_base_reference) -> None:
    state = vit_base_reference
    assert len(state) == 1458
    d, h = 768, 3072
    expected = {"base.cls_token": (1, 6, d), "base.pos_embed": (1, 6 + 128, d),
                "base.patch_embed.proj.weight": (d, 3, 16, 16), "base.patch_embed.proj.bias": (d,),
                "base.norm.weight": (d,), "base.norm.bias": (d,)}
    for i in range(12):
        blk = f"base.blocks.{i}"
        expected.update({f"{blk}.norm1.weight": (d,), f"{blk}.norm1.bias": (d,), f"{blk}.norm2.weight": (d,),
                         f"{blk}.norm2.bias": (d,), f"{blk}.attn.qkv.weight": (3 * d, d),
                         f"{blk}.attn.qkv.bias": (3 * d,), f"{blk}.attn.proj.weight": (d, d),
                         f"{blk}.attn.proj.bias": (d,)})
        for j in range(26):
            expected.update({f"{blk}.mlp.ffn.{j}.0.weight": (h, d), f"{blk}.mlp.ffn.{j}.0.bias": (h,),
                             f"{blk}.mlp.ffn.{j}.2.weight": (d, h), f"{blk}.mlp.ffn.{j}.2.bias": (d,)})
        expected.update({f"{blk}.mlp.gate.{t}.weight": (2, d) for t in range(6)})
    for hd in range(6):
        expected.update({f"bottleneck.{hd}.{n}": (d,) for n in ("weight", "bias", "running_mean", "running_var")})
        expected[f"bottleneck.{hd}.num_batches_tracked"] = ()
        expected[f"classifier.{hd}.weight"] = (900 if hd % 2 == 0 else 300, d)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    ours, config = reference_to_atreid(state)  # everything inferred: arch, 256x128, stride 16
    # Counted once (each atom one tensor shared by five keys), the file holds exactly our weights.
    unique = {(v.data_ptr(), tuple(v.shape)): v.numel() for v in state.values()}
    assert sum(unique.values()) == sum(v.numel() for v in ours.values())
    # SAID is a loss switch, not in the weights: absent, it is recorded as false.
    assert {k: config[k] for k in ("arch", "ncls", "moae", "said", "classifier_sizing", "image_size",
                                   "patch_stride", "grid", "num_persons", "num_outfits")} == {
        "arch": "vit_base_uniat", "ncls": 6, "moae": True, "said": False, "classifier_sizing": "reference",
        "image_size": [256, 128], "patch_stride": 16, "grid": [16, 8], "num_persons": 300, "num_outfits": 900}
    assert ours["base.blocks.11.mlp.in_w"].shape == (5, d, h) and ours["base.blocks.0.mlp.gate"].shape == (6, 2, d)
    assert len(ours) == 4 + 12 * 17 + 2 + 30 + 6  # our layout: 17 tensors per block


@pytest.mark.slow
def test_patch_stride_is_inferred_from_the_position_embedding(vit_base_reference) -> None:
    state = dict(vit_base_reference)
    state["base.pos_embed"] = torch.zeros(1, 6 + 210, 768)  # 21x10 patches: stride 12 at 256x128
    _, config = reference_to_atreid(state)
    assert config["patch_stride"] == 12 and config["grid"] == [21, 10]
    with pytest.raises(AtreidError, match="stride 16 at 256x128 gives 16x8 = 128.*stride 12 fits"):
        reference_to_atreid(state, patch_stride=16)
    state["base.pos_embed"] = torch.zeros(1, 6 + 100, 768)
    with pytest.raises(AtreidError, match="100 patch rows, which no patch stride 1..16 gives at image size 256x128"):
        reference_to_atreid(state)
    with pytest.raises(AtreidError, match="strides \\[15, 16\\] all give at 128x64"):
        reference_to_atreid(atreid_to_reference(tiny_model(**CASES["ncls1"])), image_size=TINY_SIZE)


# ---- the documented mapping, on hand-built values ----------------------------------------
def hand_built_reference(moae: bool = True, gate_sign: float = 1.0) -> dict[str, torch.Tensor]:
    """vit_tiny_uniat-shaped reference state_dict written key by key from the doc's table.

    Atoms carry their identity: in-atom a of expert 1+5a+b is filled with 1000+a (bias
    1100+a), out-atom b with 2000+b (bias 2100+b); gate t's column 0 holds gate_sign*(t+1),
    column 1 -gate_sign*(t+1). Every expert key holds its own copy, as a file read back
    without storage sharing would. (A new dict each call; tests replace entries, never
    modify the cached tensors in place.)
    """
    return dict(_hand_built(moae, gate_sign))


def _reference_stem(rand, ncls: int, d: int) -> dict[str, torch.Tensor]:
    """CLS tokens, position embedding (ncls + 8x4 patch rows) and patch projection, reference keys."""
    return {"base.cls_token": rand(1, ncls, d), "base.pos_embed": rand(1, ncls + 32, d),
            "base.patch_embed.proj.weight": rand(d, 3, 16, 16), "base.patch_embed.proj.bias": rand(d)}


def _reference_block(rand, blk: str, d: int, hid: int) -> dict[str, torch.Tensor]:
    """One block's norms, attention and shared FFN (ffn.0) under the reference's keys."""
    return {f"{blk}.norm1.weight": 1 + rand(d), f"{blk}.norm1.bias": rand(d),
            f"{blk}.attn.qkv.weight": rand(3 * d, d), f"{blk}.attn.qkv.bias": rand(3 * d),
            f"{blk}.attn.proj.weight": rand(d, d), f"{blk}.attn.proj.bias": rand(d),
            f"{blk}.norm2.weight": 1 + rand(d), f"{blk}.norm2.bias": rand(d),
            f"{blk}.mlp.ffn.0.0.weight": rand(hid, d), f"{blk}.mlp.ffn.0.0.bias": rand(hid),
            f"{blk}.mlp.ffn.0.2.weight": rand(d, hid), f"{blk}.mlp.ffn.0.2.bias": rand(d)}


@functools.lru_cache(maxsize=None)
def _hand_built(moae: bool, gate_sign: float) -> dict[str, torch.Tensor]:
    d, hid, depth, ncls = 192, 768, 4, 6
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.02  # noqa: E731
    s = _reference_stem(rand, ncls, d)
    for i in range(depth):
        blk = f"base.blocks.{i}"
        s.update(_reference_block(rand, blk, d, hid))
        if moae:
            for a in range(5):
                for b in range(5):
                    j = 1 + 5 * a + b
                    s[f"{blk}.mlp.ffn.{j}.0.weight"] = torch.full((hid, d), 1000.0 + a)
                    s[f"{blk}.mlp.ffn.{j}.0.bias"] = torch.full((hid,), 1100.0 + a)
                    s[f"{blk}.mlp.ffn.{j}.2.weight"] = torch.full((d, hid), 2000.0 + b)
                    s[f"{blk}.mlp.ffn.{j}.2.bias"] = torch.full((d,), 2100.0 + b)
        for t in range(ncls):
            weight = torch.empty(2 if moae else 1, d)
            weight[0] = gate_sign * (t + 1)
            if moae:
                weight[1] = -gate_sign * (t + 1)
            s[f"{blk}.mlp.gate.{t}.weight"] = weight
    s.update({"base.norm.weight": 1 + rand(d), "base.norm.bias": rand(d)})
    for h in range(6):
        s.update({f"bottleneck.{h}.weight": 1 + rand(d), f"bottleneck.{h}.bias": rand(d),
                  f"bottleneck.{h}.running_mean": rand(d), f"bottleneck.{h}.running_var": 1 + rand(d).abs(),
                  f"bottleneck.{h}.num_batches_tracked": torch.tensor(500 + h),
                  f"classifier.{h}.weight": rand(11 if h % 2 == 0 else 5, d)})
    return s


def test_expert_numbering_and_gate_columns_map_to_the_documented_places() -> None:
    ref = hand_built_reference()
    ours, config = reference_to_atreid(ref, image_size=TINY_SIZE, patch_stride=16, said=True)
    assert config["said"] and (config["num_persons"], config["num_outfits"]) == (5, 11)
    for i in range(4):
        blk = f"base.blocks.{i}.mlp"
        for a in range(5):  # in-atom a from ffn.{1+5a+b}.0 (our input-major in_w[a] is its transpose)
            assert torch.equal(ours[f"{blk}.in_w"][a], ref[f"{blk}.ffn.{1 + 5 * a}.0.weight"].t())
            assert (ours[f"{blk}.in_w"][a] == 1000 + a).all() and (ours[f"{blk}.in_b"][a] == 1100 + a).all()
        for b in range(5):  # out-atom b from ffn.{1+5a+b}.2
            assert (ours[f"{blk}.out_w"][b] == 2000 + b).all() and (ours[f"{blk}.out_b"][b] == 2100 + b).all()
        for t in range(6):  # gate.{t} column 0 (a -> b) stays column 0
            assert (ours[f"{blk}.gate"][t, 0] == t + 1).all() and (ours[f"{blk}.gate"][t, 1] == -(t + 1)).all()
        assert torch.equal(ours[f"{blk}.fc1.weight"], ref[f"{blk}.ffn.0.0.weight"])
        assert torch.equal(ours[f"{blk}.fc2.bias"], ref[f"{blk}.ffn.0.2.bias"])
    for key in ("base.pos_embed", "bottleneck.3.running_var", "bottleneck.4.num_batches_tracked",
                "classifier.2.weight", "base.blocks.2.attn.qkv.weight"):
        assert same(ours[key], ref[key])


@pytest.mark.parametrize("gate_sign", [1.0, -1.0])
def test_token_uses_the_expert_its_gate_column_names(gate_sign: float) -> None:
    """Column 0 winning routes token t=(a, b) through ffn.{1+5a+b}; column 1 through ffn.{1+5b+a}."""
    ref = hand_built_reference(gate_sign=gate_sign)
    torch.manual_seed(0)
    for k in [k for k in ref if re.search(r"\.ffn\.([1-9]\d*)\.", k)]:  # realistic, still shared atoms
        ref[k] = ref[k] * 0
    atoms_in = [torch.randn(768, 192) * 0.05 for _ in range(5)]
    atoms_out = [torch.randn(192, 768) * 0.05 for _ in range(5)]
    for a in range(5):
        for b in range(5):
            for i in range(4):
                ref[f"base.blocks.{i}.mlp.ffn.{1 + 5 * a + b}.0.weight"] = atoms_in[a]
                ref[f"base.blocks.{i}.mlp.ffn.{1 + 5 * a + b}.2.weight"] = atoms_out[b]
    ours, _ = reference_to_atreid(ref, image_size=TINY_SIZE, patch_stride=16)
    model = build_model("vit_tiny_uniat", ncls=6, moae=True, num_persons=5, num_outfits=11, img_size=TINY_SIZE)
    model.load_state_dict(ours)
    mlp = model.base.blocks[0].mlp.eval()
    x = torch.rand(3, 6 + 32, 192) + 0.1  # positive: the gate's sign decides the column
    with torch.no_grad():
        y = mlp(x)
    for t, (a, b) in enumerate(SCENARIO_PAIRS):
        j = 1 + 5 * a + b if gate_sign > 0 else 1 + 5 * b + a
        w_in, b_in = ref[f"base.blocks.0.mlp.ffn.{j}.0.weight"], ref[f"base.blocks.0.mlp.ffn.{j}.0.bias"]
        w_out, b_out = ref[f"base.blocks.0.mlp.ffn.{j}.2.weight"], ref[f"base.blocks.0.mlp.ffn.{j}.2.bias"]
        expected = F.linear(F.gelu(F.linear(x[:, t], w_in, b_in)), w_out, b_out)
        torch.testing.assert_close(y[:, t], expected, rtol=1e-5, atol=1e-5)
    # patch tokens: the shared FFN ffn.0
    shared = F.linear(F.gelu(F.linear(x[:, 6:], ref["base.blocks.0.mlp.ffn.0.0.weight"],
                                      ref["base.blocks.0.mlp.ffn.0.0.bias"])),
                      ref["base.blocks.0.mlp.ffn.0.2.weight"], ref["base.blocks.0.mlp.ffn.0.2.bias"])
    torch.testing.assert_close(y[:, 6:], shared, rtol=1e-5, atol=1e-5)


# ---- baseline and ncls1 (no MoAE, said false) ------------------------------------------------
def hand_built_plain_reference(ncls: int, persons: int = 5, outfits: int = 11, seed: int = 0) -> dict:
    """A baseline (ncls 6) or ncls1 reference state_dict of vit_tiny_uniat shape, key by key
    from the doc: ffn.0 only, a 1-column gate per CLS token, classifiers C (0, 2, 4) / P."""
    d, hid = 192, 768
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.02  # noqa: E731
    s = _reference_stem(rand, ncls, d)
    for i in range(4):
        blk = f"base.blocks.{i}"
        s.update(_reference_block(rand, blk, d, hid))
        s.update({f"{blk}.mlp.gate.{t}.weight": rand(1, d) for t in range(ncls)})
    s.update({"base.norm.weight": 1 + rand(d), "base.norm.bias": rand(d)})
    for h in range(6):
        s.update({f"bottleneck.{h}.weight": 1 + rand(d), f"bottleneck.{h}.bias": rand(d),
                  f"bottleneck.{h}.running_mean": rand(d), f"bottleneck.{h}.running_var": 1 + rand(d).abs(),
                  f"bottleneck.{h}.num_batches_tracked": torch.tensor(700 + h)})
    s.update({f"classifier.{h}.weight": rand(outfits if h % 2 == 0 else persons, d) for h in range(6)})
    return s


def directly_loaded(reference: dict, ncls: int) -> torch.nn.Module:
    """Our model built with the variant's own flags (said false, default sizing), the reference
    tensors put in by name: ffn.0.0 / ffn.0.2 are fc1 / fc2, the unused gates dropped."""
    model = build_model("vit_tiny_uniat", ncls=ncls, moae=False, num_persons=5, num_outfits=11, img_size=TINY_SIZE,
                        said=False, drop_path_rate=0.0)
    renamed = {k.replace(".mlp.ffn.0.0.", ".mlp.fc1.").replace(".mlp.ffn.0.2.", ".mlp.fc2."): v
               for k, v in reference.items() if ".mlp.gate." not in k}
    model.load_state_dict(renamed)  # strict: the reference sizes fit without any change
    return model.eval()


@pytest.mark.parametrize("ncls", [6, 1])
def test_reference_baseline_and_ncls1_import_with_said_false(ncls: int, tmp_path: Path, image_folder) -> None:
    reference = hand_built_plain_reference(ncls)
    path = save_reference(tmp_path / "epoch_best.t", reference, epoch=120)
    variant = {**TINY_SETTINGS, "ncls": ncls, "said": False, "moae": False, "hdw": False}
    out = tmp_path / "model.pt"
    assert cli("import-checkpoint", path, "--variant", "baseline", "--out", out,
               "--settings", settings_file(tmp_path / "settings.json", variant)) == 0
    imported, payload = load_trained_model(out)
    settings = payload["settings"]
    assert (settings["ncls"], settings["said"], settings["moae"], settings["hdw"]) == (ncls, False, False, False)
    assert settings["model"]["classifier_sizing"] == "reference" and "said" not in settings["reference_import"][
        "assumed"]
    assert (payload["num_persons"], payload["num_outfits"]) == (5, 11)
    assert imported.head_classes == [11, 5, 11, 5, 11, 5]

    direct = directly_loaded(reference, ncls)
    root, paths = image_folder
    expected = extract_features(direct, root, paths, image_size=TINY_SIZE, batch_size=2)
    got = extract_features(imported, root, paths, image_size=TINY_SIZE, batch_size=2)
    assert expected.shape == (5, 6, 192) and torch.equal(got, expected)
    if ncls == 1:  # one token feeds the six necks
        with torch.no_grad():
            token = direct.base(torch.zeros(1, 3, *TINY_SIZE))
        assert token.shape == (1, 1, 192)

    # ... the training criterion takes the imported classifiers with the variant's flags
    from atreid.losses import UniATCriterion

    imported.train()
    tokens, logits = imported(torch.zeros(2, 3, *TINY_SIZE))
    crit = UniATCriterion(said=False, hdw=False, outfit_to_person=[i // 3 for i in range(11)],
                          classifier_sizing="reference")
    crit(tokens, logits, torch.tensor([0, 4]), torch.tensor([0, 10]), torch.tensor([0, 1]))

    # ... and it exports back to the same file, bit for bit.
    assert cli("export-checkpoint", out, "--out", tmp_path / "back.t") == 0
    back = torch.load(tmp_path / "back.t", weights_only=True)
    assert back["epoch"] == 120 and list(back["model"]) == list(reference)
    assert all(same(back["model"][k], reference[k]) for k in reference)


def test_by_loss_sizing_is_opt_in_for_import(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A by_loss baseline (every head the 5 person ids), e.g. one of ours exported.
    by_loss = hand_built_plain_reference(6, outfits=5)
    path = save_reference(tmp_path / "by_loss.t", by_loss)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"persons": [1, 2, 3, 4, 5], "outfits": [[1 + i // 2, i] for i in range(9)][:9],
                                  "outfit_to_person": [i // 2 for i in range(9)]}))
    variant = {"said": False, "model": {**TINY_SETTINGS["model"], "classifier_sizing": "by_loss"}}
    out = tmp_path / "m.pt"
    assert cli("import-checkpoint", path, "--variant", "b", "--out", out, "--labels", labels,
               "--settings", settings_file(tmp_path / "settings.json", variant)) == 0
    model, payload = load_trained_model(out)
    assert model.head_classes == [5] * 6 and payload["num_outfits"] == 9
    assert payload["settings"]["model"]["classifier_sizing"] == "by_loss"
    # With the reference sizing the same weights say C = 5 outfits, which the labels contradict.
    variant["model"]["classifier_sizing"] = "reference"
    assert cli("import-checkpoint", path, "--variant", "b", "--out", tmp_path / "n.pt", "--labels", labels,
               "--settings", settings_file(tmp_path / "settings.json", variant)) == 2
    assert "9 outfits, the short-term classifiers have 5" in capsys.readouterr().err
    # A reference baseline (C != P) is not a by_loss one.
    reference = save_reference(tmp_path / "ref.t", hand_built_plain_reference(6))
    variant["model"]["classifier_sizing"] = "by_loss"
    assert cli("import-checkpoint", reference, "--variant", "b", "--out", tmp_path / "o.pt",
               "--settings", settings_file(tmp_path / "settings.json", variant)) == 2
    assert "classifier_sizing by_loss with said false (classifiers 0, 2, 4 have 11" in capsys.readouterr().err


def test_model_file_without_classifier_sizing_loads_as_by_loss(tmp_path: Path) -> None:
    """model.pt files written before the option existed sized a baseline by the loss."""
    from atreid.config import load_params, resolve_variant
    from atreid.engine.checkpoint import save_trained_model

    settings = resolve_variant(load_params(REPO / "params.yaml"), "baseline", 0)
    settings["model"].update({"image_size": list(TINY_SIZE)})
    del settings["model"]["classifier_sizing"]
    old = build_model("vit_tiny_uniat", ncls=6, moae=False, num_persons=5, num_outfits=7, img_size=TINY_SIZE,
                      said=False, classifier_sizing="by_loss")
    labels = {"persons": list(range(5)), "outfits": [[p, c] for p in range(5) for c in range(2)][:7],
              "outfit_to_person": [0, 0, 1, 1, 2, 2, 3]}
    save_trained_model(tmp_path / "old.pt", model=old, settings=settings, labels=labels, epoch=3)
    model, _ = load_trained_model(tmp_path / "old.pt")
    assert model.head_classes == [5] * 6


# ---- strict errors ---------------------------------------------------------------------
@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.pop("base.blocks.1.norm1.weight"), r"1 missing keys: base\.blocks\.1\.norm1\.weight"),
    (lambda s: s.update({"base.blocks.0.mlp.extra.weight": torch.zeros(3)}),
     r"1 unexpected keys: base\.blocks\.0\.mlp\.extra\.weight"),
    (lambda s: s.update({"base.blocks.2.attn.proj.weight": torch.zeros(192, 193)}),
     r"1 shape mismatches: base\.blocks\.2\.attn\.proj\.weight \(192, 193\) \(expected \(192, 192\)\)"),
    (lambda s: s.update({"bottleneck.3.num_batches_tracked": torch.zeros(1, dtype=torch.long)}),
     r"bottleneck\.3\.num_batches_tracked \(1,\) \(expected \(\)\)"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("base.blocks.3.mlp.ffn.25.")],
     r"4 missing keys: base\.blocks\.3\.mlp\.ffn\.25\.0\.weight"),
    (lambda s: s.update({f"base.blocks.0.mlp.gate.{t}.weight": torch.zeros(1, 192) for t in range(6)}),
     r"inconsistent MoAE: expert keys ffn\.1\.\. are present.*6 do not: base\.blocks\.0\.mlp\.gate\.0\.weight"),
    (lambda s: s.update({"classifier.2.weight": torch.zeros(9, 192)}), r"classifier sizes \[11, 5, 9, 5, 11, 5\]"),
])
def test_keys_that_do_not_fit_are_named(edit, expected) -> None:
    state = hand_built_reference()
    edit(state)
    with pytest.raises(AtreidError, match=expected):
        reference_to_atreid(state, image_size=TINY_SIZE, patch_stride=16)


def test_unequal_repeated_atom_copies_are_named() -> None:
    state = hand_built_reference()
    state["base.blocks.1.mlp.ffn.7.0.weight"] = state["base.blocks.1.mlp.ffn.7.0.weight"].clone()
    state["base.blocks.1.mlp.ffn.7.0.weight"][3, 4] += 1e-3  # expert 7 = in-atom 1 (b = 1)
    state["base.blocks.2.mlp.ffn.14.2.bias"] = state["base.blocks.2.mlp.ffn.14.2.bias"] + 1  # out-atom 3 (a = 2)
    with pytest.raises(AtreidError, match=r"2 repeated expert tensors differ") as err:
        reference_to_atreid(state, image_size=TINY_SIZE, patch_stride=16)
    assert "base.blocks.1.mlp.ffn.7.0.weight != base.blocks.1.mlp.ffn.6.0.weight" in str(err.value)
    assert "base.blocks.2.mlp.ffn.14.2.bias != base.blocks.2.mlp.ffn.4.2.bias" in str(err.value)


def test_settings_that_disagree_with_the_weights_fail() -> None:
    no_moae = hand_built_reference(moae=False)
    with pytest.raises(AtreidError, match="moae true .the checkpoint has no experts"):
        reference_to_atreid(no_moae, image_size=TINY_SIZE, patch_stride=16, moae=True)
    with pytest.raises(AtreidError, match="ncls 1 .the checkpoint has 6 CLS tokens"):
        reference_to_atreid(no_moae, image_size=TINY_SIZE, patch_stride=16, ncls=1)
    # by_loss sizing without SAID would give every head the 5 person ids, not 11 outfits.
    with pytest.raises(AtreidError, match="classifier_sizing by_loss with said false .classifiers 0, 2, 4 have 11"):
        reference_to_atreid(no_moae, image_size=TINY_SIZE, patch_stride=16, said=False, classifier_sizing="by_loss")
    with pytest.raises(AtreidError, match="not a vit_base_uniat .depth 4, embed_dim 192"):
        reference_to_atreid(no_moae, arch="vit_base_uniat")
    # SAID is never inferred from the classifier sizes: the caller's flag is taken as it is.
    for said in (False, True):
        _, config = reference_to_atreid(no_moae, image_size=TINY_SIZE, patch_stride=16, said=said)
        assert (config["moae"], config["said"], config["arch"]) == (False, said, "vit_tiny_uniat")
        assert (config["num_persons"], config["num_outfits"], config["classifier_sizing"]) == (5, 11, "reference")
    _, config = reference_to_atreid(no_moae, image_size=TINY_SIZE, patch_stride=16)
    assert config["said"] is False


def test_non_weights_only_pickle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "epoch_best.t"
    torch.save({"model": hand_built_reference(), "epoch": 3, "args": argparse.Namespace(lr=0.008)}, path)
    assert cli("import-checkpoint", path, "--variant", "x", "--out", tmp_path / "m.pt") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {path}: not a weights-only checkpoint") and "argparse.Namespace" in err
    assert not (tmp_path / "m.pt").exists()


def test_ddp_prefix_bare_state_dict_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = {f"module.{k}": v for k, v in hand_built_reference().items()}
    path = save_reference(tmp_path / "bare.t", state, epoch=None)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"persons": [10, 11, 12, 13, 14], "outfits": [[10 + i // 3, i] for i in range(11)],
                                  "outfit_to_person": [i // 3 for i in range(11)]}))
    out = tmp_path / "m.pt"
    assert cli("import-checkpoint", path, "--variant", "v", "--out", out, "--labels", labels,
               "--settings", settings_file(tmp_path / "settings.json", TINY_SETTINGS)) == 0
    model, payload = load_trained_model(out)
    assert payload["labels"]["persons"] == [10, 11, 12, 13, 14] and payload["epoch"] == 0
    assert payload["settings"]["reference_import"]["epoch"] is None
    in_atom_2 = state["module.base.blocks.0.mlp.ffn.11.0.weight"]  # expert 11 = in-atom 2 -> out-atom 0
    assert torch.equal(model.state_dict()["base.blocks.0.mlp.in_w"][2], in_atom_2.t())

    labels.write_text(json.dumps({"persons": [1, 2], "outfits": [], "outfit_to_person": []}))
    assert cli("import-checkpoint", path, "--variant", "v", "--out", tmp_path / "n.pt", "--labels", labels,
               "--settings", settings_file(tmp_path / "settings.json", TINY_SETTINGS)) == 2
    assert "2 persons, the long-term classifiers have 5" in capsys.readouterr().err


# ---- the workflow rule -----------------------------------------------------------------
def snakemake(args: list[str], cwd: Path) -> str:
    result = subprocess.run([str(Path(sys.executable).parent / "snakemake"), *args], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_variant_with_reference_checkpoint_is_imported_not_trained(tmp_path: Path) -> None:
    for name in ("Snakefile", "params.yaml", "rules", "report", "envs", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "epoch_best.t").write_bytes(b"")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    variants, seeds = params["variants"], params["seeds"]
    override = {"variants": {"uniat_ref": {"ncls": 6, "said": True, "moae": True, "hdw": True,
                                           "reference_checkpoint": "weights/epoch_best.t",
                                           "model": {"arch": "vit_base_uniat", "image_size": [256, 128]}}}}
    (tmp_path / "reference.yaml").write_text(yaml.safe_dump(override))

    out = snakemake(["-n", "-p", "--configfile", "reference.yaml"], tmp_path)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1].split("\n\n")[0], flags=re.M))
    assert jobs["import_reference_model"] == "1"
    assert jobs["train_model"] == str(len(variants) * len(seeds))  # the params.yaml variants only, per seed
    assert jobs["evaluate_run"] == str(len(variants) * len(seeds) + 1)  # the imported variant: one run
    assert jobs["plot_training"] == str(len(variants))
    assert "atreid import-checkpoint weights/epoch_best.t --variant uniat_ref" in out
    assert "--settings settings/import/uniat_ref." in out.split("rule import_reference_model")[1].split("rule ")[0]
    assert "models/uniat_ref/imported/model.pt" in out and "models/uniat_ref/seed" not in out
    assert "history.csv" not in out.split("rule import_reference_model")[1].split("rule ")[0]

    assert "Congratulations" in snakemake(["--lint", "--configfile", "reference.yaml"], tmp_path)
    assert "import_reference_model" not in snakemake(["-n"], tmp_path)  # default params: unchanged
