"""Training speed: symfw's trainer against a stand-in of the hybrid paper's reference loop and a
textbook PyTorch loop, one model and an ensemble, and the share of the machine's matmul rate.

    python benchmarks/bench_training.py [--presets pfn invariant hybrid] [--events 20000]
                                        [--members 5] [--epochs 2] [--repeats 6]
                                        [--compile off|on|both] [--device cpu] [--no-write]

Every variant trains the same preset model on the same zmumu events and split (20k events:
12k training, 4k validation), batch 128, AdamW, and runs **whole epochs including its own
validation pass**; events/s counts training events per second of epoch. Variants:

- ``reference``: a stand-in of the hybrid paper's reference loop, written from its description
  (issue 15): a ``Dataset`` whose ``__getitem__`` returns one event, a ``DataLoader`` drawing
  with a ``WeightedRandomSampler`` (the event weights, with replacement) and default collation,
  its ``train()`` loop (``loss.item()`` every step) and ``test()`` loop on the validation split
  every epoch (loss and weighted AUC), one model, per-tensor AdamW (``foreach=False``);
- ``textbook``: ``DataLoader(shuffle=True)``, weighted BCE, ``torch.optim.AdamW`` with torch's
  defaults, and one no-grad pass over the validation split with its weighted AUC per epoch;
- ``symfw``: :func:`symfw.core.training.train_ensemble` as ``symfw train`` runs it (validation
  metrics, best-epoch snapshot, checkpoint and metrics written every epoch), one member;
- ``symfw xM``: M members trained together in one vmapped step (``symfw train --seeds M
  --vectorize yes``), member-events/s; ``symfw xM seq``: the same one after the other, each a
  module of its own (``--vectorize no``, what ``auto`` picks on a CPU);
- with ``--compile on`` or ``both``: the same with the compiled step (``--compile``).

Within each repeat the variants run one after the other, ``--epochs`` epochs each (symfw
resumes its run folder, so its epochs continue); the first epoch of every stint is a warm-up
and not counted, and the fp32 matmul rate (torch.mm, 1024²) is measured between the stints.
Rates are medians over the counted epochs, by the wall clock and by the process's CPU time
(robust to other processes on a shared machine); a ratio to the reference is the median over the
repeats of the ratio within each repeat (the variants measured minutes apart drift with the
machine's state; each repeat's variants run back to back), with the range over the repeats. FLOPs per training event are counted with
torch's FlopCounterMode (matrix products of one forward and backward), so each variant's
achieved GFLOP/s and its share of the measured matmul rate follow. All ratios come from this
one run and are written to docs/performance.md (between the bench_training markers).
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
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import symfw  # noqa: E402
from _docs import publish  # noqa: E402
from symfw.core.data import resolve_data  # noqa: E402
from symfw.core.runs import FractionDir  # noqa: E402
from symfw.core.training import (  # noqa: E402
    EnsembleJob, RunSettings, Tensors, make_task, member_seeds, prepare_split, train_ensemble,
    with_training_overrides,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
START, END = "<!-- bench_training:start -->", "<!-- bench_training:end -->"


# --------------------------------------------------------------------------- the other loops


class EventDataset(Dataset):
    """One event per item (a tuple of its fields), as both loops have it."""

    def __init__(self, *fields: torch.Tensor):
        self.fields = fields

    def __len__(self):
        return len(self.fields[0])

    def __getitem__(self, i):
        return tuple(f[i] for f in self.fields)


class Loop:
    """What the reference and the textbook loops share: the model, the events, the validation AUC."""

    def __init__(self, spec, tensors: Tensors, split, seed: int, batch_size: int, device):
        torch.manual_seed(seed)
        self.device = device
        self.model = symfw.build_model(spec).to(device)
        t = {k: getattr(tensors, k).cpu() for k in ("p4", "mask", "target", "weight")}
        self.train_events = {k: v[torch.as_tensor(split.train)] for k, v in t.items()}
        self.val_events = {k: v[torch.as_tensor(split.val)] for k, v in t.items()}
        self.val_loader = DataLoader(EventDataset(*(self.val_events[k] for k in ("p4", "mask", "target"))),
                                     batch_size=batch_size)
        self.n_train = len(split.train)

    def to(self, *tensors):
        return [x.to(self.device) for x in tensors]

    def val_auc(self, outputs: list[torch.Tensor]) -> float:
        scores = torch.cat(outputs).cpu().numpy()
        return roc_auc_score(self.val_events["target"].numpy(), scores, sample_weight=self.val_events["weight"].numpy())


class Reference(Loop):
    """The hybrid paper's reference loop as issue 15 describes it (a stand-in, not its code)."""

    def __init__(self, spec, tensors, split, seed, batch_size, device):
        super().__init__(spec, tensors, split, seed, batch_size, device)
        cfg = spec.training
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           foreach=False)
        self.loss_fn = nn.BCEWithLogitsLoss()
        t = self.train_events
        sampler = WeightedRandomSampler(t["weight"].double(), self.n_train, replacement=True,
                                        generator=torch.Generator().manual_seed(seed))
        self.train_loader = DataLoader(EventDataset(t["p4"], t["mask"], t["target"]), batch_size=batch_size,
                                       sampler=sampler)

    def train(self) -> float:
        self.model.train()
        total = 0.0
        for p4, mask, label in self.train_loader:
            p4, mask, label = self.to(p4, mask, label)
            loss = self.loss_fn(self.model(p4, mask), label)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        return total / len(self.train_loader)

    def test(self) -> tuple[float, float]:
        self.model.eval()
        loss, outputs = 0.0, []
        with torch.no_grad():
            for p4, mask, label in self.val_loader:
                p4, mask, label = self.to(p4, mask, label)
                pred = self.model(p4, mask)
                loss += self.loss_fn(pred, label).item()
                outputs.append(pred)
        return loss / len(self.val_loader), self.val_auc(outputs)

    def epoch(self) -> int:
        self.train()
        self.test()
        return self.n_train


class Textbook(Loop):
    """A plain loop: DataLoader(shuffle=True), model(x), weighted BCE, backward, AdamW step; one
    no-grad pass over the validation split."""

    def __init__(self, spec, tensors, split, seed, batch_size, device):
        super().__init__(spec, tensors, split, seed, batch_size, device)
        cfg = spec.training
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        t = self.train_events
        self.train_loader = DataLoader(EventDataset(t["p4"], t["mask"], t["target"], t["weight"]),
                                       batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))

    def epoch(self) -> int:
        self.model.train()
        for p4, mask, label, weight in self.train_loader:
            p4, mask, label, weight = self.to(p4, mask, label, weight)
            self.optimizer.zero_grad()
            loss = (F.binary_cross_entropy_with_logits(self.model(p4, mask), label, reduction="none") * weight).sum()
            (loss / weight.sum()).backward()
            self.optimizer.step()
        self.model.eval()
        with torch.no_grad():
            self.val_auc([self.model(*self.to(p4, mask)) for p4, mask, _ in self.val_loader])
        return self.n_train


# --------------------------------------------------------------------------- symfw


class Symfw:
    """``symfw train``'s loop: each stint resumes the run folder for ``epochs`` more epochs and
    times every epoch (the end of one epoch to the end of the next, everything included)."""

    def __init__(self, spec, tensors, split, members: int, device, compile_: bool, root: Path, vectorize="auto"):
        self.spec, self.tensors, self.split, self.device, self.compile = spec, tensors, split, device, compile_
        self.vectorize = vectorize
        self.seeds = member_seeds(0, members)
        self.dir = FractionDir(root)
        self.done = 0
        self.mode = None

    def stint(self, epochs: int) -> list[tuple[float, float]]:
        self.done += epochs
        spec = with_training_overrides(self.spec, epochs=self.done)
        job = EnsembleJob(spec=spec, split=self.split, seeds=self.seeds, device=self.device, compile=self.compile,
                          vectorize=self.vectorize)
        ends: list[tuple[float, float]] = []

        def on_epoch(_record):
            ends.append((time.perf_counter(), time.process_time()))

        results = train_ensemble(job, self.tensors, self.dir, resume=True, on_epoch=on_epoch)
        self.mode = results["mode"] + (", compiled" if results.get("compiled") else "")
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(ends, ends[1:])]  # the first epoch: warm-up


# --------------------------------------------------------------------------- measuring


class Rates(NamedTuple):
    wall: float  # events/s by the wall clock, median of every counted epoch
    cpu: float  # the same by the process's CPU time
    ratio: float  # × the reference: median over the repeats of the within-repeat ratio (wall clock)
    cpu_ratio: float  # the same by CPU time
    low: float  # the smallest and largest within-repeat ratio (wall clock)
    high: float
    mode: str


def within_repeat(rates: dict[str, list[tuple[float, float]]], name: str, i: int) -> float:
    """Variant ``name``'s rate over the reference's in one repeat (``i`` = 0: wall clock, 1: CPU time)."""
    return statistics.median(r[i] for r in rates[name]) / statistics.median(r[i] for r in rates["reference"])


def matmul_rate(device, n: int = 1024, repeats: int = 10) -> float:
    """fp32 GFLOP/s of torch.mm on n x n matrices."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def flops_per_event(spec, tensors: Tensors, batch_size: int) -> float:
    """Matrix-product FLOPs of one training forward and backward, per event."""
    torch.manual_seed(0)
    model = symfw.build_model(spec).to(tensors.p4.device).train()
    idx = torch.arange(batch_size, device=tensors.p4.device)
    with FlopCounterMode(display=False) as counter:
        loss = F.binary_cross_entropy_with_logits(model(tensors.p4[idx], tensors.mask[idx]), tensors.target[idx])
        loss.backward()
    return counter.get_total_flops() / batch_size


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_epochs(loop, epochs: int, device) -> list[tuple[float, float]]:
    out = []
    for e in range(epochs):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loop.epoch()
        sync(device)
        if e:  # the first epoch of a stint: warm-up, as for symfw
            out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


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
    parser.add_argument("--events", type=int, default=20_000, help="zmumu events (60 %% train, 20 %% validation)")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per stint (the first is a warm-up)")
    parser.add_argument("--repeats", type=int, default=6, help="stints per variant, interleaved")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off",
                        help="symfw's step eager (off), compiled (on), or both side by side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-seq", action="store_true", help="leave out the ensemble trained one member at a time")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch of a stint is not counted)")

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    data = resolve_data("zmumu", n_events=args.events, seed=0)
    split = prepare_split(data, RunSettings())
    bs, m = args.batch_size, args.members
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    tmp = tempfile.TemporaryDirectory(prefix="bench_training_")

    rows, rates = [], []
    for preset in args.presets:
        spec = with_training_overrides(symfw.load_spec(preset), batch_size=bs)
        tensors = Tensors.from_data(data, make_task(spec), device)
        variants: dict[str, object] = {
            "reference": Reference(spec, tensors, split, 0, bs, device),
            "textbook": Textbook(spec, tensors, split, 0, bs, device),
        }
        for c in compiles:
            tag = " compiled" if c else ""
            variants[f"symfw{tag}"] = Symfw(spec, tensors, split, 1, device, c, Path(tmp.name) / f"{preset}-1{tag}")
            variants[f"symfw x{m}{tag}"] = Symfw(spec, tensors, split, m, device, c, Path(tmp.name) / f"{preset}-{m}{tag}",
                                                 vectorize="yes")
            if not args.no_seq:
                variants[f"symfw x{m} seq{tag}"] = Symfw(spec, tensors, split, m, device, c,
                                                         Path(tmp.name) / f"{preset}-{m}s{tag}", vectorize="no")
        rounds: list[dict[str, list[tuple[float, float]]]] = []  # per repeat: each variant's (wall, cpu) events/s
        for _ in range(args.repeats):
            rounds.append({})
            for name, v in variants.items():
                rates.append(matmul_rate(device))
                n = len(split.train) * (len(v.seeds) if isinstance(v, Symfw) else 1)
                times = v.stint(args.epochs) if isinstance(v, Symfw) else timed_epochs(v, args.epochs, device)
                rounds[-1][name] = [(n / t, n / c) for t, c in times]
        result = {}
        for name, v in variants.items():
            walls = [within_repeat(rnd, name, 0) for rnd in rounds]
            result[name] = Rates(statistics.median(r[0] for rnd in rounds for r in rnd[name]),
                                 statistics.median(r[1] for rnd in rounds for r in rnd[name]),
                                 statistics.median(walls), statistics.median(within_repeat(rnd, name, 1) for rnd in rounds),
                                 min(walls), max(walls), getattr(v, "mode", None) or "")
        fl = flops_per_event(spec, tensors, bs)
        params = sum(p.numel() for p in symfw.build_model(spec).parameters())
        rows.append((preset, params, fl, result))
        print(f"{preset}: " + " | ".join(f"{k} {r.wall:,.0f} ev/s ({r.ratio:.2f}x ref, {r.low:.2f}-{r.high:.2f})"
                                         for k, r in result.items()), flush=True)
    tmp.cleanup()

    limit = statistics.median(rates)
    when = datetime.date.today().isoformat()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    names = list(rows[0][3])
    lines = [
        "## Training throughput (`benchmarks/bench_training.py`)",
        "",
        f"Measured {when} on {where}, {'1 thread' if device.type == 'cpu' else str(device)}, torch {torch.__version__}, "
        f"Python {platform.python_version()}; zmumu, {args.events:,} events ({len(split.train):,} training, "
        f"{len(split.val):,} validation), batch {bs}, whole epochs with each loop's validation pass; "
        f"{args.repeats} repeats × {args.epochs - 1} counted epochs per variant (variants interleaved, the first "
        f"epoch of each stint not counted); 1-minute load average {load:.1f} on {os.cpu_count()} CPUs at the end. "
        "Command: `" + " ".join(["python", f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]) + "`.",
        "",
        f"fp32 matmul rate measured in the same run (torch.mm, 1024², median of {len(rates)}): **{limit:.1f} GFLOP/s**. "
        "MFLOP/event: the matrix products of one training forward and backward (FlopCounterMode); "
        "\"of matmul\": the share of the matmul rate a variant's matrix products reach.",
        "",
        "Training events/s by the wall clock (member-events/s for ensembles; median of every counted epoch), and × "
        "the reference: the median over the repeats of the ratio within each repeat, by the wall clock (its range "
        "over the repeats after it) and by the process's CPU time (in brackets):",
        "",
        "| preset | MFLOP/event | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for preset, _, fl, result in rows:
        cells = [f"{r.wall:,.0f} ({r.ratio:.2f}×, {r.low:.2f}–{r.high:.2f}) [{r.cpu_ratio:.2f}×]" for r in result.values()]
        lines.append(f"| {preset} | {fl / 1e6:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Share of the matmul rate (wall clock):",
        "",
        "| preset | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for preset, _, fl, result in rows:
        lines.append(f"| {preset} | " + " | ".join(f"{r.wall * fl / 1e9 / limit:.0%}" for r in result.values()) + " |")
    modes = {k: r.mode for _, _, _, result in rows for k, r in result.items() if r.mode}
    lines += ["", "symfw ran " + "; ".join(f"`{k}` {mode}" for k, mode in modes.items()) + "."]
    header = "# Performance\n\nMeasured numbers; each section is written by the benchmark named in it.\n"
    publish("\n".join(lines), DOC, START, END, header, write=not args.no_write)


if __name__ == "__main__":
    main()
