"""Generation speed of the zmumu dataset on one core, against the goal of 1 million events per second.

    python benchmarks/bench_generate.py [--events 1000000] [--repeats 5]

Pins the process to one CPU and one thread, generates once to warm up, then times ``repeats``
generations (default options: background reweighted with per-event weights) and prints the
median rate and its ratio to the goal. Resampling is timed once for information.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from symfw.plugins.zmumu import Zmumu, ZmumuOptions  # noqa: E402

GOAL = 1_000_000  # events per second


def rate(source: Zmumu, n: int, seed: int) -> float:
    start = time.perf_counter()
    data = source.generate(n, seed)
    elapsed = time.perf_counter() - start
    assert len(data) == n
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    source = Zmumu()
    rate(source, args.events, seed=0)  # warm-up: imports, allocator
    rates = [rate(source, args.events, seed=s) for s in range(1, args.repeats + 1)]
    median = statistics.median(rates)
    resample = rate(Zmumu(ZmumuOptions(reweight="resample")), args.events, seed=99)

    print(f"zmumu generation, {args.events:,} events, 1 core, {args.repeats} repeats")
    print(f"  per-event weights: median {median / 1e6:.2f} M events/s "
          f"(min {min(rates) / 1e6:.2f}, max {max(rates) / 1e6:.2f})")
    print(f"  ratio to the goal of {GOAL / 1e6:.0f} M events/s: {median / GOAL:.2f}"
          f"  ({'meets' if median >= GOAL else 'misses'} the goal)")
    print(f"  resampled background (informational): {resample / 1e6:.2f} M events/s")


if __name__ == "__main__":
    main()
