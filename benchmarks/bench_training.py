"""Training speed: symfw's trainer against a plain textbook PyTorch loop, and the ensemble speed-up.

    python benchmarks/bench_training.py [--presets pfn invariant hybrid] [--events 4096]
                                        [--members 5] [--repeats 5] [--device cpu] [--no-write]

All variants train the same preset model on the same zmumu events (batch 128, AdamW, weighted
BCE) for one epoch at a time, on one thread (CPU). Variants:

- ``baseline``: the textbook loop written below — a ``Dataset`` whose ``__getitem__`` returns one
  event, a shuffling ``DataLoader`` (default collation), one ``nn.Module``, ``loss.backward()``,
  ``opt.step()``;
- ``ours``: one epoch of :func:`symfw.core.training.train_epoch` with one member (events stay as
  tensors, batches gathered by index, the model run through ``torch.func.functional_call``);
- ``ours ×M vmap`` / ``ours ×M seq``: M members trained together, vectorised or sequential;
- ``baseline ×M``: the textbook loop run M times, one model after the other.

Variants alternate within each repeat (so background load hits all alike); the median epoch
time of each gives training events/s (member-events for ensembles). All ratios come from this
one run and are written to docs/performance.md (the section between the bench_training
markers; the rest of the file is left alone).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import symfw  # noqa: E402
from _docs import publish  # noqa: E402
from symfw.core.data import resolve_data  # noqa: E402
from symfw.core.ensemble import Ensemble  # noqa: E402
from symfw.core.training import (  # noqa: E402
    SequentialStepper, Tensors, VectorizedStepper, adamw, batch_order, batches, make_task, member_seeds, train_epoch,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
START, END = "<!-- bench_training:start -->", "<!-- bench_training:end -->"


# --------------------------------------------------------------------------- the baseline


class EventDataset(Dataset):
    """One event per item, as a textbook PyTorch pipeline has it."""

    def __init__(self, p4, mask, label, weight):
        self.p4, self.mask, self.label, self.weight = p4, mask, label, weight

    def __len__(self):
        return len(self.label)

    def __getitem__(self, i):
        return self.p4[i], self.mask[i], self.label[i], self.weight[i]


class Baseline:
    """A plain training loop: DataLoader(shuffle=True), model(x), loss.backward(), opt.step()."""

    def __init__(self, spec, tensors: Tensors, index: torch.Tensor, seed: int, batch_size: int):
        torch.manual_seed(seed)
        self.model = symfw.build_model(spec).to(tensors.p4.device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=spec.training.lr, weight_decay=spec.training.weight_decay)
        ds = EventDataset(tensors.p4[index], tensors.mask[index], tensors.target[index], tensors.weight[index])
        self.loader = DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                 generator=torch.Generator().manual_seed(seed))

    def epoch(self) -> int:
        n = 0
        for p4, mask, label, weight in self.loader:
            self.opt.zero_grad()
            logits = self.model(p4, mask)
            loss = (F.binary_cross_entropy_with_logits(logits, label, reduction="none") * weight).sum() / weight.sum()
            loss.backward()
            self.opt.step()
            n += len(label)
        return n


# --------------------------------------------------------------------------- ours


class Ours:
    """symfw's epoch: M members, batches gathered by index, vmapped or sequential."""

    def __init__(self, spec, tensors: Tensors, index: torch.Tensor, members: int, vectorize: bool, batch_size: int):
        self.tensors, self.index = tensors, index
        self.seeds = member_seeds(0, members)
        self.ens = Ensemble(spec, self.seeds, device=tensors.p4.device, vectorize=vectorize)
        self.stepper = (VectorizedStepper if vectorize else SequentialStepper)(self.ens)
        self.opt = adamw(self.ens.parameters(), spec.training.lr, spec.training.weight_decay)
        self.steps = batches(len(index), batch_size)
        self.steps = [s for s in self.steps if s[1] - s[0] == batch_size]  # full batches, as the baseline
        self.n_epoch = 0

    def epoch(self) -> int:
        order = batch_order(self.index, self.seeds, self.n_epoch, self.index.device)
        self.n_epoch += 1
        train_epoch(self.stepper, self.opt, self.tensors, order, self.steps)
        return sum(stop - start for start, stop in self.steps) * len(self.seeds)


# --------------------------------------------------------------------------- timing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(variants: dict, repeats: int, device) -> dict[str, float]:
    """Median events/s of each variant; variants alternate within every repeat."""
    for v in variants.values():  # warm-up epoch
        v.epoch()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, v in variants.items():
            sync(device)
            t0 = time.perf_counter()
            n = v.epoch()
            sync(device)
            times[name].append(n / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["pfn", "invariant", "hybrid"])
    parser.add_argument("--events", type=int, default=4096, help="training events per epoch")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    data = resolve_data("zmumu", n_events=args.events, seed=0)
    tensors = Tensors.from_data(data, make_task(symfw.load_spec(args.presets[0])), device)
    index = torch.arange(len(data), device=device)
    m, bs = args.members, args.batch_size

    rows = []
    for preset in args.presets:
        spec = symfw.load_spec(preset)
        variants = {
            "baseline": Baseline(spec, tensors, index, 0, bs),
            "ours": Ours(spec, tensors, index, 1, False, bs),  # the trainer runs one member without vmap
            f"ours x{m} vmap": Ours(spec, tensors, index, m, True, bs),
            f"ours x{m} seq": Ours(spec, tensors, index, m, False, bs),
        }
        rate = measure(variants, args.repeats, device)
        # M textbook loops one after the other run at the single loop's rate
        rate[f"baseline x{m}"] = rate["baseline"]
        params = sum(p.numel() for p in symfw.build_model(spec).parameters())
        rows.append((preset, params, rate))
        print(f"{preset:>10}: baseline {rate['baseline']:8.0f} ev/s | ours {rate['ours']:8.0f} ev/s "
              f"({rate['ours'] / rate['baseline']:.2f}x) | x{m} vmap {rate[f'ours x{m} vmap']:8.0f} | "
              f"x{m} seq {rate[f'ours x{m} seq']:8.0f} member-ev/s", flush=True)

    when = datetime.date.today().isoformat()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = "1 thread" if device.type == "cpu" else str(device)
    lines = [
        "## Training throughput (`benchmarks/bench_training.py`)",
        "",
        f"Measured {when} on {cpu_name() if device.type == 'cpu' else torch.cuda.get_device_name(device)}, "
        f"{threads}, torch {torch.__version__}, Python {platform.python_version()}; zmumu events, "
        f"{len(data):,} training events per epoch, batch {bs}, median of {args.repeats} epochs per variant "
        f"(variants interleaved; 1-minute load average {load:.1f} on {os.cpu_count()} CPUs at the end"
        + ("; other jobs shared the machine, so compare ratios, not absolute rates" if load > 1.5 else "")
        + "). Command: `" + " ".join(["python", f"benchmarks/{Path(__file__).name}", *sys.argv[1:]])
        + "`.",
        "",
        "Events/s of one model (baseline: textbook `Dataset` + `DataLoader` loop; ours: symfw's trainer):",
        "",
        "| preset | parameters | baseline ev/s | ours ev/s | ours / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for preset, params, r in rows:
        lines.append(f"| {preset} | {params:,} | {r['baseline']:,.0f} | {r['ours']:,.0f} | {r['ours'] / r['baseline']:.2f}× |")
    lines += [
        "",
        f"Ensembles of {m} members, member-events/s (each member sees every event once per epoch):",
        "",
        f"| preset | {m}× textbook loops | ours ×{m} sequential | ours ×{m} vmapped | vmapped / sequential | vmapped / textbook |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for preset, _, r in rows:
        vm, sq, bl = r[f"ours x{m} vmap"], r[f"ours x{m} seq"], r[f"baseline x{m}"]
        lines.append(f"| {preset} | {bl:,.0f} | {sq:,.0f} | {vm:,.0f} | {vm / sq:.2f}× | {vm / bl:.2f}× |")
    header = "# Performance\n\nMeasured numbers; each section is written by the benchmark named in it.\n"
    publish("\n".join(lines), DOC, START, END, header, write=not args.no_write)


if __name__ == "__main__":
    main()
