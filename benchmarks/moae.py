"""What MoAE costs: train-step time of full Uni-AT vs the baseline, and the vectorised
MoAE layer vs a plain per-expert loop of the same math.

1. Train step (forward + criterion + backward + gradient clipping at 20 + SGD step with
   momentum, Nesterov and weight decay, as in the recipe) on random in-memory batches
   with the P x K = 8 x 8 label structure and both modalities:
   full = ncls 6, MoAE (hard gate), SAID, HDW; baseline = ncls 6, no MoAE, no SAID/HDW.
   CPU: vit_tiny_uniat at 128x64, batch 64, fp32. CUDA: vit_base_uniat at 256x128,
   batch 64, bf16 autocast, fused SGD.
2. The MoAE layer on the CLS tokens alone (the part that differs from a plain FFN),
   forward + backward: our layer as the model runs it vs a loop over the six tokens and
   their two experts (what a direct transcription of the paper does). On CPU ours routes
   each (token, sample) through its chosen expert only (one grouped matmul per stage);
   the dense two-expert batched path, which accelerators run, is timed beside it.

Targets: full / baseline <= 1.3x on CPU (<= 1.15x on GPU); vectorised >= 3x faster
than the loop.

    python benchmarks/moae.py                 # CPU numbers in about a minute (idle machine)
    python benchmarks/moae.py --threads 1     # steadier when other jobs share the cores
    python benchmarks/moae.py --iters 20      # more timed steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable

import torch
from torch import nn

from atreid.losses import UniATCriterion
from atreid.model import ATOMS, SCENARIO_ATOMS, MoAE, build_model

P, K = 8, 8
NUM_PERSONS, OUTFITS_PER_PERSON = 135, 4  # AT-USTC-sized label spaces for the classifiers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch(device: torch.device, img_size: tuple[int, int], gen: torch.Generator) -> list[torch.Tensor]:
    persons = torch.randperm(NUM_PERSONS, generator=gen)[:P].repeat_interleave(K)
    clothes = torch.randint(0, OUTFITS_PER_PERSON, (P * K,), generator=gen)
    outfit = persons * OUTFITS_PER_PERSON + clothes
    modality = torch.arange(K).remainder(2).repeat(P)  # K/2 RGB + K/2 IR per identity
    images = torch.randn(P * K, 3, *img_size, generator=gen)
    return [t.to(device) for t in (images, persons, outfit, modality)]


def make_step(variant: dict, arch: str, img_size: tuple[int, int], device: torch.device,
              amp: bool) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(arch, ncls=variant["ncls"], moae=variant["moae"], num_persons=NUM_PERSONS,
                        num_outfits=NUM_PERSONS * OUTFITS_PER_PERSON, img_size=img_size, patch_stride=16,
                        drop_path_rate=0.1, gate="hard", said=variant["said"]).to(device).train()
    outfit_to_person = [o // OUTFITS_PER_PERSON for o in range(NUM_PERSONS * OUTFITS_PER_PERSON)]
    criterion = UniATCriterion(variant["said"], variant["hdw"], 0.3, outfit_to_person).to(device)
    no_decay = model.no_weight_decay()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and n not in no_decay]},
              {"params": [p for n, p in model.named_parameters() if p.requires_grad and n in no_decay],
               "weight_decay": 0.0}]
    kwargs = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.SGD(groups, lr=0.008, momentum=0.9, nesterov=True, weight_decay=5e-4, **kwargs)

    def step(data: list[torch.Tensor]) -> torch.Tensor:
        images, person, outfit, modality = data
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            tokens, logits = model(images)
        loss, _ = criterion(tokens.float(), [lg.float() for lg in logits], person, outfit, modality)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 20.0)
        optimizer.step()
        return loss

    return step


def time_steps(steps: dict[str, Callable], data: list[torch.Tensor], device: torch.device, warmup: int,
               iters: int) -> dict[str, dict[str, float]]:
    """Seconds per call: median wall clock and minimum process CPU time.

    The candidates alternate so drift hits them alike. On a shared machine the CPU time
    (this process's own work, all threads) is the steadier of the two.
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn(data)
    sync(device)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(iters):
        for name, fn in steps.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(data)
            sync(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall": statistics.median(wall[name]), "cpu": min(cpu[name])} for name in steps}


class LoopMoAE(nn.Module):
    """The same math as :class:`MoAE`, transcribed directly: one ``nn.Linear`` per atom side
    (the reference's module layout) and a Python loop over the six tokens and their two
    experts. Built from a :class:`MoAE` so both compute identical outputs."""

    def __init__(self, layer: MoAE) -> None:
        super().__init__()
        dim, hidden = layer.in_features, layer.hidden_features
        self.ncls, self.act, self.fc1, self.fc2 = layer.ncls, layer.act, layer.fc1, layer.fc2
        self.atom_in = nn.ModuleList(nn.Linear(dim, hidden) for _ in ATOMS)
        self.atom_out = nn.ModuleList(nn.Linear(hidden, dim) for _ in ATOMS)
        self.gate = nn.ModuleList(nn.Linear(dim, 2, bias=False) for _ in range(layer.ncls))
        with torch.no_grad():
            for k in range(len(ATOMS)):
                self.atom_in[k].weight.copy_(layer.in_w[k].t())
                self.atom_in[k].bias.copy_(layer.in_b[k])
                self.atom_out[k].weight.copy_(layer.out_w[k].t())
                self.atom_out[k].bias.copy_(layer.out_b[k])
            for t in range(layer.ncls):
                self.gate[t].weight.copy_(layer.gate[t])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for t in range(x.shape[1]):
            xt = x[:, t]
            if t >= self.ncls:
                outs.append(self.fc2(self.act(self.fc1(xt))))
                continue
            a, b = SCENARIO_ATOMS[t]
            experts = [self.atom_out[dst](self.act(self.atom_in[src](xt))) for src, dst in ((a, b), (b, a))]
            probs = torch.softmax(self.gate[t](xt), dim=-1)
            top, index = probs.topk(1, dim=-1)  # top-1, renormalised
            weights = torch.zeros_like(probs).scatter(1, index, top / top.sum(dim=-1, keepdim=True))
            outs.append(weights[:, :1] * experts[0] + weights[:, 1:] * experts[1])
        return torch.stack(outs, dim=1)


def layer_benchmark(dim: int, hidden: int, batch_size: int, device: torch.device, amp: bool, warmup: int,
                    iters: int) -> dict[str, dict[str, float]]:
    """Forward + backward of the CLS tokens through: ours as the model runs it (``auto``
    dispatch: routed on CPU, dense on accelerators), the dense two-expert path, and the loop."""
    torch.manual_seed(0)
    layer = MoAE(dim, hidden, ncls=6, moae=True, gate="hard").to(device)
    dense = MoAE(dim, hidden, ncls=6, moae=True, gate="hard", dispatch="dense").to(device)
    dense.load_state_dict(layer.state_dict())
    loop = LoopMoAE(layer).to(device)
    x = torch.randn(batch_size, 6, dim, device=device, requires_grad=True)
    probe = torch.randn(batch_size, 6, dim, device=device)

    def run(fn: Callable) -> Callable:
        def call(_: object) -> None:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                y = fn(x)
            (y.float() * probe).sum().backward()
            x.grad = None
            for module in (layer, dense, loop):
                module.zero_grad(set_to_none=True)
        return call

    with torch.no_grad():  # same math, checked before timing
        torch.testing.assert_close(layer(x), loop(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dense(x), loop(x), rtol=1e-4, atol=1e-5)
    candidates = {"vectorised": run(layer), "loop": run(loop)}
    if layer._routes(x):  # on accelerators "vectorised" already is the dense path
        candidates["dense"] = run(dense)
    return time_steps(candidates, [], device, warmup, iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="timed train steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = torch.device("cuda" if cuda else "cpu")
    torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        arch, img_size, amp, dims = "vit_base_uniat", (256, 128), True, (768, 3072)
        machine = torch.cuda.get_device_name(device)
    else:
        arch, img_size, amp, dims = "vit_tiny_uniat", (128, 64), False, (192, 768)
        machine = f"{platform.machine()} CPU ({os.cpu_count()} cores), {args.threads} threads"
    load = _load_average()
    print(f"# {machine}; torch {torch.__version__}; {arch} {img_size[0]}x{img_size[1]}, batch {P * K}, "
          f"{'bf16 autocast' if amp else 'fp32'}; 1-min load average {load}")

    data = batch(device, img_size, torch.Generator().manual_seed(0))
    variants = {"full": dict(ncls=6, moae=True, said=True, hdw=True),
                "baseline": dict(ncls=6, moae=False, said=False, hdw=False)}
    steps = {name: make_step(v, arch, img_size, device, amp) for name, v in variants.items()}
    step = time_steps(steps, data, device, args.warmup, args.iters)
    del steps
    target = 1.15 if cuda else 1.3
    results = {"device": machine, "torch": torch.__version__, "arch": arch, "img_size": list(img_size),
               "batch": P * K, "load_average_start": load}
    clocks = ("wall",) if cuda else ("wall", "cpu")  # host CPU time says nothing about GPU work
    for clock in clocks:
        full, base = step["full"][clock], step["baseline"][clock]
        ratio = full / base
        print(f"train step ({clock:4s})  full {full * 1e3:8.1f} ms   baseline {base * 1e3:8.1f} ms   "
              f"full/baseline {ratio:.3f}x  (target <= {target}x: {'ok' if ratio <= target else 'MISSED'})")
        results.update({f"step_full_{clock}_ms": full * 1e3, f"step_baseline_{clock}_ms": base * 1e3,
                        f"full_over_baseline_{clock}": ratio})

    layer_dims = [dims] + ([(768, 3072)] if not cuda else [])
    for dim, hidden in layer_dims:
        t = layer_benchmark(dim, hidden, P * K, device, amp, args.warmup, 2 * args.iters)
        for clock in clocks:
            vec, loop = t["vectorised"][clock], t["loop"][clock]
            print(f"MoAE layer ({clock:4s}) dim {dim}/{hidden}, 6 CLS x {P * K}: vectorised {vec * 1e3:7.2f} ms   "
                  f"loop {loop * 1e3:7.2f} ms   speed-up {loop / vec:.2f}x  "
                  f"(target >= 3x: {'ok' if loop / vec >= 3 else 'MISSED'})")
            results.update({f"layer{dim}_vectorised_{clock}_ms": vec * 1e3, f"layer{dim}_loop_{clock}_ms": loop * 1e3,
                            f"layer{dim}_speedup_{clock}": loop / vec})
            if "dense" in t:
                dense = t["dense"][clock]
                print(f"    of which routing: the dense two-expert path takes {dense * 1e3:7.2f} ms "
                      f"({loop / dense:.2f}x faster than the loop)")
                results[f"layer{dim}_dense_{clock}_ms"] = dense * 1e3
    results["load_average_end"] = _load_average()
    print(json.dumps(results))


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


if __name__ == "__main__":
    main()
