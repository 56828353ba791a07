"""MoAE: the vectorised layer against a plain per-token, per-expert loop (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atreid.model.moae import ATOMS, SCENARIO_ATOMS, MoAE

DIM, HIDDEN, PATCHES, BATCH = 8, 12, 5, 3
PARAMS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "in_w", "in_b", "out_w", "out_b", "gate")


def make_layer(ncls: int, moae: bool, gate: str, seed: int = 0, dispatch: str = "auto") -> MoAE:
    torch.manual_seed(seed)
    layer = MoAE(DIM, HIDDEN, ncls=ncls, moae=moae, gate=gate, dispatch=dispatch).double()
    with torch.no_grad():
        for p in layer.parameters():  # large random values so every expert differs clearly
            p.normal_(0, 0.5)
    return layer


def oracle(layer: MoAE, x: torch.Tensor) -> torch.Tensor:
    """The published math, one token and one expert at a time (top-1 + renormalise)."""
    p = dict(layer.named_parameters())
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        if layer.moae and t < layer.ncls:
            a, b = SCENARIO_ATOMS[t]
            experts = []
            for src, dst in ((a, b), (b, a)):  # column 0: a -> b, column 1: b -> a
                hidden = F.gelu(xt @ p["in_w"][src] + p["in_b"][src])  # atoms are stored (in, out)
                experts.append(hidden @ p["out_w"][dst] + p["out_b"][dst])
            probs = torch.softmax(xt @ p["gate"][t].T, dim=-1)
            if layer.gate_mode == "hard":
                top, index = probs.topk(1, dim=-1)
                weights = torch.zeros_like(probs).scatter(1, index, top / top.sum(dim=-1, keepdim=True))
            else:
                weights = probs
            out.append(weights[:, :1] * experts[0] + weights[:, 1:] * experts[1])
        else:
            out.append(F.gelu(xt @ p["fc1.weight"].T + p["fc1.bias"]) @ p["fc2.weight"].T + p["fc2.bias"])
    return torch.stack(out, dim=1)


def outputs_and_grads(layer: MoAE, fn, x: torch.Tensor, probe: torch.Tensor):
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (y * probe).sum().backward()
    grads = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in layer.named_parameters()}
    return y.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("dispatch", ["dense", "routed"])
@pytest.mark.parametrize("gate", ["hard", "soft"])
@pytest.mark.parametrize("moae", [True, False])
@pytest.mark.parametrize("ncls", [1, 6])
def test_vectorised_matches_loop_oracle(ncls: int, moae: bool, gate: str, dispatch: str) -> None:
    layer = make_layer(ncls, moae, gate, dispatch=dispatch)
    assert layer.moae == (moae and ncls == 6)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, ncls + PATCHES, DIM, generator=gen, dtype=torch.float64)
    probe = torch.randn(BATCH, ncls + PATCHES, DIM, generator=gen, dtype=torch.float64)
    y, gx, grads = outputs_and_grads(layer, layer, x, probe)
    y_ref, gx_ref, grads_ref = outputs_and_grads(layer, lambda v: oracle(layer, v), x, probe)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    assert set(grads) == set(grads_ref)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-12, atol=1e-12, msg=name)
    if layer.moae:
        # Every atom is used by some token, so every atom has a gradient.
        for name in ("in_w", "out_w"):
            assert all(grads[name][k].abs().sum() > 0 for k in range(len(ATOMS)))


def test_plain_layer_has_no_experts_or_gate() -> None:
    for ncls, moae in ((1, False), (6, False), (1, True)):
        names = {n for n, _ in MoAE(DIM, HIDDEN, ncls=ncls, moae=moae).named_parameters()}
        assert names == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    names = {n for n, _ in MoAE(DIM, HIDDEN, ncls=6, moae=True).named_parameters()}
    assert names == set(PARAMS)


def test_parameter_shapes_stacked() -> None:
    layer = MoAE(DIM, HIDDEN, ncls=6, moae=True)
    assert layer.in_w.shape == (5, DIM, HIDDEN) and layer.in_b.shape == (5, HIDDEN)
    assert layer.out_w.shape == (5, HIDDEN, DIM) and layer.out_b.shape == (5, DIM)
    assert layer.gate.shape == (6, 2, DIM)
    # Routing tables are derived, not saved.
    assert set(layer.state_dict()) == set(PARAMS)


@pytest.mark.parametrize("dispatch", ["dense", "routed"])
def test_hard_gate_weight_exactly_one_and_zero_gate_gradient(dispatch: str) -> None:
    layer = make_layer(6, True, "hard", dispatch=dispatch)
    x = torch.randn(BATCH, 6 + PATCHES, DIM, dtype=torch.float64, requires_grad=True)
    cls = x[:, :6].transpose(0, 1)
    weights = layer.gate_weights(cls)
    probs = torch.softmax(torch.einsum("tbd,tcd->tbc", cls, layer.gate), dim=-1)
    chosen = probs.argmax(dim=-1)
    assert torch.equal(weights.gather(-1, chosen.unsqueeze(-1)).squeeze(-1), torch.ones_like(chosen, dtype=x.dtype))
    assert torch.equal(weights.sum(-1), torch.ones(6, BATCH, dtype=x.dtype))
    # The output IS the chosen expert's output (bit for bit on the dense path; the routed
    # one runs other matmul shapes).
    y_ab, y_ba = layer.experts(cls)  # (6, B, D) each
    picked = torch.where((chosen == 0).unsqueeze(-1), y_ab, y_ba).transpose(0, 1)
    y = layer(x)
    if dispatch == "dense":
        assert torch.equal(y[:, :6], picked)
    torch.testing.assert_close(y[:, :6], picked, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    # An exact-zero gradient, not None: the optimiser still applies weight decay to the
    # gate, as it does to the reference's (whose gradient is rounding noise).
    assert layer.gate.grad is not None and torch.count_nonzero(layer.gate.grad) == 0
    assert x.grad is not None and layer.in_w.grad is not None
    with torch.no_grad():  # and nothing extra in inference
        assert torch.equal(layer(x), y.detach())


@pytest.mark.parametrize("dispatch", ["dense", "routed"])
def test_hard_gate_exact_tie_keeps_neither_expert(dispatch: str) -> None:
    """The released top-1 keeps an expert only when its softmax weight is strictly greater
    than the other's: equal gate scores zero the token's MoAE output (both experts dropped)."""
    layer = make_layer(6, True, "hard", dispatch=dispatch)
    with torch.no_grad():
        layer.gate[:, 0] = layer.gate[:, 1]  # tokens 0, 2 and 4 below: equal scores
        layer.gate[1::2, 0, 0] += 1.0  # tokens 1, 3, 5: column 0 wins when x0 > 0
    x = torch.randn(BATCH, 6 + PATCHES, DIM, dtype=torch.float64)
    x[:, :6, 0] = x[:, :6, 0].abs() + 1
    x.requires_grad_(True)
    cls = x[:, :6].transpose(0, 1)
    probs = layer.gate_probs(cls)
    assert torch.equal(probs[0::2, :, 0], probs[0::2, :, 1]) and (probs[1::2, :, 0] > probs[1::2, :, 1]).all()
    weights = layer.gate_weights(cls)
    assert torch.count_nonzero(weights[0::2]) == 0 and torch.equal(weights[1::2, :, 0], torch.ones(3, BATCH,
                                                                                                 dtype=x.dtype))
    y = layer(x)
    assert torch.count_nonzero(y[:, 0:6:2]) == 0  # tied tokens: zero output
    y_ab, _ = layer.experts(cls.detach())
    torch.testing.assert_close(y[:, 1:6:2], y_ab[1::2].transpose(0, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[:, 6:], layer.ffn(x[:, 6:]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, oracle_strict(layer, x), rtol=1e-12, atol=1e-12)
    y.pow(2).sum().backward()
    assert torch.count_nonzero(x.grad[:, 0:6:2]) == 0  # dropped experts: no gradient through them
    assert torch.count_nonzero(x.grad[:, 1:6:2]) > 0
    assert torch.count_nonzero(layer.gate.grad) == 0


def oracle_strict(layer: MoAE, x: torch.Tensor) -> torch.Tensor:
    """The published top-1 written literally: weight w_i kept iff w_i > w_other, renormalised."""
    p = dict(layer.named_parameters())
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        if t >= layer.ncls:
            out.append(F.gelu(xt @ p["fc1.weight"].T + p["fc1.bias"]) @ p["fc2.weight"].T + p["fc2.bias"])
            continue
        a, b = SCENARIO_ATOMS[t]
        probs = torch.softmax(xt @ p["gate"][t].T, dim=-1)
        kept = probs * (probs > probs.flip(-1))
        weights = kept / kept.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        experts = [F.gelu(xt @ p["in_w"][s] + p["in_b"][s]) @ p["out_w"][d] + p["out_b"][d]
                   for s, d in ((a, b), (b, a))]
        out.append(weights[:, :1] * experts[0] + weights[:, 1:] * experts[1])
    return torch.stack(out, dim=1)


def test_hard_gate_follows_the_gate_scores() -> None:
    layer = make_layer(6, True, "hard")
    x = torch.randn(BATCH, 6 + PATCHES, DIM, dtype=torch.float64)
    x[:, :6, 0] = x[:, :6, 0].abs() + 1  # every CLS token has a positive first coordinate
    cls = x[:, :6].transpose(0, 1)
    experts = layer.experts(cls)
    for column in (0, 1):
        with torch.no_grad():
            # Column `column` scores +x0, the other -x0: `column` wins for every token.
            layer.gate.zero_()
            layer.gate[:, column, 0] = 1.0
            layer.gate[:, 1 - column, 0] = -1.0
            y = layer(x)[:, :6].transpose(0, 1)
        assert torch.equal(y, experts[column])


def test_soft_gate_is_differentiable() -> None:
    layer = make_layer(6, True, "soft")
    x = torch.randn(BATCH, 6 + PATCHES, DIM, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    assert layer.gate.grad is not None and layer.gate.grad.abs().sum() > 0
    weights = layer.gate_weights(x[:, :6].transpose(0, 1))
    assert ((weights > 0) & (weights < 1)).all()


def test_copy_ffn_to_atoms_makes_every_expert_the_ffn() -> None:
    for gate in ("hard", "soft"):
        layer = make_layer(6, True, gate)
        layer.copy_ffn_to_atoms()
        x = torch.randn(BATCH, 6 + PATCHES, DIM, dtype=torch.float64)
        torch.testing.assert_close(layer(x), layer.ffn(x), rtol=1e-12, atol=1e-12)


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="gate"):
        MoAE(DIM, HIDDEN, ncls=6, moae=True, gate="cosine")
    with pytest.raises(ValueError, match="ncls"):
        MoAE(DIM, HIDDEN, ncls=3, moae=True)


@pytest.mark.parametrize("force", [None, 0, 1])
def test_routed_dispatch_equals_dense(force) -> None:
    """Routing only the chosen expert gives the dense path's outputs and gradients (up to
    the rounding of differently blocked matmuls), also when some atoms receive no rows
    at all (every token forced to one gate column)."""
    torch.manual_seed(3)
    dense = MoAE(16, 24, ncls=6, moae=True, gate="hard", dispatch="dense")
    routed = MoAE(16, 24, ncls=6, moae=True, gate="hard", dispatch="routed")
    if force is not None:
        with torch.no_grad():
            dense.gate.zero_()
            dense.gate[:, force, 0] = 1.0
    routed.load_state_dict(dense.state_dict())
    x = torch.randn(32, 6 + PATCHES, 16)
    if force is not None:
        x[:, :6, 0] = x[:, :6, 0].abs() + 1
    probe = torch.randn_like(x)
    y, gx, grads = outputs_and_grads(dense, dense, x, probe)
    y_r, gx_r, grads_r = outputs_and_grads(routed, routed, x, probe)
    torch.testing.assert_close(y_r, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx_r, gx, rtol=1e-6, atol=1e-6)
    for name in grads:
        torch.testing.assert_close(grads_r[name], grads[name], rtol=1e-6, atol=1e-5, msg=name)
    if force is not None:
        # Unused atoms: exactly zero gradient, not uninitialised memory.
        unused_in = {b if force == 0 else a for a, b in SCENARIO_ATOMS} - {a if force == 0 else b for a, b in SCENARIO_ATOMS}
        assert unused_in
        for k in unused_in:
            assert torch.count_nonzero(grads_r["in_w"][k]) == 0 and torch.count_nonzero(grads_r["in_b"][k]) == 0


def test_auto_dispatch_routes_on_cpu_only(monkeypatch) -> None:
    layer = make_layer(6, True, "hard")
    assert layer.dispatch == "auto"

    def dense_experts(*_):
        raise AssertionError("the dense path ran on CPU")

    monkeypatch.setattr(layer, "experts", dense_experts)
    layer(torch.randn(BATCH, 6 + PATCHES, DIM, dtype=torch.float64))  # routed: experts() unused
    assert layer._routes(torch.empty(1, device="meta")) is False  # any accelerator: dense
    soft = make_layer(6, True, "soft")
    monkeypatch.setattr(soft, "experts", dense_experts)
    with pytest.raises(AssertionError, match="dense path"):
        soft(torch.randn(BATCH, 6 + PATCHES, DIM, dtype=torch.float64))  # soft needs both experts


def test_auto_dispatch_is_dense_inside_a_graph(monkeypatch) -> None:
    """Inside torch.compile / torch.export (CPU too) the fixed-shape dense path runs: the
    routed one would break the graph (host-read group sizes). tests/test_compile.py compiles."""
    layer = make_layer(6, True, "hard")
    cpu = torch.empty(1)
    assert layer._routes(cpu) is True
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert layer._routes(cpu) is False
    assert make_layer(6, True, "hard", dispatch="routed")._routes(cpu) is True  # an explicit choice stays


def test_invalid_dispatch() -> None:
    with pytest.raises(ValueError, match="dispatch"):
        MoAE(DIM, HIDDEN, ncls=6, moae=True, dispatch="sparse")
