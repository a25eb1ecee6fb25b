"""Cost of the SEAL penalties: a training step with a penalty as a ratio to a plain step.

    python benchmarks/bench_penalties.py [--presets pfn hybrid] [--batch 128] [--steps 60] [--threads 1]

A plain step is forward, weighted BCE, backward and an AdamW update of one model in training
mode. A penalised step adds λ·Γ(fn, batch) as the trainer computes it: fn is the same model
normalised with the statistics the training pass recorded, and the batch carries the training
pass's logits (Γ_G reuses them for f(x)). Steps alternate between the
variants, repeated ``--repeats`` times; the ratio of the fastest repeats (the least disturbed
by other processes) is printed. Goals (issue 5):
Γ_δ ≤ 2×, Γ_G ≤ 2.2×.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import symfw
from symfw.core.interfaces import Batch
from symfw.core.nn import shared_batch_statistics
from symfw.plugins.lorentz_groups import Lorentz
from symfw.plugins.seal_group import SealGroup
from symfw.plugins.seal_infinitesimal import SealInfinitesimal

GOALS = {"seal-infinitesimal": 2.0, "seal-group": 2.2}


def make_batch(n: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    p3 = torch.randn(n, 2, 3, generator=g) * 40
    p4 = torch.cat([p3.norm(dim=-1, keepdim=True), p3], -1)
    return Batch(p4, torch.ones(n, 2, dtype=torch.bool), torch.randint(0, 2, (n,), generator=g).float(), torch.ones(n))


def step_fn(model, opt, batch, penalty):
    """One AdamW step, the penalty (if any) evaluated as the trainer does (core/ensemble.py)."""

    def step():
        opt.zero_grad(set_to_none=True)
        with shared_batch_statistics(model) as shared:
            logits = model(batch.p4, batch.mask)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label, weight=batch.weight)
            if penalty is not None:

                def fn(p4, mask):
                    with shared.reusing():
                        return model(p4, mask)

                given = Batch(batch.p4, batch.mask, batch.label, batch.weight, logits=logits)
                loss = loss + 1.0 * penalty(fn, given)
        loss.backward()
        opt.step()

    return step


def time_steps(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["pfn", "hybrid"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    group = Lorentz()
    variants = {
        "plain": None,
        "seal-infinitesimal": SealInfinitesimal(SealInfinitesimal.Options(), group),
        "seal-infinitesimal (double-vjp)": SealInfinitesimal(SealInfinitesimal.Options(method="double-vjp"), group),
        "seal-infinitesimal (random)": SealInfinitesimal(SealInfinitesimal.Options(estimator="random"), group),
        "seal-infinitesimal (random, double-vjp)": SealInfinitesimal(
            SealInfinitesimal.Options(estimator="random", method="double-vjp"), group
        ),
        "seal-infinitesimal (gradient)": SealInfinitesimal(SealInfinitesimal.Options(method="gradient"), group),
        "seal-infinitesimal (gradient, half the events)": SealInfinitesimal(
            SealInfinitesimal.Options(method="gradient", event_fraction=0.5), group
        ),
        "seal-group": SealGroup(SealGroup.Options(), group),
    }
    batch = make_batch(args.batch)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.steps} steps x {args.repeats} repeats")
    print(f"{'preset':<10} {'penalty':<48} {'ms/step':>9} {'ratio':>7}  goal")
    for preset in args.presets:
        torch.manual_seed(0)
        model = symfw.build_model(symfw.load_spec(preset)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        steps = {name: step_fn(model, opt, batch, pen) for name, pen in variants.items()}
        for step in steps.values():  # warm up
            time_steps(step, 3)
        samples = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                samples[name].append(time_steps(step, args.steps))
        plain = min(samples["plain"])
        for name in steps:
            t = min(samples[name])
            goal = GOALS.get(name.split(" ")[0]) if name != "plain" else None
            verdict = "" if goal is None else (f"{goal:.1f}x " + ("ok" if t / plain <= goal else "MISSED"))
            print(f"{preset:<10} {name:<48} {1e3 * t:9.2f} {t / plain:6.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
