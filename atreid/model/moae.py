"""Mixture of Attribute Experts (MoAE), the feed-forward layer of every Uni-AT block.

Paper: "Towards Anytime Retrieval: A Benchmark for Anytime Person Re-Identification"
(AT-ReID, IJCAI 2025, arXiv 2509.16635), section on MoAE.

Patch tokens go through the shared dense FFN (``fc1`` -> GELU -> ``fc2``, the pretrained
ViT MLP). Five attribute *atoms* -- vm, im, cm, sc, cc -- each own an input layer
(dim -> hidden) and an output layer (hidden -> dim); the expert ``a -> b`` is in-atom ``a``
-> GELU -> out-atom ``b``. CLS token ``t`` of scenario (a, b) may use exactly the two
experts ``a -> b`` and ``b -> a``; its own bias-free gate (dim -> 2) scores them (column 0
``a -> b``, column 1 ``b -> a``), softmax, keep the top-1 and renormalise.

Vectorisation: the atoms are stacked parameters ``in_w (5, dim, hidden)``, ``in_b (5, hidden)``,
``out_w (5, hidden, dim)``, ``out_b (5, dim)``, stored input-major (``y = x @ w + b``, the
transpose of ``nn.Linear.weight``): the batched matmul then returns the weight gradients
in the parameter's own layout, whereas an (out, in) layout costs a transposing copy of
every atom gradient (half of the layer's time at ViT-B size on CPU). The six
scenarios are the grid {vm, im, cm} x {sc, cc} in row-major order (token t = 2 m + c), so
the 12 (token, expert) pairs split into two compositions with fixed groupings:
``m -> c`` (in-atom m: tokens 2m, 2m+1; out-atom c: tokens c, c+2, c+4) and ``c -> m``
(the reverse). Each of the four layers (in/out x two compositions) is one batched matmul
over a contiguous slice of the stacked atoms, and moving between the groupings is a
transpose of the (modality, clothes) grid: exactly the 12 needed expert evaluations, no
padding, no index gathers, and never a copy of the weights (gathering a (hidden, dim)
matrix per token would copy ~110 MB per ViT-B block per step, and scatter as much
gradient back).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_

from atreid.constants import SCENARIOS

# Attribute atoms, in the reference checkpoint's order (expert j = 1 + 5a + b).
ATOMS: tuple[str, ...] = ("vm", "im", "cm", "sc", "cc")
# The (a, b) atom pair of each CLS token / scenario, in head order.
SCENARIO_ATOMS: tuple[tuple[int, int], ...] = ((0, 3), (0, 4), (1, 3), (1, 4), (2, 3), (2, 4))
GATES: tuple[str, ...] = ("hard", "soft")
# How the hard gate's experts are evaluated: see MoAE.forward.
DISPATCHES: tuple[str, ...] = ("auto", "dense", "routed")


def _scenario_atoms_consistent() -> bool:
    # DT = visible, NT = infrared, AD = cross modality; ST = same, LT = changed clothes.
    modality = {"DT": 0, "NT": 1, "AD": 2}
    clothes = {"ST": 3, "LT": 4}
    return all((modality[s[:2]], clothes[s[3:]]) == pair for s, pair in zip(SCENARIOS, SCENARIO_ATOMS))


if not _scenario_atoms_consistent():
    raise RuntimeError("SCENARIO_ATOMS must follow the head order of atreid.constants.SCENARIOS")


def _grid_shape(pairs: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """(modality atoms, clothes atoms) of a pair table that is their row-major product grid."""
    first = sorted({a for a, _ in pairs})
    second = sorted({b for _, b in pairs})
    grid = tuple((a, b) for a in first for b in second)
    if grid != tuple(pairs) or first != list(range(len(first))) or second[0] != len(first):
        raise ValueError(f"scenario atom pairs {pairs} are not the row-major grid of atoms {first} x {second}")
    return len(first), len(second)


# (3, 2): modality atoms vm, im, cm (0..2) x clothes atoms sc, cc (3, 4).
GRID: tuple[int, int] = _grid_shape(SCENARIO_ATOMS)


def _atom_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-atom linear layer: x (k, rows, in) @ weight (k, in, out) + bias (k, out) -> (k, rows, out)."""
    if bias is None:
        return torch.bmm(x, weight)
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


class _GroupedLinear(torch.autograd.Function):
    """Rows sorted by atom, each group through its own atom: a grouped GEMM on the host.

    ``x`` (N, in) holds ``sizes[k]`` consecutive rows of atom ``k``; ``weight`` is the
    stacked (atoms, in, out) parameter. Every product is written straight into its
    slice of one output buffer, and the backward writes each atom's weight gradient
    into its slice of one (atoms, in, out) tensor: exactly the rows' arithmetic, no
    padding and no concatenation of per-atom pieces (assembling the ViT-B atom
    gradients from pieces cost a third of the layer's time on CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                sizes: list[int]) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        y = x.new_empty(x.shape[0], weight.shape[2])
        for k, (rows, out) in enumerate(zip(x.split(sizes), y.split(sizes))):
            if bias is None:
                torch.mm(rows, weight[k], out=out)
            else:
                torch.addmm(bias[k], rows, weight[k], out=out)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight = ctx.saved_tensors
        sizes = ctx.sizes
        grad_y = grad_y.contiguous()
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_b = grad_y.new_empty(weight.shape[0], weight.shape[2]) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_x_parts = grad_x.split(sizes) if grad_x is not None else (None,) * len(sizes)
        for k, (rows, g, gx) in enumerate(zip(x.split(sizes), grad_y.split(sizes), grad_x_parts)):
            if gx is not None:
                torch.mm(g, weight[k].t(), out=gx)
            if grad_w is not None:
                torch.mm(rows.t(), g, out=grad_w[k])  # an empty group gives zeros
            if grad_b is not None:
                torch.sum(g, dim=0, out=grad_b[k])
        return grad_x, grad_w, grad_b, None


class _ZeroGradTo(torch.autograd.Function):
    """Identity on ``y`` that gives ``param`` an exact-zero gradient.

    The hard gate's output does not depend on the gate weights (top-1 renormalised is
    exactly 1), so autograd would leave the gate's ``.grad`` at None and the optimiser
    would skip it. The released code computes ``top / top.sum()`` instead, whose
    gradient is rounding noise: the gate has a gradient, so SGD's (and AdamW's) weight
    decay shrinks it every step. Attaching a zero gradient reproduces that decay
    exactly (without the noise) at the cost of one small zero tensor per block.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        ctx.param_meta = (param.shape, param.dtype, param.device)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        shape, dtype, device = ctx.param_meta
        return grad_y, torch.zeros(shape, dtype=dtype, device=device)


def _routed_linear(x: torch.Tensor, atom: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Row ``i`` of ``x`` (N, in) through atom ``atom[i]``'s linear layer: (N, out)."""
    order = torch.argsort(atom, stable=True)
    sizes = torch.bincount(atom, minlength=weight.shape[0]).tolist()  # host read: shapes follow the routing
    if bias is not None:
        bias = bias.to(x.dtype)
    y = _GroupedLinear.apply(x.index_select(0, order), weight.to(x.dtype), bias, sizes)
    return torch.empty_like(y).index_copy(0, order, y)  # sorted rows back to row order


class MoAE(nn.Module):
    """Shared ViT FFN for patch tokens plus attribute experts for the six CLS tokens.

    The constructor matches timm's ``Mlp`` so the layer plugs into
    ``timm.models.vision_transformer.Block(mlp_layer=partial(MoAE, ncls=..., moae=...))``.

    Args:
        in_features: token width (dim).
        hidden_features: FFN hidden width (defaults to ``in_features``).
        out_features: must equal ``in_features`` (kept for the ``Mlp`` signature).
        act_layer: activation (exact-erf ``nn.GELU`` in Uni-AT).
        norm_layer: unsupported (``None``); kept for the ``Mlp`` signature.
        bias: biases in fc1/fc2 and the atoms.
        drop: unsupported (0); kept for the ``Mlp`` signature.
        ncls: number of leading CLS tokens in the sequence.
        moae: route the CLS tokens through attribute experts. Needs ``ncls == 6``;
            with ``moae=False`` (or ``ncls == 1``) every token uses the shared FFN.
        gate: ``"hard"`` (published: top-1 of the softmax, renormalised, so the chosen
            expert's weight is exactly 1; an exact tie of the two softmax weights keeps
            neither expert, as the released top-1 does, so the token's MoAE output is 0;
            the gate gets an exact-zero gradient, which lets weight decay shrink it as in
            the reference, see :class:`_ZeroGradTo`) or ``"soft"`` (both experts weighted
            by the softmax, differentiable gate).
        dispatch: how the hard gate's experts run (the same outputs and gradients, up to
            the rounding of differently blocked matmuls): ``"dense"`` evaluates both
            allowed experts of every token with fixed-shape batched matmuls and weights
            them by the one-hot gate;
            ``"routed"`` evaluates only the expert each (token, sample) chose - half the
            arithmetic - with rows grouped per atom, which needs the group sizes on the
            host; ``"auto"`` (default) routes on CPU and stays dense on accelerators,
            where reading the sizes would synchronise the device in every block and
            data-dependent shapes defeat ``torch.compile``, and inside any graph
            (``torch.compile`` on CPU too, ``torch.export``, ONNX: a graph cannot hold
            host reads; routed, each block would break the graph twice and recompile
            for every new group size). The soft gate always evaluates both experts.
    """

    def __init__(
            self,
            in_features: int,
            hidden_features: Optional[int] = None,
            out_features: Optional[int] = None,
            act_layer: Callable[[], nn.Module] = nn.GELU,
            norm_layer: Optional[Callable[..., nn.Module]] = None,
            bias: bool = True,
            drop: float = 0.,
            *,
            ncls: int = 1,
            moae: bool = False,
            gate: str = "hard",
            dispatch: str = "auto",
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        hidden_features = hidden_features or in_features
        if out_features not in (None, in_features):
            raise ValueError("MoAE keeps the token width: out_features must equal in_features")
        if norm_layer is not None or drop:
            raise ValueError("MoAE has no hidden norm or dropout (the Uni-AT FFN has neither)")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        if dispatch not in DISPATCHES:
            raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
        if moae and ncls not in (1, len(SCENARIO_ATOMS)):
            raise ValueError(f"MoAE needs one CLS token per scenario (ncls {len(SCENARIO_ATOMS)}), got {ncls}")
        self.ncls = ncls
        # One token cannot be routed per scenario: ncls 1 is a plain ViT FFN.
        self.moae = bool(moae) and ncls == len(SCENARIO_ATOMS)
        self.gate_mode = gate
        self.dispatch = dispatch
        self.in_features, self.hidden_features = in_features, hidden_features

        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias, **dd)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias, **dd)
        if self.moae:
            atoms = len(ATOMS)
            # Input-major (x @ w) atom weights: see the module docstring.
            self.in_w = nn.Parameter(torch.empty(atoms, in_features, hidden_features, **dd))
            self.in_b = nn.Parameter(torch.zeros(atoms, hidden_features, **dd)) if bias else None
            self.out_w = nn.Parameter(torch.empty(atoms, hidden_features, in_features, **dd))
            self.out_b = nn.Parameter(torch.zeros(atoms, in_features, **dd)) if bias else None
            # gate[t] is the (2, dim) weight of CLS token t's bias-free Linear(dim, 2).
            self.gate = nn.Parameter(torch.empty(ncls, 2, in_features, **dd))
            # Atoms of each token's two experts, by gate column: in-atom (ncls, 2) and
            # out-atom (ncls, 2) (column 0 = a -> b, column 1 = b -> a).
            pairs = torch.tensor(SCENARIO_ATOMS, dtype=torch.long)
            self.register_buffer("expert_in_atom", pairs.clone(), persistent=False)
            self.register_buffer("expert_out_atom", pairs.flip(1).contiguous(), persistent=False)
            self.reset_expert_parameters()

    @torch.no_grad()
    def reset_expert_parameters(self) -> None:
        """Random init of atoms and gates as the reference's separate ``nn.Linear`` layers get it.

        Every in-atom, out-atom and gate weight is drawn independently (truncated
        normal, std 0.02; biases 0): the atoms are not copies of the shared FFN until
        pretrained weights are loaded (:meth:`copy_ffn_to_atoms`).
        """
        if not self.moae:
            return
        for p in (self.in_w, self.out_w):
            for atom in p:  # one draw per atom, as per separate Linear layers
                trunc_normal_(atom, std=.02)
        for gate in self.gate:
            trunc_normal_(gate, std=.02)
        for p in (self.in_b, self.out_b):
            if p is not None:
                p.zero_()

    @torch.no_grad()
    def rescale_output_layers(self, layer_id: int) -> None:
        """The released code's depth rescaling of block ``layer_id`` (1-based) output layers.

        It divides the output layer of every expert in the block's expert list by
        ``sqrt(2 * layer_id)``, once per expert: the shared FFN's ``fc2`` (expert 0) once,
        and each out-atom once for each of the five experts ``a -> b`` that reference
        it, i.e. by ``(2 * layer_id) ** 2.5`` in all. Biases, ``fc1`` and the in-atoms
        are not rescaled. Divided step by step in the reference's order, so the
        rounding is the reference's too.
        """
        scale = math.sqrt(2.0 * layer_id)
        self.fc2.weight.div_(scale)
        if not self.moae:
            return
        for _a in range(len(ATOMS)):  # expert 1 + 5a + b holds out-atom b
            for b in range(len(ATOMS)):
                self.out_w[b].div_(scale)

    @torch.no_grad()
    def copy_ffn_to_atoms(self) -> None:
        """Start every atom from the shared FFN (what loading pretrained weights does)."""
        if not self.moae:
            return
        self.in_w.copy_(self.fc1.weight.t().expand_as(self.in_w))
        self.out_w.copy_(self.fc2.weight.t().expand_as(self.out_w))
        if self.in_b is not None:
            self.in_b.copy_(self.fc1.bias.expand_as(self.in_b))
            self.out_b.copy_(self.fc2.bias.expand_as(self.out_b))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The shared dense FFN."""
        return self.fc2(self.act(self.fc1(x)))

    def gate_probs(self, cls: torch.Tensor) -> torch.Tensor:
        """Softmax gate (ncls, B, 2) over the two experts, from token-major CLS tokens (ncls, B, D)."""
        return torch.bmm(cls, self.gate.transpose(1, 2)).softmax(dim=-1)

    def gate_choice(self, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hard gate's decision from token-major CLS tokens (ncls, B, D).

        Returns:
            ``(choice, keep)``, each (ncls, B): the top-1 column (0 or 1) and whether it
            is kept. The released top-1 keeps an expert only when its softmax weight is
            strictly greater than the other's, so an exact tie keeps neither (``keep``
            False: the token's MoAE output is 0); ``choice`` is then 0 (unused).
        """
        probs = self.gate_probs(cls).detach()
        return probs.argmax(dim=-1), probs[..., 0] != probs[..., 1]

    def gate_weights(self, cls: torch.Tensor) -> torch.Tensor:
        """Routing weights (ncls, B, 2) of the two experts, from token-major CLS tokens (ncls, B, D)."""
        if self.gate_mode == "soft":
            return self.gate_probs(cls)
        # Top-1 then renormalise: the kept weight p / p is exactly 1 and its derivative
        # is 0, so the one-hot of the argmax (zero on an exact tie) is the same function
        # with an exact zero gradient (instead of p/p's rounding noise) for the gate.
        choice, keep = self.gate_choice(cls)
        return F.one_hot(choice, 2).to(cls.dtype) * keep.unsqueeze(-1).to(cls.dtype)

    def routed_experts(self, cls: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Only the chosen expert of every (token, sample): ``(ncls, B, D)``.

        Args:
            cls: token-major CLS tokens (ncls, B, D).
            choice: the gate column each (token, sample) kept, (ncls, B) in {0, 1}.

        Each (token, sample) row passes through its in-atom, GELU, then its out-atom:
        6 expert evaluations per sample instead of the dense path's 12. Per stage the
        rows are sorted by atom and run as one grouped matmul (:class:`_GroupedLinear`).
        Outputs and gradients equal the dense path's up to matmul rounding: there, the
        unchosen expert is multiplied by an exact 0 and receives an exact-zero gradient.
        """
        ncls, batch, dim = cls.shape
        rows = cls.reshape(ncls * batch, dim)
        hidden = self.act(_routed_linear(rows, self.expert_in_atom.gather(1, choice).reshape(-1),
                                         self.in_w, self.in_b))
        out = _routed_linear(hidden, self.expert_out_atom.gather(1, choice).reshape(-1), self.out_w, self.out_b)
        return out.view(ncls, batch, dim)

    def experts(self, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both experts of every CLS token, from token-major CLS tokens (ncls, B, D).

        Returns:
            ``(y_ab, y_ba)``, each (ncls, B, D): expert ``a -> b`` and ``b -> a`` of each
            token (gate columns 0 and 1).
        """
        n_mod, n_clo = GRID
        ncls, batch, dim = cls.shape
        grid = cls.reshape(n_mod, n_clo, batch, dim)  # token t = (m, c), t = 2 m + c
        # split (not slicing): the weight gradients are then one contiguous cat, not
        # zero-filled full-size buffers per slice.
        in_w, out_w = self.in_w.split(GRID), self.out_w.split(GRID)
        in_b = self.in_b.split(GRID) if self.in_b is not None else (None, None)
        out_b = self.out_b.split(GRID) if self.out_b is not None else (None, None)
        # a -> b: modality atom m in (tokens grouped by m), clothes atom c out (grouped by c).
        h = self.act(_atom_linear(grid.reshape(n_mod, n_clo * batch, dim), in_w[0], in_b[0]))
        h = h.view(n_mod, n_clo, batch, -1).transpose(0, 1).reshape(n_clo, n_mod * batch, -1)
        y_ab = _atom_linear(h, out_w[1], out_b[1]).view(n_clo, n_mod, batch, dim)
        # b -> a: clothes atom c in, modality atom m out.
        h = self.act(_atom_linear(grid.transpose(0, 1).reshape(n_clo, n_mod * batch, dim), in_w[1], in_b[1]))
        h = h.view(n_clo, n_mod, batch, -1).transpose(0, 1).reshape(n_mod, n_clo * batch, -1)
        y_ba = _atom_linear(h, out_w[0], out_b[0])
        return y_ab.transpose(0, 1).reshape(ncls, batch, dim), y_ba.view(ncls, batch, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.moae:
            return self.ffn(x)
        # split (not two slices): its backward is one cat instead of two zero-filled buffers.
        cls, patches = x.split([self.ncls, x.shape[1] - self.ncls], dim=1)
        cls = cls.transpose(0, 1)  # token-major (ncls, B, D)
        if self.gate_mode == "hard" and self._routes(cls):
            # The top-1 weight is exactly 1 with no gradient (see gate_weights): the
            # output is the chosen expert alone, and the other one is never needed.
            choice, keep = self.gate_choice(cls)
            mixed = self.routed_experts(cls, choice) * keep.unsqueeze(-1).to(cls.dtype)
        else:
            y_ab, y_ba = self.experts(cls)
            w = self.gate_weights(cls)  # (ncls, B, 2)
            mixed = w[..., :1] * y_ab + w[..., 1:] * y_ba
        if self.gate_mode == "hard" and torch.is_grad_enabled() and self.gate.requires_grad:
            mixed = _ZeroGradTo.apply(mixed, self.gate)  # weight decay reaches the gate (see _ZeroGradTo)
        return torch.cat([mixed.transpose(0, 1), self.ffn(patches)], dim=1)

    def _routes(self, x: torch.Tensor) -> bool:
        if self.dispatch == "auto":
            # A graph (torch.compile, torch.export, ONNX) must not read the group sizes on
            # the host: it takes the dense path, the same function with fixed shapes. Routed
            # under torch.compile, every block breaks the graph twice (bincount's data-
            # dependent shape, the .tolist()) and the grouped matmuls recompile for new sizes.
            in_graph = torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()
            return x.device.type == "cpu" and not in_graph
        return self.dispatch == "routed"

    def extra_repr(self) -> str:
        return f"ncls={self.ncls}, moae={self.moae}, gate={self.gate_mode!r}, dispatch={self.dispatch!r}"
