"""Jets/s of the jet presets' training steps, and their share of the machine's fp32 matmul rate.

    python benchmarks/bench_jets.py [--batch 128] [--repeats 5] [--no-write]

In one run, on one thread: the fp32 matrix-product rate (torch.mm of 1024² matrices, GFLOP/s),
then for `pfn-jets` at 64 and 128 constituents and `pelican-jets` at 64 and 128, the training
step (forward, backward, AdamW) on random jets with 40–60 real constituents: jets/s, the step's
FLOPs counted by torch's FlopCounterMode — those it executes (the PFN computes only the real
constituents) and those of the same model on every padded slot — the achieved GFLOP/s and its
ratio to the matmul rate, and the run's peak resident memory. Variants alternate within every repeat
and the median is kept; the load average is printed, since the machine is shared. Then whole
trainer epochs of five pfn-jets members, vmapped against one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _docs import publish
from torch.utils.flop_counter import FlopCounterMode

import symfw
from symfw.core.data import EventData
from symfw.core.nn import ParticleMLP
from symfw.core.spec import resolve_spec
from symfw.core.training import RunSettings, adamw, run_training, with_training_overrides

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
START, END = "<!-- bench_jets:start -->", "<!-- bench_jets:end -->"


def matmul_rate(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def jets(batch: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p3 = torch.randn(batch, n, 3, generator=g) * torch.tensor([5.0, 5.0, 300.0])
    p4 = torch.cat([p3.norm(dim=-1, keepdim=True), p3], -1)
    mask = torch.arange(n)[None] < torch.randint(40, 61, (batch, 1), generator=g)
    return p4 * mask[..., None], mask


@contextlib.contextmanager
def every_slot():
    """The particle MLPs run on every slot, padded ones included (the real ones not packed)."""
    real_rows = ParticleMLP.__dict__["real_rows"]  # the staticmethod itself
    ParticleMLP.real_rows = staticmethod(lambda mask: None)
    try:
        yield
    finally:
        ParticleMLP.real_rows = real_rows


class Step:
    def __init__(self, preset: str, n: int, batch: int):
        spec = symfw.load_spec(preset).model_dump()
        spec["n_particles"] = n
        self.model = symfw.build_model(resolve_spec(spec)).train()
        self.opt = adamw(list(self.model.parameters()), 1e-3, 0.01)
        self.p4, self.mask = jets(batch, n)
        self.label = (torch.arange(batch) % 2).float()
        self.batch = batch
        with FlopCounterMode(display=False) as counter:
            self()
        self.flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter, every_slot():
            self()
        self.padded_flops = counter.get_total_flops()

    def __call__(self) -> None:
        out = self.model(self.p4, self.mask)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, self.label)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def ensemble_epoch(members: int, mode: str, n_jets: int = 2000) -> float:
    """Member-jets/s of one training epoch of ``members`` pfn-jets members through the trainer
    (``vectorize`` = ``mode``: yes = vmapped, no = one after the other) on random padded jets."""
    p4, mask = jets(n_jets, 128, seed=1)
    data = EventData(p4=p4.numpy(), label=(np.arange(n_jets) % 2), mask=mask.numpy(),
                     weight=np.ones(n_jets), meta={"source": "random jets"})
    spec = with_training_overrides(symfw.load_spec("pfn-jets"), epochs=1)
    res = run_training(spec, data, RunSettings(data="random", seeds=members), vectorize=mode)["fractions"][0]
    return res["n_train"] * members / res["train_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--members", type=int, default=5, help="ensemble size of the vmapped vs sequential epochs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = {f"{p} N={n}": Step(p, n, args.batch) for p in ("pfn-jets", "pelican-jets") for n in (64, 128)}
    times = {k: [] for k in variants}
    rates = []
    for _ in range(args.repeats):
        rates.append(matmul_rate())
        for name, step in variants.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    by_mode = {"yes": [], "no": []}
    for _ in range(3):  # whole trainer epochs, the two modes interleaved
        for mode in by_mode:
            by_mode[mode].append(ensemble_epoch(args.members, mode))
    vmapped, sequential = (statistics.median(by_mode[m]) for m in ("yes", "no"))
    limit = statistics.median(rates)
    rows = []
    for name, step in variants.items():
        dt = statistics.median(times[name])
        gflops = step.flops / dt / 1e9
        padded = step.padded_flops / dt / 1e9
        rows.append(f"| {name} | {args.batch / dt:,.0f} | {step.flops / args.batch / 1e6:.1f} | "
                    f"{step.padded_flops / args.batch / 1e6:.1f} | {gflops:.1f} | {gflops / limit:.0%} | "
                    f"{padded / limit:.0%} |")
    load = os.getloadavg()[0]
    section = "\n".join([
        "## Jet training steps (`benchmarks/bench_jets.py`)",
        "",
        f"Measured {datetime.date.today()} on {platform.processor() or platform.machine()}, 1 thread, "
        f"torch {torch.__version__}; batch {args.batch}, random jets with 40–60 real constituents padded to N; "
        f"median of {args.repeats} steps per variant, variants interleaved with the matmul measurement; "
        f"1-minute load average {load:.1f} on {os.cpu_count()} CPUs. Command: `python benchmarks/bench_jets.py`.",
        "",
        f"fp32 matmul rate (torch.mm, 1024²): **{limit:.1f} GFLOP/s**. A training step's FLOPs are counted by "
        "torch's FlopCounterMode (matrix products only; elementwise work is not counted, so the ratio is the "
        "share of the matmul limit the step's matrix products reach): those the step executes (the PFN's "
        "per-particle MLP runs on the real constituents only) and, for comparison, those of the same model "
        "on every padded slot (\"padded\": the work the step stands in for).",
        "",
        "| variant | jets/s (train step) | MFLOP per jet | padded MFLOP per jet | achieved GFLOP/s "
        "| of the matmul rate | padded-equivalent share |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Peak resident memory of the steps above (every variant's model, optimiser and step): {peak_mb:,.0f} MB.",
        "",
        f"{args.members} `pfn-jets` members through the trainer (`run_training`, one epoch on 1,200 of 2,000 random "
        "jets at N = 128, training time only; median of 3, the modes interleaved): vmapped "
        f"(`--vectorize yes`) **{vmapped:,.0f}** member-jets/s, one after the other (`--vectorize no`, the CPU "
        f"default) **{sequential:,.0f}** member-jets/s — **{sequential / vmapped:.1f}×**. Under vmap a step "
        "cannot see which constituents are padded, so the per-particle MLPs run on all 128 slots.",
    ])
    publish(section, DOC, START, END, "# Performance\n", write=not args.no_write)


if __name__ == "__main__":
    main()
