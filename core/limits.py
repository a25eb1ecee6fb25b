"""Memory limits: what a spec's model and a training run need, estimated before anything is
allocated, against what the machine has.

The model is built on torch's ``meta`` device (shapes only, no memory) while a dispatch mode
tracks the bytes its tensors would occupy: the build itself (parameters and the dry run on two
dummy events), one training step (forward and backward on a batch) and one evaluation chunk
(:func:`eval_chunk` events, fewer than :data:`EVAL_CHUNK` for a model with large activations). A
training run needs, per member, its parameters and optimiser state (``STATE_COPIES`` copies) and
the larger of a step and an evaluation chunk, plus the events on the device. The estimate is an
upper bound (temporaries are counted until Python frees them): about 2× the measured peak for
PELICAN's pair tensors, close to it for MLPs. A spec or run whose estimate exceeds the memory
available (``MemAvailable``, a cgroup limit, or a GPU's free memory) is a one-line
:class:`~symfw.core.errors.UsageError` naming the field to change. A model that cannot be built
on the meta device (a plugin doing data-dependent work) is not estimated.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .errors import DataError, SpecError, UsageError
from .registry import Registry, get_registry
from .spec import Spec

STATE_COPIES = 6  # weights, gradients, two AdamW moments, the best-epoch snapshot, the checkpoint's copy
EVAL_CHUNK = 16384  # events per evaluation pass at most (:meth:`symfw.core.ensemble.Ensemble.predict`)
EVAL_BYTES = 256 * 2**20  # ... and activations of one evaluation pass at most about this (:func:`eval_chunk`)
EVENT_COPIES = 3  # a generated sample, its validated copy, its tensors
PROBE_ABOVE = 1_000_000  # generators asked for more events are measured on a small sample first
PROBE_EVENTS = 1000


class _TooLarge(Exception):
    """The meta build itself overflowed (sizes beyond int64)."""


class _PeakBytes(TorchDispatchMode):
    """Bytes of the storages alive at once: a result on a new storage (not a view, not in place)
    counts until the last tensor on it is freed; ``peak`` is the largest total seen."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.refs: dict[int, list[int]] = {}  # storage -> [tensors on it, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage()._cdata for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            if key in inputs and key not in self.refs:
                continue  # a view or an in-place result of a tensor made outside: not a new allocation
            if key not in self.refs:
                self.refs[key] = [0, t.untyped_storage().nbytes()]
                self.live += self.refs[key][1]
                self.peak = max(self.peak, self.live)
            self.refs[key][0] += 1
            weakref.finalize(t, self._free, key)
        return out

    def _free(self, key: int) -> None:
        entry = self.refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.refs[key]


_CACHE: dict[tuple, Any] = {}


def _cached(key: tuple, compute):
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = compute()
    return _CACHE[key]


def _meta_model(spec: Spec, registry: Registry, dtype: torch.dtype = torch.float32):
    from .model import SymfwModel

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return SymfwModel(spec, registry).to(dtype)


def _measured(spec: Spec, registry: Registry, what: str, *args) -> Any:
    """``what`` of the spec's model, measured on the meta device (cached); None when the model
    cannot be built there; raises :class:`_TooLarge` when its sizes overflow."""

    def compute():
        try:
            if what == "build":
                with _PeakBytes() as mode:
                    model = _meta_model(spec, registry)
                return sum(p.numel() for p in model.parameters()), mode.peak
            events, train, dtype = args
            model = _meta_model(spec, registry, dtype).train(train)
            with torch.device("meta"):
                p4 = torch.zeros(events, spec.n_particles, 4, dtype=dtype)
                mask = torch.ones(events, spec.n_particles, dtype=torch.bool)
            with torch.set_grad_enabled(train), _PeakBytes() as mode:
                out = model(p4, mask)
                if train:
                    out.sum().backward()
            return mode.peak
        except RuntimeError as exc:
            if "overflow" in str(exc).lower():
                raise _TooLarge(str(exc)) from None
            return None
        except Exception:  # noqa: BLE001 - not buildable on meta: no estimate
            return None

    return _cached((what, spec.model_dump_json(), id(registry), *map(str, args)), compute)


# --------------------------------------------------------------------------- what the machine has


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes that can still be allocated on ``device``: a GPU's free memory, or the host's
    ``MemAvailable`` (or free pages), lowered to what a cgroup limit leaves."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 2**62  # unknown: nothing is refused
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 2**60:
            avail = min(avail, max(0, cap - used))
    return int(avail)


def size(n: float) -> str:
    """Bytes in binary units: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _integers(obj: Any, path: str = "") -> Iterator[tuple[str, int]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _integers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _integers(v, f"{path}[{i}]")
    elif isinstance(obj, int) and not isinstance(obj, bool):
        yield path, obj


def largest_field(spec: Spec) -> str:
    """``path = value`` of the spec's largest size (n_particles, latent_dim, a layer width, ...)."""
    fields = list(_integers(spec.model_dump(exclude={"training", "name", "description"})))
    path, value = max(fields, key=lambda f: f[1]) if fields else ("n_particles", spec.n_particles)
    return f"{path} = {value}"


# --------------------------------------------------------------------------- checks


def eval_chunk(spec: Spec, registry: Registry | None = None, dtype: torch.dtype = torch.float32) -> int:
    """Events per evaluation pass of the spec's model: :data:`EVAL_CHUNK`, or as many as keep one
    pass's activations near :data:`EVAL_BYTES` (measured on the meta device) — PELICAN's pair
    tensors at N = 64 hold ~1 MiB per jet, so 16,384 jets at once would need ~16 GiB."""
    probe = 64
    try:
        peak = _measured(spec, registry or get_registry(), "pass", probe, False, dtype)
    except _TooLarge:
        peak = None
    if not peak:
        return EVAL_CHUNK
    return int(max(probe, min(EVAL_CHUNK, EVAL_BYTES * probe // peak)))


def check_model(spec: Spec, registry: Registry | None = None) -> None:
    """Refuse a spec whose one model (its parameters and the build's dry run) cannot fit in memory;
    :func:`symfw.core.model.build_model` calls it before allocating anything."""
    registry = registry or get_registry()
    try:
        measured = _measured(spec, registry, "build")
    except _TooLarge:
        raise SpecError(f"{largest_field(spec)}: the model's tensors would hold more than 2^63 numbers") from None
    if measured is None:
        return
    params, peak = measured
    need = 4 * params + peak  # float32 weights (a parameter's storage outlives the tensor that made it) and the dry run
    avail = available_memory("cpu")
    if need > avail:
        raise SpecError(f"{largest_field(spec)}: one model of spec '{spec.name}' needs ~{size(need)} "
                        f"({params:,} parameters), more than the {size(avail)} of memory available")


def check_training(spec: Spec, *, members: int, n_train: int, n_eval: int, n_events: int,
                   device: str | torch.device = "cpu", registry: Registry | None = None,
                   dtype: torch.dtype = torch.float32, processes: int = 1, vectorized: bool = False) -> None:
    """Refuse a training run that cannot fit in the memory of ``device``: ``members`` members,
    batches of the spec's batch size (at most ``n_train`` events), evaluation chunks of at most
    ``n_eval`` events, ``n_events`` events on the device; ``processes`` ranks share the memory.
    Steps and evaluations hold one member's activations at a time unless ``vectorized``."""
    registry = registry or get_registry()
    check_model(spec, registry)
    built = _measured(spec, registry, "build")
    batch = max(1, min(spec.training.batch_size, n_train))
    passes = 1 + len(spec.penalties)  # each penalty evaluates the model again

    def activations(events: int) -> int | None:
        step = _measured(spec, registry, "pass", events, True, dtype)
        evaluation = _measured(spec, registry, "pass", max(1, min(eval_chunk(spec, registry, dtype), n_eval)), False, dtype)
        if step is None or evaluation is None:
            return None
        return (members if vectorized else 1) * max(passes * step, evaluation)

    active = activations(batch)
    if built is None or active is None:
        return
    element = torch.empty((), dtype=dtype).element_size()
    state = members * built[0] * element * STATE_COPIES
    data = n_events * (spec.n_particles * (4 * element + 1) + 3 * element)
    need = processes * (state + active + data)
    avail = available_memory(device)
    if need <= avail:
        return
    if members > 1 and processes * (state / members + active / (members if vectorized else 1) + data) <= avail:
        culprit = f"seeds = {members}"
    elif batch > 2 and processes * (state + (activations(2) or 0) + data) <= avail:
        culprit = f"training.batch_size = {spec.training.batch_size}"
    else:
        culprit = largest_field(spec)
    raise UsageError(
        f"{culprit}: training {members} member{'s' if members > 1 else ''} of spec '{spec.name}' "
        f"{f'on {processes} processes ' if processes > 1 else ''}needs ~{size(need)} (parameters and optimiser "
        f"state {size(state)}, activations {size(active)}, events {size(data)}), more than the {size(avail)} "
        f"available on {torch.device(device).type}"
    )


def check_events(n_events: int, bytes_per_event: float, source: str) -> None:
    """Refuse generating ``n_events`` events of ``bytes_per_event`` bytes each (measured on a
    sample) when ``EVENT_COPIES`` copies of them cannot fit in memory."""
    need = n_events * bytes_per_event * EVENT_COPIES
    avail = available_memory("cpu")
    if need > avail:
        raise DataError(f"--events {n_events}: {source} would need ~{size(need)} for the events "
                        f"({bytes_per_event:.0f} bytes each, {EVENT_COPIES} copies while loading), more than "
                        f"the {size(avail)} of memory available")


def event_bytes(data) -> float:
    """Bytes per event of an :class:`~symfw.core.data.EventData`'s arrays."""
    arrays = [getattr(data, k) for k in ("p4", "label", "mask", "weight", "p4_true", "target")]
    return sum(a.nbytes for a in arrays if a is not None) / max(1, len(data))


__all__ = ["available_memory", "check_events", "check_model", "check_training", "event_bytes", "largest_field",
           "size"]
