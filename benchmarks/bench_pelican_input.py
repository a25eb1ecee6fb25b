"""Jets/s of one training epoch: `pelican-jets` against its input-method variant `pelican-jets-input`
(and the spurion variant `pelican-jets-spurions`), at N constituents, one thread.

    python benchmarks/bench_pelican_input.py [--n 64] [--events 1000] [--repeats 3]

Every variant runs ``symfw train SPEC --epochs 1 --threads 1`` on the same random jets (40–60 real
constituents padded to N, pT ~ 5 GeV, pz ~ 300 GeV, 60 % training split), its spec being the preset
with ``n_particles = N``; jets/s is the training split's size over the epoch's ``train_time_s``
(training steps and the validation pass, as the run records it, not the process start). Variants
alternate within every repeat and the median is kept; the ratio to `pelican-jets` is printed, with
the load average, since the machine is shared. Prints only (docs/jets.md quotes a run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import symfw
from symfw.core.data import EventData, save_events

PRESETS = ("pelican-jets", "pelican-jets-input", "pelican-jets-spurions")


def jet_file(path: Path, n_events: int, n: int) -> None:
    rng = np.random.default_rng(0)
    p3 = rng.normal(size=(n_events, n, 3)) * np.array([5.0, 5.0, 300.0])
    p4 = np.concatenate([np.linalg.norm(p3, axis=-1, keepdims=True), p3], -1)
    mask = np.arange(n)[None] < rng.integers(min(40, n), min(60, n) + 1, n_events)[:, None]
    save_events(EventData(p4=(p4 * mask[..., None]).astype(np.float32), label=rng.integers(0, 2, n_events),
                          mask=mask, weight=np.ones(n_events)), path)


def epoch_rate(spec: Path, data: Path, out: Path) -> float:
    cmd = [sys.executable, "-m", "symfw", "train", str(spec), "--data", str(data), "--epochs", "1", "--threads", "1",
           "--json", "-q", "--out", str(out)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    run = result["fractions"][0]
    return run["n_train"] / run["train_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="constituents per jet (n_particles)")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jet_file(root / "jets.npz", args.events, args.n)
        specs = {}
        for name in PRESETS:
            specs[name] = root / f"{name}.toml"
            symfw.write_spec(symfw.load_spec(name).model_copy(update={"n_particles": args.n}), specs[name])
        rates: dict[str, list[float]] = {name: [] for name in PRESETS}
        for r in range(args.repeats):
            for name in PRESETS:
                rates[name].append(epoch_rate(specs[name], root / "jets.npz", root / f"run-{name}-{r}"))
    base = statistics.median(rates[PRESETS[0]])
    load = os.getloadavg()
    print(f"N = {args.n}, {args.events} jets ({int(0.6 * args.events)} trained), 1 thread, median of "
          f"{args.repeats} interleaved epochs; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print("| spec | jets/s (one epoch) | runs | ratio to pelican-jets |")
    print("|---|---:|---|---:|")
    for name in PRESETS:
        med = statistics.median(rates[name])
        runs = ", ".join(f"{x:.0f}" for x in rates[name])
        print(f"| {name} | {med:.0f} | {runs} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
