"""Jets from Pythia 8, clustered with anti-kT, measured by a parametric detector (docs/jets.md).

Each process is one class (label = its index in ``processes``)::

    top     tt̄ → (bW)(bW), W → qq̄'        jet ∋ the top and its b, q, q̄'   target: the top
    w       qq̄ → W⁺W⁻, W → qq̄'             jet ∋ the W and its q, q̄'          target: the W
    qcd     every 2 → 2 QCD process          jet ∋ an outgoing hard parton      target: that parton
    quark   qg → Z q, Z → νν̄                 jet ∋ the outgoing quark           target: the quark
    gluon   qq̄ → Z g, Z → νν̄                 jet ∋ the outgoing gluon           target: the gluon

"∋" means within ΔR < R (rapidity–azimuth) of the jet axis. Jets are anti-kT (Pythia's SlowJet
running FastJet's core, fjcore) on all visible final-state particles, with the jet pT in
``pt_range`` and |η| < ``eta_max``, at most ``jets_per_event`` (hardest first) per event. The
detector (:mod:`symfw.plugins.detector`) measures each jet's constituents; they are sorted by
measured pT and cut or padded to ``n_particles``. ``p4_true`` is each object's particle-level
truth, ``target`` the matched top/W/parton four-momentum (or the particle-level jet).

Seeds: chunk c of process p is one Pythia run seeded from (seed, p, c), so the jets do not depend
on how many workers make them. Chunks are cached at particle level, keyed by what changes them;
the detector runs after the cache, with its own seeded draws.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from symfw.core.data import EventData
from symfw.core.errors import DataError, SymfwError, UsageError
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import DatasetSource, Options
from symfw.core.io import atomic_write

from .detector import DetectorOptions, measure

Process = Literal["top", "w", "qcd", "quark", "gluon"]
PROCESS_IDS = {"top": 0, "w": 1, "qcd": 2, "quark": 3, "gluon": 4}  # seed streams: fixed, not list positions
HADRONIC_W = ["24:onMode = off", "24:onIfAny = 1 2 3 4 5"]
Z_INVISIBLE = ["WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 12 14 16"]
PYTHIA = {
    "top": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", *HADRONIC_W],
    "w": ["WeakDoubleBoson:ffbar2WW = on", *HADRONIC_W],
    "qcd": ["HardQCD:all = on"],
    "quark": ["WeakBosonAndParton:qg2gmZq = on", *Z_INVISIBLE],
    "gluon": ["WeakBosonAndParton:qqbar2gmZg = on", *Z_INVISIBLE],
}
FORMAT = 1  # bump when a cached chunk's content changes for the same key
EXTRA = "dataset 'jets' needs Pythia 8: pip install 'symfw[jets]'"


class JetsOptions(Options):
    """Options of the ``jets`` dataset (energies in GeV)."""

    processes: list[Process] = Field(["qcd", "top"], description="one class each, label = position (binary: the second is label 1, the signal)")
    n_events: int = Field(10_000, ge=2, description="jets when none is asked for (shared equally by the classes)")
    pt_range: tuple[float, float] = Field((550.0, 650.0), description="particle-level jet pT window")
    eta_max: float = Field(2.0, gt=0, description="jet |η| below this")
    radius: float | None = Field(None, gt=0, le=2, description="anti-kT R (null: 0.4 if every process is quark/gluon, else 0.8)")
    n_particles: int = Field(128, ge=1, description="constituents kept per jet (hardest measured pT first), padded with a mask")
    jets_per_event: int = Field(2, ge=1, description="at most this many jets (hardest first) from one event")
    pthat_range: tuple[float, float] | None = Field(None, description="Pythia's hard-process pT range (null: 0.85·pT_min to 1.2·pT_max)")
    ecm: float = Field(13000.0, gt=0, description="proton–proton centre-of-mass energy")
    mpi: bool = Field(True, description="multiparton interactions (the underlying event)")
    target: Literal["parton", "truth-jet"] = Field("parton", description="regression target: the matched top/W/parton, or the particle-level jet")
    detector: DetectorOptions | None = Field(default_factory=DetectorOptions, description="null: particle level")
    chunk_size: int = Field(250, ge=1, description="jets per Pythia run (part of the seed: changing it changes the jets)")
    workers: int | None = Field(None, ge=1, description="processes generating (null: every core); the jets do not depend on it")
    cache: bool = Field(True, description="reuse particle-level chunks from $SYMFW_CACHE or ~/.cache/symfw/jets")
    executor: Literal["local", "ray"] = Field("local", description="local: `workers` processes here; ray: one Ray task per chunk")
    ray_address: str | None = Field(None, description="the Ray cluster to join ('auto', 'host:6379'; null: start a local one)")

    @field_validator("processes", mode="before")
    @classmethod
    def _comma_separated(cls, value):  # --set processes=top,qcd
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value

    @field_validator("processes")
    @classmethod
    def _two_distinct(cls, value):
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError(f"need at least two distinct processes (one class each), got {value}")
        return value

    @model_validator(mode="after")
    def _check(self):
        for name in ("pt_range", "pthat_range"):
            lo, hi = getattr(self, name) or (1.0, 2.0)
            if not 0 < lo < hi:
                raise ValueError(f"{name} must be 0 < low < high, got {getattr(self, name)}")
        return self

    @property
    def jet_radius(self) -> float:
        if self.radius is not None:
            return self.radius
        return 0.4 if set(self.processes) <= {"quark", "gluon"} else 0.8

    @property
    def pthat(self) -> tuple[float, float]:
        return self.pthat_range or (0.85 * self.pt_range[0], 1.2 * self.pt_range[1])


# --------------------------------------------------------------------------- one Pythia run


def _pythia():
    try:
        import pythia8mc
    except ImportError:
        raise UsageError(EXTRA) from None
    return pythia8mc


def chunk_settings(options: JetsOptions, process: str) -> dict:
    """Everything that decides a particle-level chunk (the cache key hashes it)."""
    lo, hi = options.pthat
    return {
        "format": FORMAT,
        "pythia": [
            f"Beams:eCM = {options.ecm!r}", f"PhaseSpace:pTHatMin = {lo!r}", f"PhaseSpace:pTHatMax = {hi!r}",
            f"PartonLevel:MPI = {'on' if options.mpi else 'off'}", *PYTHIA[process],
        ],
        "process": process,
        "radius": options.jet_radius,
        "pt_range": list(options.pt_range),
        "eta_max": options.eta_max,
        "jets_per_event": options.jets_per_event,
        "chunk_size": options.chunk_size,
    }


def chunk_seeds(seed: int, process: str, chunk: int) -> tuple[int, np.random.SeedSequence]:
    """Pythia's seed (1 … 9·10⁸) and the detector's seed sequence for one chunk."""
    ss = np.random.SeedSequence(seed, spawn_key=(PROCESS_IDS[process], chunk))
    pythia_ss, detector_ss = ss.spawn(2)
    return int(pythia_ss.generate_state(1)[0]) % 900_000_000 + 1, detector_ss


def _delta_r(y1, phi1, y2, phi2):
    return math.hypot(y1 - y2, math.remainder(phi1 - phi2, 2 * math.pi))


def _candidates(event, process):
    """[(object, [particles that must lie in the jet])] from the hard process (event rows 5, 6)."""
    out = []
    for row in (5, 6):
        obj = event[event[row].iBotCopyId()] if process in ("top", "w") else event[row]
        if process == "top":
            inside = []
            for d in obj.daughterList():
                d = event[d]
                inside += [event[q] for q in event[d.iBotCopyId()].daughterList()] if d.idAbs() == 24 else [d]
        elif process == "w":
            inside = [event[q] for q in obj.daughterList()]
        elif {"qcd": obj.isParton(), "quark": 1 <= obj.idAbs() <= 6, "gluon": obj.id() == 21}[process]:
            inside = [obj]
        else:
            continue
        out.append((obj, inside))
    return out


def _four(v):
    return (v.e(), v.px(), v.py(), v.pz())


def generate_chunk(settings: dict, seed: int, n_jets: int, counter=None) -> dict:
    """The first ``n_jets`` jets of one Pythia run: flat constituents and per-jet truth."""
    p8 = _pythia()
    pythia = p8.Pythia("", False)
    for line in ["Print:quiet = on", "Random:setSeed = on", f"Random:seed = {seed}", *settings["pythia"]]:
        if not pythia.readString(line):
            raise SymfwError(f"jets: Pythia refused '{line}'")
    if not pythia.init():
        raise SymfwError(f"jets: Pythia failed to initialise {settings['process']}")
    radius, (pt_lo, pt_hi), eta_max = settings["radius"], settings["pt_range"], settings["eta_max"]
    slow = p8.SlowJet(-1, radius, pt_lo, 25.0, 2, 2)  # anti-kT (fjcore), visible final state, E-scheme
    p4, charge, pid, count, target, jet_p4, event_of = [], [], [], [], [], [], []
    events = failures = 0
    while len(count) < n_jets:
        if not pythia.next():
            failures += 1
            if failures > 1000 + events:
                raise SymfwError(f"jets: Pythia fails to generate {settings['process']} events")
            continue
        events += 1
        event = pythia.event
        if events == 1:
            with _stdout_silenced():  # fjcore prints its banner on stdout at its first clustering
                slow.analyze(event)
        else:
            slow.analyze(event)
        candidates = _candidates(event, settings["process"])
        taken = 0
        for j in range(slow.sizeJet()):
            if taken == settings["jets_per_event"] or len(count) == n_jets:
                break
            pj = slow.p(j)
            if not (pt_lo < pj.pT() < pt_hi and abs(pj.eta()) < eta_max):
                continue
            yj, phij = slow.y(j), slow.phi(j)
            match = next((k for k, (obj, inside) in enumerate(candidates)
                          if all(_delta_r(yj, phij, q.y(), q.phi()) < radius for q in [obj, *inside])), None)
            if match is None:
                continue
            obj, _ = candidates.pop(match)
            members = [event[i] for i in slow.constituents(j)]
            p4 += [_four(q) for q in members]
            charge += [q.chargeType() for q in members]
            pid += [q.id() for q in members]
            count.append(len(members))
            target.append(_four(obj))
            jet_p4.append(_four(pj))
            event_of.append(events - 1)
            taken += 1
            if counter is not None:
                with counter.get_lock():
                    counter.value += 1
    return {
        "p4": np.asarray(p4, np.float64).reshape(-1, 4),
        "charge": np.asarray(charge, np.int8),  # three times the charge
        "pid": np.asarray(pid, np.int32),
        "count": np.asarray(count, np.int64),
        "target": np.asarray(target, np.float64).reshape(-1, 4),
        "jet_p4": np.asarray(jet_p4, np.float64).reshape(-1, 4),
        "event": np.asarray(event_of, np.int64),  # the Pythia event of each jet
    }


@contextlib.contextmanager
def _stdout_silenced():
    """File descriptor 1 to /dev/null (what C++ prints there too), restored afterwards."""
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_COUNTER = None


def _init_worker(counter):
    global _COUNTER
    _COUNTER = counter


def _run_chunk(args):
    return generate_chunk(*args, counter=_COUNTER)


def _ray_chunk(task, _shared):
    return generate_chunk(*task[1])


# --------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """$SYMFW_CACHE, else $XDG_CACHE_HOME/symfw, else ~/.cache/symfw."""
    if os.environ.get("SYMFW_CACHE"):
        return Path(os.environ["SYMFW_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "symfw"


def chunk_path(settings: dict, seed: int, chunk: int) -> Path:
    key = hashlib.sha256(json.dumps({**settings, "pythia8mc": _version()}, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "jets" / f"{settings['process']}-{key}-seed{seed}" / f"chunk-{chunk:05d}.npz"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pythia8mc")
    except PackageNotFoundError:
        return "unknown"


def read_chunk(path: Path, n_jets: int) -> dict | None:
    """A cached chunk holding at least ``n_jets`` jets (its first ``n_jets``), else None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            chunk = {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError):  # absent, or unreadable: generate again
        return None
    return take(chunk, n_jets) if len(chunk.get("count", ())) >= n_jets else None


def write_chunk(path: Path, chunk: dict) -> None:
    def write(tmp: Path):
        with tmp.open("wb") as fh:
            np.savez(fh, **chunk)

    atomic_write(path, write)


def take(chunk: dict, n_jets: int) -> dict:
    """The first ``n_jets`` jets of a chunk."""
    m = int(chunk["count"][:n_jets].sum())
    return {**{k: chunk[k][:m] for k in ("p4", "charge", "pid")},
            **{k: chunk[k][:n_jets] for k in ("count", "target", "jet_p4", "event")}}


# --------------------------------------------------------------------------- the dataset


def pad(p4, p4_true, jet, n_jets, n_particles):
    """Objects of ``n_jets`` jets, hardest pT first, cut or zero-padded to ``n_particles`` with a mask."""
    pt = np.hypot(p4[:, 1], p4[:, 2])
    order = np.lexsort((-pt, jet))
    jet = jet[order]
    counts = np.bincount(jet, minlength=n_jets)
    if (counts == 0).any():
        raise DataError(f"jets: the detector left jet {int(np.argmax(counts == 0))} with no particles; "
                        "lower its thresholds")
    rank = np.arange(len(jet)) - (np.cumsum(counts) - counts)[jet]
    sel = rank < n_particles
    out = np.zeros((2, n_jets, n_particles, 4))
    mask = np.zeros((n_jets, n_particles), bool)
    out[0, jet[sel], rank[sel]] = p4[order][sel]
    out[1, jet[sel], rank[sel]] = p4_true[order][sel]
    mask[jet[sel], rank[sel]] = True
    return out[0], out[1], mask


class Jets(DatasetSource):
    """Pythia 8 jets (top, W, QCD, quark, gluon) through a parametric detector; one class per process."""

    name = "jets"
    Options = JetsOptions

    def generate(self, n_events, seed, progress=None):
        o = self.options
        n = o.n_events if n_events is None else int(n_events)
        share = [n // len(o.processes) + (i < n % len(o.processes)) for i in range(len(o.processes))]
        if min(share) < 1:
            raise DataError(f"jets: {n} jets leave a class empty; need at least {len(o.processes)}")
        _pythia()
        # chunk c of each process: (process, c, jets wanted from it)
        tasks = [(p, c, min(o.chunk_size, k - c * o.chunk_size))
                 for p, k in zip(o.processes, share) for c in range(math.ceil(k / o.chunk_size))]
        chunks = self._chunks(tasks, seed, n, progress)
        parts = []
        for (process, c, _), chunk in zip(tasks, chunks):
            parts.append(self._measure(chunk, *chunk_seeds(seed, process, c)[1:]))
        label = np.concatenate([np.full(k, i, np.int64) for i, k in enumerate(share)])
        order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(99,))).permutation(n)
        p4, p4_true, mask, target = (np.concatenate([part[i] for part in parts])[order] for i in range(4))
        return EventData(p4=p4, label=label[order], mask=mask, weight=np.ones(n), p4_true=p4_true,
                         target=target, meta=self._meta(seed, chunks))

    def _measure(self, chunk, detector_ss):
        o = self.options
        jet = np.repeat(np.arange(len(chunk["count"])), chunk["count"])
        p4 = chunk["p4"]
        if o.detector is None:
            meas, true, jet_of = p4, p4, jet
        else:
            meas, true, jet_of = measure(p4, chunk["charge"], chunk["pid"], jet, o.detector,
                                         np.random.default_rng(detector_ss))
        p4, p4_true, mask = pad(meas, true, jet_of, len(chunk["count"]), o.n_particles)
        return p4, p4_true, mask, chunk["target" if o.target == "parton" else "jet_p4"]

    def _chunks(self, tasks, seed, total, progress):
        """Every task's chunk, from the cache or generated (in parallel), in task order."""
        o = self.options
        out, todo = [None] * len(tasks), []
        for i, (process, c, k) in enumerate(tasks):
            settings = chunk_settings(o, process)
            cached = read_chunk(chunk_path(settings, seed, c), k) if o.cache else None
            if cached is None:
                todo.append((i, (settings, chunk_seeds(seed, process, c)[0], k)))
            out[i] = cached
        done = sum(t[2] for t, chunk in zip(tasks, out) if chunk is not None)
        if progress is not None:
            progress(done, total)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(o.workers or cores, len(todo))
        # fork: the children only run Pythia, and spawn would re-run a user's unguarded script
        ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
        counter = ctx.Value("q", 0)

        def finished(i, chunk):
            out[i] = chunk
            if o.cache:
                process, c, _ = tasks[i]
                write_chunk(chunk_path(chunk_settings(o, process), seed, c), chunk)

        if o.executor == "ray" and todo:
            return self._on_ray(todo, out, finished, done, total, progress)
        if workers <= 1:
            for i, args in todo:
                finished(i, generate_chunk(*args, counter=counter))
                if progress is not None:
                    progress(done + counter.value, total)
            return out
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(counter,)) as pool:
            pending = {pool.submit(_run_chunk, args): i for i, args in todo}
            try:
                while pending:
                    ready, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in ready:
                        finished(pending.pop(future), future.result())
                    if progress is not None:
                        progress(done + counter.value, total)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return out

    def _on_ray(self, todo, out, finished, done, total, progress):
        """One Ray task per chunk (symfw's RayExecutor: joins ``ray_address``, retries lost workers)."""
        from symfw.core.executors import RayExecutor

        made = [done]

        def on_done(task, chunk):
            finished(task[0], chunk)
            made[0] += len(chunk["count"])
            if progress is not None:
                progress(made[0], total)

        failures = RayExecutor(address=self.options.ray_address).map(_ray_chunk, todo, None, on_done)
        if failures:
            raise SymfwError(f"jets: {len(failures)} of {len(todo)} chunks failed on Ray; first: {failures[0].error}")
        return out

    def _meta(self, seed, chunks):
        o = self.options
        meta = {"source": "jets", "seed": int(seed), "processes": ",".join(o.processes),
                "radius": o.jet_radius, "pythia_events": int(sum(int(c["event"][-1]) + 1 for c in chunks))}
        skip = {"n_events", "processes", "radius", "detector", "workers", "cache", "executor", "ray_address"}
        values = {**o.model_dump(exclude=skip), "pthat_range": o.pthat}
        if o.detector is None:
            values["detector"] = None
        else:
            values.update({f"detector_{k}": v for k, v in o.detector.model_dump().items()})
        for key, value in values.items():  # as scalars a file keeps: null as "none", pairs as "a-b"
            meta[key] = "none" if value is None else (
                "-".join(f"{v:g}" for v in value) if isinstance(value, (list, tuple)) else value)
        return meta


@hookimpl
def register_datasets(register):
    register(Jets)
