"""Peak memory and time of one streamed training epoch on a file of 1M jets × 128 constituents.

    python benchmarks/bench_streaming.py [--jets 1000000] [--particles 128] [--dir /tmp]
        [--chunk-events 65536] [--threads 2] [--loaded] [--keep] [--no-write]

Writes random valid jets (massless constituents, 20–128 per jet, signal with harder and more
constituents than background) in symfw's HDF5 layout, chunk by chunk (the file is ~2.2 GB for
1M × 128: float32 four-vectors, a bool mask, int64 labels), then runs

    symfw train SPEC --data FILE --stream --chunk-events C --epochs 1 --threads T --json

in a child process with a small PFN (Φ 16;16 → latent 16, head 16; batch 256) and reports the
child's peak resident memory (``wait4``'s ``ru_maxrss``) and wall time, the time of the epoch and
of its evaluation (``train_time_s``), and the rest (checking the file once, the test pass, writing
the run). With ``--loaded`` the same run with the file loaded (``--no-stream``) follows, for the
ratio of the two peaks. The file is deleted afterwards unless ``--keep``. The load average is
printed: the development machine is shared. The section lands in docs/data.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from _docs import publish

import symfw
from symfw.core.training import with_training_overrides

DOC = Path(__file__).resolve().parent.parent / "docs" / "data.md"
START, END = "<!-- bench_streaming:start -->", "<!-- bench_streaming:end -->"
WRITE_CHUNK = 50_000


def write_jets(path: Path, n: int, n_part: int, seed: int = 0) -> None:
    """Random valid jets in symfw's layout, written ``WRITE_CHUNK`` at a time."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        p4 = f.create_dataset("p4", (n, n_part, 4), np.float32)
        mask = f.create_dataset("mask", (n, n_part), bool)
        label = f.create_dataset("label", (n,), np.int64)
        for start in range(0, n, WRITE_CHUNK):
            b = min(WRITE_CHUNK, n - start)
            y = (np.arange(start, start + b) % 2).astype(np.int64)
            counts = rng.integers(20, n_part + 1, b) - np.where(y == 1, 0, rng.integers(0, 20, b))
            counts = np.clip(counts, 1, n_part)
            scale = np.where(y == 1, 12.0, 8.0)[:, None]
            pt = -np.sort(-rng.exponential(scale, (b, n_part)) - 0.5, axis=1)
            eta = rng.normal(0, 1.5, (b, 1)) + rng.normal(0, 0.3, (b, n_part))
            phi = rng.uniform(-np.pi, np.pi, (b, 1)) + rng.normal(0, 0.3, (b, n_part))
            real = np.arange(n_part)[None] < counts[:, None]
            jet = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], -1)
            p4[start : start + b] = np.where(real[..., None], jet, 0.0).astype(np.float32)
            mask[start : start + b] = real
            label[start : start + b] = y


def small_pfn(path: Path) -> None:
    spec = symfw.load_spec("pfn")
    spec = spec.model_copy(update={
        "name": "bench-pfn", "n_particles": 128,
        "general": spec.general.model_copy(update={
            "encoder": spec.general.encoder.model_copy(update={"options": {"phi": [16, 16]}})}),
        "head": spec.head.model_copy(update={"hidden": [16]})})
    symfw.write_spec(with_training_overrides(spec, epochs=1, batch_size=256), path)


def run(args: list[str]) -> tuple[dict, float, int]:
    """The child's JSON results, wall seconds and peak resident bytes."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "symfw", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = child.stdout.read()
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"symfw {' '.join(args)} failed:\n{err.decode()[-2000:]}")
    return json.loads(out), seconds, usage.ru_maxrss * 1024


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=1_000_000)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--chunk-events", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loaded", action="store_true", help="also train with the file loaded, for the ratio")
    parser.add_argument("--keep", action="store_true", help="keep the data file")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs/data.md")
    args = parser.parse_args()

    load = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="symfw-stream-", dir=args.dir))
    data, spec = folder / f"jets-{args.jets}x{args.particles}.h5", folder / "bench-pfn.toml"
    try:
        t = time.perf_counter()
        write_jets(data, args.jets, args.particles)
        written = time.perf_counter() - t
        size = data.stat().st_size
        print(f"wrote {data}: {size / 1e9:.2f} GB in {written:.0f} s")
        small_pfn(spec)
        common = ["train", str(spec), "--data", str(data), "--epochs", "1", "--threads", str(args.threads),
                  "--json", "-q", "--seed", "0"]
        rows = []
        variants = [("streamed", ["--stream", "--chunk-events", str(args.chunk_events)])]
        if args.loaded:
            variants.append(("loaded", ["--no-stream"]))
        for name, flags in variants:
            res, wall, rss = run([*common, *flags, "--out", str(folder / f"run-{name}")])
            f = res["fractions"][0]
            rows.append((name, rss, wall, f["train_time_s"], f["n_train"], f["summary"]["final_test"]["auc"]["mean"]))
            print(f"{name}: peak RSS {gib(rss)}, wall {wall:.0f} s, epoch + validation {f['train_time_s']:.0f} s, "
                  f"test AUC {rows[-1][-1]:.4f}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    after = os.getloadavg()

    lines = [
        f"Measured {datetime.date.today().isoformat()} by `python benchmarks/bench_streaming.py"
        f"{' --loaded' if args.loaded else ''}` on {platform.machine()}, {os.cpu_count()} cores (shared; load average "
        f"{load[0]:.1f} before, {after[0]:.1f} after), torch {__import__('torch').__version__}, "
        f"{args.threads} threads: {args.jets:,} random valid jets × {args.particles} constituents in symfw's HDF5 "
        f"layout ({size / 1e9:.2f} GB on disk, written in {written:.0f} s), one epoch of a small PFN (Φ 16;16, "
        f"head 16, batch 256) on the {rows[0][4]:,} training jets, `--chunk-events {args.chunk_events}`:",
        "",
        "| file | peak RSS | wall time | epoch + validation | the rest (check, test pass, run files) | test AUC |",
        "|---|---|---|---|---|---|",
    ]
    for name, rss, wall, train, _, auc in rows:
        lines.append(f"| {name} | {gib(rss)} | {wall:.0f} s | {train:.0f} s | {wall - train:.0f} s | {auc:.4f} |")
    goal = 4 * 2**30
    lines.append("")
    lines.append(f"Peak RSS of the streamed run / the 4 GiB goal: {rows[0][1] / goal:.2f}"
                 + (f"; streamed / loaded: {rows[0][1] / rows[1][1]:.2f}" if len(rows) > 1 else "") + ".")
    publish("\n".join(lines), DOC, START, END, "# Data\n", write=not args.no_write)


if __name__ == "__main__":
    main()
