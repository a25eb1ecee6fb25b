"""Training: one epoch loop for every task and every way of running it.

Defaults are the hybrid paper's (AdamW with weight decay 0.01, batch 128, 100 epochs), read
from the spec's ``[training]`` table; the loss, metrics and primary metric come from the
spec's task (:class:`~symfw.core.interfaces.Task`: ``binary`` by default). Events stay as
tensors on the device; each member draws its own batch order (a seeded permutation per epoch)
and batches are gathered by index.

**One loop, several steppers.** :func:`train_ensemble` is the only epoch loop. What varies is
a :class:`Stepper`, which turns one batch per member into losses and gradients:
:class:`VectorizedStepper` (``torch.func.vmap`` over the members), :class:`SequentialStepper`
(one member after the other) and :class:`~symfw.core.distributed.DataParallelStepper` (each
rank a shard of every batch, gradients summed over ranks). The orchestration that turns specs,
fractions and seeds into such trainings is :func:`symfw.core.executors.train_runs`, used by
``symfw train`` (:func:`run_training`) and ``symfw compare`` alike.

After every epoch each member is evaluated on the **validation** split; the best epoch is the
one with the best validation value of the task's primary metric. The **test** split is
evaluated once, at the end, for the final model and for the best-validation epoch; it is
never used to select anything.

Reproducibility: member m of base seed b initialises with ``member_seeds(b, M)[m]`` and its
epoch-e batch order comes from a generator seeded by (member seed, e); the global torch RNG
(penalties, augmentation) is reseeded at the start of every epoch. A run resumed from its last
checkpoint (:class:`~symfw.core.checkpoint.Checkpoint`) ends with exactly the metrics of an
uninterrupted one (CPU, same threads).

The Python API::

    from symfw.core.training import RunSettings, run_training
    results = run_training(spec, data, RunSettings(data="zmumu", seeds=3), out="runs/hybrid")
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.adamw import adamw as functional_adamw

from . import metrics as M
from .checkpoint import Checkpoint
from .data import EventData, Split, make_split
from .ensemble import Ensemble, PenaltyTerm
from .errors import DataError, UsageError
from .interfaces import Batch, Task
from .model import SymfwModel
from .registry import get_registry
from .runs import FractionDir
from .spec import PenaltyRef, Spec, with_training_overrides  # noqa: F401 - re-exported

EpochCallback = Callable[[dict[str, Any]], None]
WEIGHT_CURVE_BINS = 20
EXTRAPOLATION_BINS = 4  # on each side of the cut
AT_EPOCHS = (1, 5, 10, 25, 50, 100)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RunSettings:
    """What determines a run's results besides the spec (recorded in ``run.json``).

    ``seed`` is the base seed: it seeds the data generator, the split (shared by every member
    and every spec) and, through :func:`member_seeds`, each member's initialisation and batch
    order. ``train_pt_max`` restricts training and validation to events whose breaking
    variable — that of the context ``cut_context``, leading-particle pT by default — is below
    it (the extrapolation protocol); the test split keeps every event. ``matched_init``: the
    compared specs start as one function (:mod:`symfw.core.matching`; ``compare --matched-init``). ``trial``: a
    seed replica — members initialise and shuffle from ``member_seeds(seed, seeds, trial)`` while the data and the
    split stay those of ``seed`` (``compare --lam-grid`` gives specs without a penalty such replicas). ``compile``: run the
    training step through ``torch.compile`` (True), eagerly (False), or where that pays (None,
    :func:`compile_by_default`); compiled float32 steps round differently in the last bits.
    """

    data: str = "zmumu"
    events: int | None = None
    seed: int = 0
    seeds: int = 1
    fractions: tuple[float, ...] = (1.0,)
    train_pt_max: float | None = None
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    cut_context: str = "leading-pt"
    matched_init: bool = False
    compile: bool | None = None
    trial: int = 0

    def __post_init__(self):
        if self.seeds < 1:
            raise UsageError(f"seeds must be >= 1, got {self.seeds}")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"seed must be in [0, 2^32), got {self.seed}")
        if not self.fractions:
            raise UsageError("fractions: give at least one fraction")
        for f in self.fractions:
            if not (0 < f <= 1) or not math.isfinite(f):
                raise UsageError(f"fractions: each fraction must be in (0, 1], got {f:g}")
        if len(set(self.fractions)) != len(self.fractions):
            raise UsageError("fractions: fractions must be distinct")
        if self.events is not None and self.events < 1:
            raise UsageError(f"events must be >= 1, got {self.events}")
        if self.train_pt_max is not None and not (self.train_pt_max > 0 and math.isfinite(self.train_pt_max)):
            raise UsageError(f"train_pt_max must be a positive number of GeV, got {self.train_pt_max:g}")
        if not (isinstance(self.trial, int) and 0 <= self.trial < 2**16):
            raise UsageError(f"trial must be an integer in [0, 65536), got {self.trial!r}")
        if self.compile not in (None, True, False):
            raise UsageError(f"compile must be true, false or unset (where it pays), got {self.compile!r}")

    @classmethod
    def from_record(cls, record: dict[str, Any], origin: str = "run.json") -> "RunSettings":
        """The settings a run recorded (:meth:`record`); a record of the wrong shape is a UsageError."""
        try:
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in cls.__dataclass_fields__}
            return cls(**values)
        except (TypeError, ValueError, UsageError) as exc:
            raise UsageError(f"{origin}: the recorded settings are not valid ({exc})") from None

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["fractions"] = list(self.fractions)
        out["split"] = list(self.split)
        if self.trial == 0:  # the seeds every run has had: records (and resumed runs) of before replicas match
            del out["trial"]
        return out


def derive_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)


def penalty_seed(seeds: Sequence[int], epoch: int) -> int:
    """Seed of the random draws (penalties, augmentation) in ``epoch`` for the members ``seeds``
    trained together (members trained as separate tasks draw independently)."""
    return derive_seed(*seeds, 2, epoch)


def member_seeds(base_seed: int, n: int, trial: int = 0) -> list[int]:
    """Member seeds for base seed ``base_seed``; member m's seed does not depend on n. ``trial`` > 0
    draws another set of member seeds (a seed replica, :class:`RunSettings`), independent of trial 0's."""
    return [derive_seed(base_seed, 1, m) if trial == 0 else derive_seed(base_seed, 1, m, 3, trial) for m in range(n)]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:N``) or ``auto`` (cuda when available)."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {name}: CUDA is not available on this machine (use cpu or auto)")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UsageError(f"device {name}: not a valid CUDA device name") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise UsageError(f"device must be cpu, cuda or auto, got '{name}'")


def make_task(spec: Spec, registry=None) -> Task:
    """The spec's task, constructed with its options."""
    cls = (registry or get_registry()).get("task", spec.task.name)
    return cls(cls.Options.model_validate(spec.task.options))


def context_variable(name: str, data: EventData, registry=None) -> np.ndarray:
    """The breaking variable of context ``name`` (e.g. leading pT, GeV) of every event."""
    cls = (registry or get_registry()).get("context", name)
    context = cls(cls.Options())
    out = []
    with torch.no_grad():
        for chunk in data.chunks(names=("p4", "mask")):
            t = chunk.tensors(dtype=torch.float64)
            out.append(context.variable(t["p4"], t["mask"]).numpy())
    return np.concatenate(out)


def restrict(split: Split, values: np.ndarray, cut: float, labels: np.ndarray) -> Split:
    """Training and validation events with ``values`` below ``cut``; the test split keeps every event."""
    train, val = split.train[values[split.train] < cut], split.val[values[split.val] < cut]
    for name, part in (("training", train), ("validation", val)):
        if len(np.unique(labels[part])) < 2:
            raise DataError(
                f"train_pt_max {cut:g}: the {name} split below the cut has "
                f"{'no events' if len(part) == 0 else 'only one class'}; raise the cut or use more events"
            )
    return Split(train, val, split.test, split.seed, split.fractions, split.fraction)


def prepare_split(data: EventData, settings: RunSettings, registry=None) -> Split:
    """The seeded split of a run, restricted below ``train_pt_max`` when set."""
    split = make_split(data.label, settings.seed, settings.split)
    if settings.train_pt_max is not None:
        values = context_variable(settings.cut_context, data, registry)
        split = restrict(split, values, settings.train_pt_max, data.label)
    return split


def check_data_fits(spec: Spec, data: EventData, registry=None) -> None:
    """The spec's task accepts the data, and one untrained pass of its model on two events works:
    a mismatch is a DataError before anything is written. Events with more particle slots than
    the spec's ``n_particles`` are cut to the first ones by the model (a warning says so)."""
    from .model import build_model

    make_task(spec, registry).targets(data)
    if data.n_particles > spec.n_particles:
        warnings.warn(f"spec '{spec.name}' sees the first {spec.n_particles} of the {data.n_particles} particle "
                      f"slots of these events (its n_particles)", stacklevel=2)
    with torch.random.fork_rng(devices=[]):
        model = build_model(spec, registry).eval()
    t = data.subset(np.arange(min(2, len(data)))).tensors()
    try:
        with torch.no_grad():
            model(t["p4"], t["mask"])
    except Exception as exc:  # noqa: BLE001 - any failure here is a mismatch of model and data
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"spec '{spec.name}' (n_particles = {spec.n_particles}) cannot take these events with "
            f"{data.n_particles} particle slots: {detail}"
        ) from None


def penalty_terms(spec: Spec, group, registry=None) -> list[tuple[PenaltyRef, Any]]:
    """The spec's penalties, constructed as ``Penalty(options, group=model.group)``."""
    registry = registry or get_registry()
    out = []
    for ref in spec.penalties:
        cls = registry.get("penalty", ref.name)
        out.append((ref, cls(cls.Options.model_validate(ref.options), group=group)))
    return out


def lr_at(training, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch``: the spec's, or cosine-annealed from it to 0."""
    if training.schedule == "cosine":
        return training.lr * 0.5 * (1 + math.cos(math.pi * epoch / training.epochs))
    return training.lr


def lam_at(ref: PenaltyRef, epoch: int) -> float:
    """λ in (0-based) epoch ``epoch``: linear ramp from 0 over ``warmup_epochs``, then λ."""
    if ref.warmup_epochs <= 0:
        return float(ref.lam)
    return float(ref.lam) * min(1.0, epoch / ref.warmup_epochs)


# --------------------------------------------------------------------------- events on the device


@dataclass
class Tensors:
    """The events as training sees them: targets and weights of every event on the device, and
    the four-vectors and masks — all on the device (``p4``, ``mask``) for events in memory, or
    read from the file window by window for streamed events (``p4`` and ``mask`` None).

    Either way :meth:`batches` serves the same batches (the rows of ``order`` in ``steps``) and
    :meth:`chunks` the same evaluation chunks of :data:`~symfw.core.limits.EVAL_CHUNK` events,
    with the same numbers, so a streamed file trains exactly as a loaded one.
    """

    p4: torch.Tensor | None
    mask: torch.Tensor | None
    target: torch.Tensor
    weight: torch.Tensor
    target_np: np.ndarray
    weight_np: np.ndarray
    data: Any  # EventData, or StreamedEvents
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_data(cls, data, task: Task, device, dtype: torch.dtype = torch.float32) -> "Tensors":
        device = torch.device(device)
        target = task.targets(data)
        tdtype = torch.long if target.dtype.kind in "iu" else dtype
        weight = torch.as_tensor(data.weight, dtype=dtype, device=device)
        p4 = mask = None
        if data.in_memory:
            t = data.tensors(device, dtype=dtype)
            p4, mask, weight = t["p4"], t["mask"], t["weight"]
        return cls(p4, mask, torch.as_tensor(target, dtype=tdtype, device=device), weight,
                   target, data.weight.astype(np.float64), data, dtype, device)

    @property
    def streamed(self) -> bool:
        return self.p4 is None

    def _read(self, events: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Four-vectors and masks of ``events`` (any order; best sorted and unique) read from the file, on the device."""
        got = self.data.read_rows(events)
        return (torch.from_numpy(got["p4"]).to(self.device, self.dtype),
                torch.from_numpy(got["mask"]).to(self.device))

    def batch(self, idx: torch.Tensor) -> Batch:
        """The batch of events ``idx`` (M, B)."""
        if not self.streamed:
            return Batch(self.p4[idx], self.mask[idx], self.target[idx], self.weight[idx])
        events, inverse = np.unique(idx.cpu().numpy().reshape(-1), return_inverse=True)
        p4, mask = self._read(events)
        local = torch.as_tensor(inverse.reshape(idx.shape), device=self.device)
        return Batch(p4[local], mask[local], self.target[idx], self.weight[idx])

    def windows(self, steps: Sequence[tuple[int, int]], members: int) -> list[list[tuple[int, int]]]:
        """``steps`` in consecutive groups whose events (``members`` rows each) fit in the
        streamed data's ``chunk_events`` (at least one step each)."""
        out: list[list[tuple[int, int]]] = []
        for step in steps:
            if out and members * (step[1] - out[-1][0][0]) <= self.data.chunk_events:
                out[-1].append(step)
            else:
                out.append([step])
        return out

    def _window(self, order: np.ndarray, window: list[tuple[int, int]]):
        lo, hi = window[0][0], window[-1][1]
        events, inverse = np.unique(order[:, lo:hi], return_inverse=True)
        p4, mask = self._read(events)
        return p4, mask, torch.as_tensor(inverse.reshape(order.shape[0], hi - lo), device=self.device)

    def batches(self, order: torch.Tensor, steps: Sequence[tuple[int, int]]):
        """The batches ``order[:, start:stop]`` of each step. Streamed: each window of upcoming
        batches is read at once (its events sorted, in one pass over the file), the next one
        while this one trains."""
        if not self.streamed:
            for start, stop in steps:
                yield self.batch(order[:, start:stop])
            return
        from concurrent.futures import ThreadPoolExecutor

        order_np = order.cpu().numpy()
        windows = self.windows(steps, order.shape[0])
        with ThreadPoolExecutor(1, thread_name_prefix="symfw-read") as pool:
            pending = pool.submit(self._window, order_np, windows[0]) if windows else None
            for k, window in enumerate(windows):
                p4, mask, inverse = pending.result()
                if k + 1 < len(windows):
                    pending = pool.submit(self._window, order_np, windows[k + 1])
                lo = window[0][0]
                for start, stop in window:
                    local, idx = inverse[:, start - lo : stop - lo], order[:, start:stop]
                    yield Batch(p4[local], mask[local], self.target[idx], self.weight[idx])

    def chunks(self, index: np.ndarray):
        """(p4, mask) of the events ``index`` on the device, :data:`~symfw.core.limits.EVAL_CHUNK`
        at a time (streamed: read a whole number of such chunks at once, about ``chunk_events``)."""
        from .limits import EVAL_CHUNK

        index = np.asarray(index, dtype=np.int64)
        if not self.streamed:
            for start in range(0, len(index), EVAL_CHUNK):
                idx = torch.as_tensor(index[start : start + EVAL_CHUNK], device=self.device)
                yield self.p4[idx], self.mask[idx]
            return
        group = EVAL_CHUNK * max(1, self.data.chunk_events // EVAL_CHUNK)
        for start in range(0, len(index), group):
            p4, mask = self._read(index[start : start + group])
            for s in range(0, len(p4), EVAL_CHUNK):
                yield p4[s : s + EVAL_CHUNK], mask[s : s + EVAL_CHUNK]

    def predict(self, ens: Ensemble, index: np.ndarray, state=None) -> torch.Tensor:
        """Outputs (M, n[, K]) of every member on the events ``index``, chunk by chunk."""
        return torch.cat([ens.predict(p4, mask, state=state) for p4, mask in self.chunks(index)], dim=1)


@dataclass
class EnsembleJob:
    """One ensemble of ``spec`` on one split (one training fraction)."""

    spec: Spec
    split: Split
    seeds: list[int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    vectorize: str = "auto"  # auto | yes | no
    train_pt_max: float | None = None
    registry: Any = None
    cut_context: str = "leading-pt"
    matched: Any = None  # a MatchedInit (symfw.core.matching): start as the compared models' common function
    compile: bool | None = None  # RunSettings.compile


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch; a last batch of one event is dropped (batch norm needs 2)."""
    out = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(out) > 1 and out[-1][1] - out[-1][0] < 2:
        out.pop()
    return out


def adamw(params: Sequence[torch.Tensor], lr: float, weight_decay: float,
          layout: tuple[Sequence[torch.Size], int] | None = None) -> "FlatAdamW":
    """AdamW over ``params`` (the ensemble's :meth:`~symfw.core.ensemble.Ensemble.parameters`,
    its state laid out as ``layout`` = :meth:`~symfw.core.ensemble.Ensemble.parameter_layout`):
    :class:`FlatAdamW`."""
    shapes, per_entry = layout if layout is not None else (None, 1)
    return FlatAdamW(params, lr=lr, weight_decay=weight_decay, layout=shapes, per_entry=per_entry)


def _torch_adamw(params: Sequence[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """torch's AdamW, with the fused kernel where the device supports it (same update, fewer passes)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _memory_order(t: torch.Tensor) -> list[int] | None:
    """The dims of ``t`` from outermost to innermost in memory (``t.permute(order)`` is
    contiguous), or None when ``t`` does not cover its memory densely."""
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), -t.shape[d]))
    return order if t.permute(order).is_contiguous() else None


HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")  # of a saved AdamW state


class FlatAdamW:
    """AdamW on one flat tensor holding every parameter: one fused update per step instead of one
    per parameter tensor, through torch's functional AdamW (the arithmetic of
    ``torch.optim.AdamW``, element by element, without its per-step bookkeeping).

    The parameters become views of the flat tensor (their identity, shapes, strides and values
    are kept), so the update reaches them. Whether to step the flat tensor is decided at the
    first step, before any state exists: when a parameter has no gradient then (unused by the
    loss), or the parameters differ in dtype or device, torch's ``AdamW`` steps them one by one,
    skipping parameters without a gradient as torch does. Stepping the flat tensor, the
    gradients too are views of one flat gradient, which autograd accumulates into in place and
    :meth:`zero_grad` zeroes in one pass (leaving zeros, not None, whatever ``set_to_none``
    says), so nothing is gathered each step; a gradient put in a view's place (data-parallel
    averaging) is gathered that step, and the views come back at the next :meth:`zero_grad`.
    ``state_dict`` has the per-tensor layout of ``torch.optim.AdamW`` either way, with one entry
    per ``per_entry`` consecutive parameters (an ensemble's members of one parameter), its
    tensors stacked and shaped as ``layout`` says (the parameters' shapes by default), so
    checkpoints hold torch's optimiser state of the stacked parameters (and
    :meth:`~symfw.core.checkpoint.Checkpoint.merge` stacks it by member).
    """

    def __init__(self, params: Sequence[torch.Tensor], lr: float, weight_decay: float,
                 layout: Sequence[torch.Size] | None = None, per_entry: int = 1):
        self.params = list(params)
        self.per_entry = per_entry
        if len(self.params) % per_entry:
            raise ValueError(f"{len(self.params)} parameters do not make entries of {per_entry}")
        shapes = [torch.Size((per_entry, *p.shape)) if per_entry > 1 else p.shape for p in self.params[::per_entry]]
        self.layout = [torch.Size(s) for s in layout] if layout is not None else shapes
        reference = _torch_adamw([torch.zeros(1, device=self.params[0].device)], lr, weight_decay)
        self.group = {k: v for k, v in reference.param_groups[0].items() if k != "params"}  # torch's defaults
        self.inner: torch.optim.AdamW | None = None  # per-tensor mode: torch's optimiser
        self.state: dict[str, torch.Tensor] | None = None  # flat mode: step, exp_avg, exp_avg_sq
        self.pending: dict[str, Any] | None = None  # a state loaded before the first step
        self.flat: torch.Tensor | None = None
        self.flat_grad: torch.Tensor | None = None  # flat mode: every gradient, in the layout of ``flat``
        self.grads: list[torch.Tensor] | None = None  # flat mode: the gradients, views of ``flat_grad``
        first = self.params[0]
        self.orders = [_memory_order(p) for p in self.params]  # each parameter's dims, outermost first
        self.identity = [o == list(range(len(o))) if o is not None else False for o in self.orders]
        if all(p.dtype == first.dtype and p.device == first.device for p in self.params) and None not in self.orders:
            with torch.no_grad():
                self.flat = torch.cat([self._flat(p, i) for i, p in enumerate(self.params)])
                for i, p in enumerate(self.params):  # a view of the flat tensor with p's own strides
                    p.data = self._piece(self.flat, i)
        self.flat_steps = False  # whether the flat tensor is what is stepped (decided at the first step)

    def _flat(self, t: torch.Tensor, i: int) -> torch.Tensor:
        """``t`` (parameter i's shape) as 1-D in parameter i's memory order (a view when the layouts agree)."""
        return t.reshape(-1) if self.identity[i] else t.permute(self.orders[i]).reshape(-1)

    def _like(self, t: torch.Tensor, i: int) -> torch.Tensor:
        """A copy of ``t`` (parameter i's shape) with parameter i's strides."""
        p = self.params[i]
        return torch.empty_strided(p.shape, p.stride(), dtype=t.dtype, device=p.device).copy_(t)

    def _piece(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        """Parameter i's part of a flat tensor, shaped and strided as parameter i."""
        p, order = self.params[i], self.orders[i]
        offset = sum(q.numel() for q in self.params[:i])
        chunk = flat[offset : offset + p.numel()].view([p.shape[d] for d in order])
        return chunk.permute([order.index(d) for d in range(p.dim())])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """torch's optimiser interface to the hyperparameters (the schedule sets ``lr`` each epoch)."""
        return [self.group] if self.inner is None else self.inner.param_groups

    def _start(self) -> None:
        lr = self.group["lr"]  # as set for this epoch; a loaded state must not bring back the saved one
        per = self.pending["state"] if self.pending is not None else {}
        self.flat_steps = (
            self.flat is not None
            and all(p.grad is not None for p in self.params)
            and (not per or len({float(s["step"]) for s in per.values()}) == 1)
        )
        if self.flat_steps:
            self.state = self._fresh_state()
            self.flat_grad = torch.cat([self._flat(p.grad, i) for i, p in enumerate(self.params)])
            self.grads = [self._piece(self.flat_grad, i) for i in range(len(self.params))]
            for p, g in zip(self.params, self.grads):
                p.grad = g
        else:
            self.inner = _torch_adamw(self.params, self.group["lr"], self.group["weight_decay"])
        if self.pending is not None:
            self._load(self.pending)
            self.pending = None
        for group in self.param_groups:
            group["lr"] = lr

    def _fresh_state(self) -> dict[str, torch.Tensor]:
        fused = self.group.get("fused") or self.group.get("capturable")
        step = torch.zeros((), dtype=torch.float32, device=self.flat.device if fused else "cpu")
        return {"step": step, "exp_avg": torch.zeros_like(self.flat), "exp_avg_sq": torch.zeros_like(self.flat)}

    @torch.no_grad()
    def step(self) -> None:
        if self.inner is None and self.state is None:
            self._start()
        if not self.flat_steps:
            self.inner.step()
            return
        if all(p.grad is g for p, g in zip(self.params, self.grads)):
            grad = self.flat_grad
        else:
            grad = torch.cat([self._flat(p.grad if p.grad is not None else torch.zeros_like(p), i)
                              for i, p in enumerate(self.params)])
        g, st = self.group, self.state
        functional_adamw(
            [self.flat], [grad], [st["exp_avg"]], [st["exp_avg_sq"]], [], [st["step"]],
            foreach=g.get("foreach"), capturable=bool(g.get("capturable")), differentiable=False, fused=g.get("fused"),
            amsgrad=g["amsgrad"], beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"],
            weight_decay=g["weight_decay"], eps=g["eps"], maximize=g["maximize"],
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """No gradients (None), or, stepping the flat tensor, the flat gradient zeroed in place."""
        if self.grads is None:
            for p in self.params:
                p.grad = None
            return
        self.flat_grad.zero_()
        for p, g in zip(self.params, self.grads):
            p.grad = g

    # -- state: torch.optim.AdamW's per-tensor layout ----------------------------------------------
    def _entry(self, parts: Sequence[torch.Tensor], i: int) -> torch.Tensor:
        """Entry i of the state from its parameters' tensors (stacked, shaped as the layout)."""
        return (torch.stack(list(parts)) if self.per_entry > 1 else parts[0]).reshape(self.layout[i])

    def _parts(self, entry: torch.Tensor, i: int) -> list[torch.Tensor]:
        """Entry i's tensor split into its parameters' tensors (each shaped as its parameter)."""
        members = self.params[i * self.per_entry : (i + 1) * self.per_entry]
        stacked = entry.reshape(len(members), *members[0].shape)
        return [stacked[j] for j in range(len(members))]

    def state_dict(self) -> dict[str, Any]:
        group = {**(self.group if self.inner is None else self.inner.param_groups[0]),
                 "params": list(range(len(self.layout)))}
        if self.inner is None and self.state is None:
            return self.pending if self.pending is not None else {"state": {}, "param_groups": [group]}
        n = self.per_entry
        if not self.flat_steps:
            state = self.inner.state_dict()["state"]
            complete = [i for i in range(len(self.layout)) if all(i * n + j in state for j in range(n))]
            per = {i: {k: self._entry([state[i * n + j][k] for j in range(n)], i).contiguous() if v.dim() else v
                       for k, v in state[i * n].items()} for i in complete}  # never stepped: no entry, as in torch
            return {"state": per, "param_groups": [group]}
        contiguous = lambda t: t.clone(memory_format=torch.contiguous_format)  # noqa: E731 - a snapshot, not views
        per = {i: {k: contiguous(self._entry([self._piece(v, i * n + j) for j in range(n)], i)) if v.dim()
                   else v.clone() for k, v in self.state.items()} for i in range(len(self.layout))}
        return {"state": per, "param_groups": [group]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.inner is None and self.state is None:  # applied at the first step, once the mode is known
            self.pending = {"state": {i: {k: v.clone() for k, v in st.items()} for i, st in state["state"].items()},
                            "param_groups": [dict(g) for g in state["param_groups"]]}
        else:
            self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        per, n = state["state"], self.per_entry
        if not self.flat_steps:
            tensors = {}
            for i, st in per.items():  # each state tensor laid out as its parameter (torch's kernels assume it)
                split = {k: [self._like(part, i * n + j) for j, part in enumerate(self._parts(v, i))] if v.dim()
                         else [v.clone() for _ in range(n)] for k, v in st.items()}
                tensors.update({i * n + j: {k: parts[j] for k, parts in split.items()} for j in range(n)})
            group = {**state["param_groups"][0], "params": list(range(len(self.params)))}
            self.inner.load_state_dict({"state": tensors, "param_groups": [group]})
            return
        self.group.update({k: v for k, v in state["param_groups"][0].items() if k in HYPERPARAMETERS})
        if not per:
            return
        fresh = self._fresh_state()
        self.state = {
            k: v.to(fresh[k]) if k == "step"
            else torch.cat([self._flat(part, i * n + j) for i in range(len(self.layout))
                            for j, part in enumerate(self._parts(per[i][k], i))]).to(self.flat)
            for k, v in per[0].items()
        }


def batch_order(train_idx: torch.Tensor, seeds: Sequence[int], epoch: int, device) -> torch.Tensor:
    """(M, n) event indices: member m's shuffled training events in ``epoch``."""
    perms = []
    for s in seeds:
        g = torch.Generator().manual_seed(derive_seed(s, epoch))
        perms.append(train_idx[torch.randperm(len(train_idx), generator=g)])
    return torch.stack(perms).to(device)


def augmenter(spec: Spec, registry=None) -> Callable[[Batch], Batch] | None:
    """``[training] augment``: each batch's real particles moved by one random element of the
    named group per event (drawn from the global torch RNG, reseeded every epoch)."""
    aug = spec.training.augment
    if aug is None:
        return None
    from .groups import act, random_elements

    cls = (registry or get_registry()).get("group", aug.group)
    group = cls(cls.Options())

    def apply(batch: Batch) -> Batch:
        shape = batch.p4.shape
        p4, mask = batch.p4.reshape(-1, *shape[-2:]), batch.mask.reshape(-1, shape[-2])
        elements = random_elements(group, p4.shape[0], rapidity=(0.0, aug.rapidity), angle=(0.0, aug.angle),
                                   dtype=torch.float64, device=p4.device)
        moved = act(elements, p4.to(torch.float64), mask).to(p4.dtype).reshape(shape)
        return Batch(moved, batch.mask, batch.label, batch.weight)

    return apply


# --------------------------------------------------------------------------- steppers


class Stepper:
    """Turns one batch per member into per-member losses and gradients (``.grad`` of the
    ensemble's stacked parameters); the loop steps the optimiser. A stepper of one process
    evaluates and writes itself (``is_main``); :meth:`on_main` runs file work where it should
    run and :meth:`reduce` sums epoch totals over processes."""

    mode = "sequential"
    is_main = True

    def __init__(self, ens: Ensemble, reason: str | None = None):
        self.ens, self.reason = ens, reason

    def steps(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        return batches(n, batch_size)

    def step(self, batch: Batch, terms: Sequence[PenaltyTerm]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ens.backward(batch, terms, vectorize=self.mode == "vectorized")

    def reduce(self, totals: torch.Tensor) -> torch.Tensor:
        return totals

    def on_main(self, fn: Callable[[], Any]) -> Any:
        return fn()


class SequentialStepper(Stepper):
    """The members one after the other, on views of the stacked tensors."""


class VectorizedStepper(Stepper):
    """All members in one ``torch.func.vmap``-ed forward and backward."""

    mode = "vectorized"


def sequential_planned(job: EnsembleJob) -> bool:
    """Whether the members will train one after the other (:func:`local_stepper`), each then a
    module of its own (``Ensemble(direct=True)``)."""
    return job.vectorize == "no" or job.vectorize == "auto" and auto_sequential(job) is not None


def auto_sequential(job: EnsembleJob) -> str | None:
    """Why ``vectorize = "auto"`` trains the members one after the other, or None (vmap them).

    One member; or the CPU, where one after the other is as fast or faster — 1.0–1.2× on the toy
    presets, several times on padded jets, whose per-particle MLPs then skip the padded slots
    (``benchmarks/bench_training.py``, ``benchmarks/bench_jets.py``; docs/performance.md). On a
    GPU one vmapped step fills the device better than M small ones."""
    if len(job.seeds) == 1:
        return "one member"
    if job.device.type == "cpu":
        return "on the CPU one after the other is faster"
    return None


def local_stepper(ens: Ensemble, job: EnsembleJob, probe: Callable[[], Batch], terms: Sequence[PenaltyTerm]) -> Stepper:
    """Vectorised when asked, or (auto) when :func:`auto_sequential` finds no reason against it
    and one vmapped step works."""
    if job.vectorize == "no":
        return SequentialStepper(ens, "requested")
    why = auto_sequential(job) if job.vectorize == "auto" else None
    if why is not None:
        return SequentialStepper(ens, why)
    reason = ens.probe_vectorized(probe(), terms)  # also lays the parameters out as their gradients
    if reason is not None and job.vectorize == "auto":
        return SequentialStepper(ens, f"vmap failed: {reason}")
    return VectorizedStepper(ens)


def compile_by_default(device: torch.device, vectorized: bool) -> bool:
    """Whether ``compile = None`` compiles the step: where ``benchmarks/bench_training.py``
    measured that it pays, compilation included (docs/performance.md)."""
    return False


def compile_step(stepper: Stepper, job: EnsembleJob, probe: Callable[[], Batch], penalties: Sequence) -> None:
    """Compile the stepper's step when ``job.compile`` asks for it (not with penalties, which
    run eagerly); a step that does not compile stays eager, with a warning naming why."""
    vectorized = stepper.mode == "vectorized"
    wanted = compile_by_default(job.device, vectorized) if job.compile is None else job.compile
    if not wanted or penalties:
        return
    reason = stepper.ens.compile_step(probe(), vectorized)
    if reason is not None:
        warnings.warn(f"spec '{job.spec.name}': the training step did not compile, it runs eagerly ({reason})",
                      stacklevel=2)


# --------------------------------------------------------------------------- the loop


def train_epoch(
    stepper: Stepper,
    opt: torch.optim.Optimizer,
    tensors: Tensors,
    order: torch.Tensor,
    steps: Sequence[tuple[int, int]],
    terms: Sequence[PenaltyTerm] = (),
    augment: Callable[[Batch], Batch] | None = None,
) -> torch.Tensor:
    """One pass over ``order`` (M, n) in ``steps``: (2, M) mean task loss and penalty per member."""
    stepper.ens.train()
    totals = torch.zeros(2, len(stepper.ens), device=order.device, dtype=torch.float64)
    count = 0
    for (start, stop), batch in zip(steps, tensors.batches(order, steps)):
        loss, pen = stepper.step(augment(batch) if augment else batch, terms)
        opt.step()
        opt.zero_grad(set_to_none=True)
        totals[0].add_(loss, alpha=stop - start)
        totals[1].add_(pen, alpha=stop - start)
        count += stop - start
    return stepper.reduce(totals) / count


def task_metrics(task: Task, output: np.ndarray, target: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    """The task's metrics of one member's outputs; every metric NaN (``null`` in JSON) when an
    output is NaN or infinite (a diverged member: too large a learning rate, say), so a diverged
    run reports itself instead of crashing scikit-learn."""
    if np.isfinite(output).all():
        return task.metrics(output, target, weight)
    return dict.fromkeys(task.metrics(np.zeros_like(output), target, weight), math.nan)


def _member_metrics(task: Task, tensors: Tensors, index: np.ndarray, outputs: torch.Tensor) -> list[dict[str, float]]:
    target, weight = tensors.target_np[index], tensors.weight_np[index]
    return [task_metrics(task, row, target, weight) for row in outputs.detach().double().cpu().numpy()]


def train_ensemble(
    job: EnsembleJob,
    tensors: Tensors,
    directory: FractionDir | None = None,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    parallel=None,
) -> dict[str, Any]:
    """Train the ensemble, evaluate it, write its files (if ``directory``) and return results.

    ``parallel`` (a :class:`~symfw.core.distributed.DistInfo`) trains data-parallel over its
    process group: call it on every rank; rank 0 evaluates and writes, every rank returns the
    results.
    """
    spec, cfg, device = job.spec, job.spec.training, job.device
    registry = job.registry or get_registry()
    task = make_task(spec, registry)
    train_idx = torch.as_tensor(job.split.train, dtype=torch.long)
    train_t = torch.as_tensor(job.split.train, device=device)
    affine = task.prepare(tensors.target[train_t].to(tensors.dtype), tensors.weight[train_t])
    init = None
    if job.matched is not None:
        from .matching import PROBE_EVENTS, matched_state

        probe = tensors.batch(torch.as_tensor(job.split.train[:PROBE_EVENTS], device=device))
        probe_p4, probe_mask = probe.p4.cpu(), probe.mask.cpu()

        def init(seed: int) -> dict[str, torch.Tensor]:
            return matched_state(job.matched, seed, probe_p4, probe_mask, registry)

    def build(direct: bool) -> Ensemble:
        return Ensemble(spec, job.seeds, device=device, registry=registry, dtype=tensors.dtype, task=task,
                        output_affine=affine, init=init, direct=direct)

    ens = build(parallel is None and sequential_planned(job))
    penalties = penalty_terms(spec, ens.base.group, registry)
    augment = augmenter(spec, registry)

    def terms_at(epoch: int) -> list[PenaltyTerm]:
        return [PenaltyTerm(ref.name, pen, lam_at(ref, epoch)) for ref, pen in penalties]

    if parallel is not None:
        from .distributed import DataParallelStepper

        stepper: Stepper = DataParallelStepper(ens, parallel)
    else:
        def probe() -> Batch:  # the first batch, built only when a vmapped step is to be tried
            return tensors.batch(batch_order(train_idx, job.seeds, 0, device)[:, : cfg.batch_size])

        stepper = local_stepper(ens, job, probe, [PenaltyTerm(r.name, p, 1.0) for r, p in penalties])

    def load() -> Checkpoint | None:
        if directory is None or not resume or not directory.has_checkpoint:
            return None
        return Checkpoint.load(directory.checkpoint_path, ens.member_shapes(), device)

    ckpt = stepper.on_main(load)  # the loop's whole state: updated every epoch, saved as it is
    if ckpt is not None and ckpt.seeds != list(job.seeds):
        raise UsageError(f"{directory.root}: the checkpoint holds other members; remove it to restart")
    if parallel is None and ckpt is not None and ckpt.mode in ("vectorized", "sequential") and ckpt.mode != stepper.mode:
        ens = build(ckpt.mode == "sequential")  # resumed as it started, so the run ends as an uninterrupted one
        stepper = (VectorizedStepper if ckpt.mode == "vectorized" else SequentialStepper)(ens, ckpt.mode_reason)
    ens.vectorize = stepper.mode == "vectorized"
    steps = stepper.steps(len(train_idx), cfg.batch_size)
    opt = adamw(ens.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, layout=ens.parameter_layout())
    if ckpt is not None:
        ens.load_state((ckpt.params, ckpt.buffers))
        opt.load_state_dict(ckpt.optimizer)
        if stepper.is_main and directory is not None:
            directory.write_metrics(ckpt.history)  # a kill between the checkpoint and this file loses nothing
    else:
        (params, buffers), best = ens.state(), ens.state()
        ckpt = Checkpoint(0, list(job.seeds), params, buffers, opt.state_dict(), *best, [None] * len(ens), [0] * len(ens))
    ckpt.mode, ckpt.mode_reason = stepper.mode, stepper.reason
    if parallel is None:
        compile_step(stepper, job, probe, penalties)

    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        for epoch in range(ckpt.epoch, cfg.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(penalty_seed(job.seeds, epoch))
            terms = terms_at(epoch)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            order = batch_order(train_idx, job.seeds, epoch, device)
            totals = train_epoch(stepper, opt, tensors, order, steps, terms, augment).tolist()
            if not stepper.is_main:
                continue
            val = _member_metrics(task, tensors, job.split.val, tensors.predict(ens, job.split.val))
            for m, mm in enumerate(val):
                if task.better(mm[task.primary], math.nan if ckpt.best_score[m] is None else ckpt.best_score[m]):
                    ckpt.best_score[m], ckpt.best_epoch[m] = mm[task.primary], epoch + 1
                    with torch.no_grad():
                        for src, dst in ((ens.params, ckpt.best_params), (ens.buffers, ckpt.best_buffers)):
                            for k in dst:
                                dst[k][m].copy_(src[k][m])
            members = [
                {"member": m, "seed": job.seeds[m], "loss": totals[0][m],
                 **({"penalty": totals[1][m], "lam": {t.name: t.lam for t in terms}} if penalties else {}),
                 "val": val[m]}
                for m in range(len(ens))
            ]
            record = M.jsonable({"epoch": epoch + 1, "members": members})
            ckpt.history.append(record)
            ckpt.epoch, ckpt.train_time_s = epoch + 1, ckpt.train_time_s + time.perf_counter() - t0
            if directory is not None:
                (ckpt.params, ckpt.buffers), ckpt.optimizer = ens.state(), opt.state_dict()
                ckpt.save(directory.checkpoint_path)
                directory.write_metrics(ckpt.history)
            if on_epoch is not None:
                on_epoch({**record, "epochs": cfg.epochs, "spec": spec.name, "fraction": job.split.fraction,
                          "lr": cfg.lr, "lam": {p.name: p.lam for p in spec.penalties}, "primary": task.primary})

    def final() -> dict[str, Any]:
        results = final_results(job, task, ens, tensors, ckpt, parallel.world_size if parallel is not None else 1)
        if directory is not None:
            directory.write_results(results)
        return results

    return stepper.on_main(final)


# --------------------------------------------------------------------------- evaluation


def epochs_to(curve: Sequence[float], final: float, direction: str) -> int | None:
    """First epoch within 1 % of the final value (≥ 99 % of it, or ≤ 101 % for a loss)."""
    if not math.isfinite(final):
        return None
    for i, v in enumerate(curve):
        if v is not None and math.isfinite(v) and (v >= 0.99 * final if direction == "max" else v <= 1.01 * final):
            return i + 1
    return None


def _summary(per_member: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: M.mean_std([m[k] for m in per_member]) for k in per_member[0]}


def final_results(job, task, ens, tensors, ckpt: Checkpoint, world_size: int = 1):
    """The results of a trained ensemble (its state now, the rest in ``ckpt``): test metrics of the
    final and best-validation states, curves, summaries, the learned-weight curve, the
    extrapolation and the task's report."""
    history, best_epoch = ckpt.history, ckpt.best_epoch
    primary, device = task.primary, job.device
    best_state = (ckpt.best_params, ckpt.best_buffers)
    models = [ens.member(m) for m in range(len(ens))]
    final_out, best_out, weights = _test_pass(ens, models, best_state, tensors, job.split.test)
    final_test = _member_metrics(task, tensors, job.split.test, final_out)
    best_test = _member_metrics(task, tensors, job.split.test, best_out)
    n_epochs, n = len(history), len(ens)
    val_curve = [[M.from_json(r["members"][m]["val"][primary]) for m in range(n)] for r in history]
    members = []
    for m in range(n):
        curve = [row[m] for row in val_curve]
        members.append({
            "member": m,
            "seed": job.seeds[m],
            "final": {"epoch": n_epochs, "val": history[-1]["members"][m]["val"], "test": final_test[m]},
            "best": {
                "epoch": best_epoch[m],
                "val": history[best_epoch[m] - 1]["members"][m]["val"] if best_epoch[m] else None,
                "test": best_test[m],
            },
            "epochs_to_99": epochs_to(curve, curve[-1], task.direction),
        })
    at_epochs = [e for e in AT_EPOCHS if e <= n_epochs]
    test_data = tensors.data.subset(job.split.test)
    out_np = final_out.double().cpu().numpy()
    ensemble = None
    if n > 1:  # the members voting as one model (Task.combine), on the same test events
        target, weight = tensors.target_np[job.split.test], tensors.weight_np[job.split.test]
        ensemble = {"members": n, **{
            key: {"test": task_metrics(task, task.combine(out.double().cpu().numpy()), target, weight)}
            for key, out in (("final", final_out), ("best", best_out))
        }}
    results: dict[str, Any] = {
        "spec": job.spec.name,
        "task": job.spec.task.name,
        "primary": primary,
        "direction": task.direction,
        "fraction": job.split.fraction,
        "n_train": len(job.split.train),
        "n_val": len(job.split.val),
        "n_test": len(job.split.test),
        "epochs": n_epochs,
        "batch_size": job.spec.training.batch_size,
        "lr": job.spec.training.lr,
        "weight_decay": job.spec.training.weight_decay,
        "mode": ckpt.mode,
        "mode_reason": ckpt.mode_reason,
        "compiled": ens.compiled,
        "world_size": world_size,
        "device": str(device),
        "parameters": ens.n_parameters,
        "train_time_s": ckpt.train_time_s,
        "members": members,
        "ensemble": ensemble,
        "curves": {
            "epoch": list(range(1, n_epochs + 1)),
            f"val_{primary}": val_curve,
            "loss": [[r["members"][m]["loss"] for m in range(n)] for r in history],
        },
        "summary": {
            "final_test": _summary(final_test),
            "best_test": _summary(best_test),
            "best_epoch": M.mean_std(best_epoch),
            "epochs_to_99": M.mean_std([m["epochs_to_99"] for m in members]),
            f"val_{primary}_at": {str(e): M.mean_std(val_curve[e - 1]) for e in at_epochs},
        },
        "general_weight": None if weights is None else weight_curve(models[0].context, *weights),
        "extrapolation": None,
        "report": task.report(out_np, tensors.target_np[job.split.test], tensors.weight_np[job.split.test], test_data)
        if np.isfinite(out_np).all() else {},
    }
    if job.train_pt_max is not None:
        values = context_variable(job.cut_context, test_data, job.registry)
        results["extrapolation"] = extrapolation(
            task, tensors.target_np[job.split.test], out_np, tensors.weight_np[job.split.test], values, job.train_pt_max
        )
        results["extrapolation"]["variable"] = (job.registry or get_registry()).get("context", job.cut_context).variable_label
    return M.jsonable(results)


@torch.no_grad()
def _test_pass(ens, models, best_state, tensors: Tensors, index: np.ndarray):
    """One pass over the test events: the outputs of the final and the best-validation states, and
    the breaking variable and each model's learned weight (None without one), chunk by chunk."""
    finals, bests, xs, ws = [], [], [], []
    learns = None
    for p4, mask in tensors.chunks(index):
        finals.append(ens.predict(p4, mask))
        bests.append(ens.predict(p4, mask, state=best_state))
        if learns is None:
            learns = models[0].context is not None and models[0].general_weight(p4[:2], mask[:2]) is not None
        if learns:
            xs.append(models[0].context.variable(p4, mask).double().cpu().numpy())
            ws.append([model.general_weight(p4, mask).double().cpu().numpy() for model in models])
    weights = (np.concatenate(xs), [np.concatenate([w[m] for w in ws]) for m in range(len(models))]) if learns else None
    return torch.cat(finals, dim=1), torch.cat(bests, dim=1), weights


@torch.no_grad()
def general_weight_curve(
    models: Sequence[SymfwModel], p4: torch.Tensor, mask: torch.Tensor, bins: int = WEIGHT_CURVE_BINS
) -> dict[str, Any] | None:
    """The learned weight of the general subnet vs the breaking variable (hybrid paper, Fig. 5).

    The x-axis is the models' own breaking context's :meth:`~symfw.core.interfaces.BreakingContext.variable`
    (leading pT for ``leading-pt``). Each model's ``general_weight`` is averaged in ``bins``
    bins of equal population (quantiles); a bin's x is the mean of its events. The curve is the
    mean over models ± their standard deviation. None when the models' combiner learns no weight.
    """
    context = models[0].context
    if context is None or models[0].general_weight(p4[:2], mask[:2]) is None:
        return None
    x = context.variable(p4, mask).double().cpu().numpy()
    return weight_curve(context, x, [model.general_weight(p4, mask).double().cpu().numpy() for model in models], bins)


def weight_curve(context, x: np.ndarray, weights: Sequence[np.ndarray], bins: int = WEIGHT_CURVE_BINS) -> dict[str, Any]:
    """:func:`general_weight_curve` of the variable ``x`` and each model's weights per event."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([x.min(), x.min() + 1e-9])
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    bins = len(edges) - 1
    centers = [float(x[which == b].mean()) if (which == b).any() else math.nan for b in range(bins)]
    per_model = []
    for w in weights:
        per_model.append([float(w[which == b].mean()) if (which == b).any() else math.nan for b in range(bins)])
    arr = np.asarray(per_model)
    return {
        "variable": type(context).variable_label,
        "pt_edges": edges.tolist(),
        "pt_centers": centers,
        "n": [int((which == b).sum()) for b in range(bins)],
        "mean": arr.mean(axis=0).tolist(),
        "std": (arr.std(axis=0, ddof=1) if len(arr) > 1 else np.zeros(bins)).tolist(),
        "per_member": arr.tolist(),
    }


def extrapolation(
    task: Task,
    target: np.ndarray,
    outputs: np.ndarray,
    weights: np.ndarray,
    values: np.ndarray,
    cut: float,
    bins: int = EXTRAPOLATION_BINS,
) -> dict[str, Any]:
    """The task's test metrics in bins of the breaking variable below and above the cut.

    ``outputs`` is (members, n, ...). Below and above the cut, bin edges are quantiles of the
    test events' values (``bins`` bins each side), so every bin holds a similar number of events.
    """
    below, above = values < cut, values >= cut
    edges: list[float] = []
    if below.any():
        e = np.quantile(values[below], np.linspace(0, 1, bins + 1))
        e[-1] = cut
        edges += e[:-1].tolist()
    edges.append(cut)
    if above.any():
        e = np.quantile(values[above], np.linspace(0, 1, bins + 1))
        e[-1] = np.nextafter(e[-1], np.inf)
        edges += e[1:].tolist()
    edges = sorted(set(edges))

    def summary(sel: np.ndarray) -> dict[str, Any]:
        return _summary([task_metrics(task, row[sel], target[sel], weights[sel]) for row in outputs])

    out_bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (values >= lo) & (values < hi)
        out_bins.append({
            "lo": lo, "hi": hi, "pt_mean": float(values[sel].mean()) if sel.any() else math.nan,
            "n": int(sel.sum()), "side": "below" if hi <= cut else "above",
            **(summary(sel) if sel.any() else {}),
        })
    sides = {side: {"n": int(sel.sum()), **summary(sel)} if sel.any() else None
             for side, sel in (("below", below), ("above", above))}
    return {"pt_max": cut, "bins": out_bins, **sides}


# --------------------------------------------------------------------------- runs


def run_training(
    spec: Spec,
    data: EventData,
    settings: RunSettings,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
    vectorize: str = "auto",
    registry=None,
    on_epoch: EpochCallback | None = None,
    dtype: torch.dtype = torch.float32,
    parallel=None,
) -> dict[str, Any]:
    """Train ``settings.seeds`` members of ``spec`` for every training fraction.

    With ``out``, the run directory is written (see :mod:`symfw.core.runs`) and ``resume``
    continues an interrupted run there; fractions already finished are read back. ``vectorize``
    is ``auto`` (vmap when the model and penalties allow it), ``yes`` or ``no`` (sequential);
    ``parallel`` (a :class:`~symfw.core.distributed.DistInfo`) trains data-parallel. Models
    train in float32 unless ``dtype`` says otherwise. This is
    :func:`symfw.core.executors.train_runs` for one spec.
    """
    from .executors import LocalExecutor, train_runs

    return train_runs(
        [spec], [out], data, settings, executor=LocalExecutor(reraise=True), resume=resume, device=device, vectorize=vectorize, registry=registry,
        on_epoch=on_epoch, dtype=dtype, parallel=parallel,
    )[0]


def load_members(run_dir: str | Path, fraction: float = 1.0, best: bool = False, registry=None) -> list[SymfwModel]:
    """The trained members of a run (final, or best-validation with ``best``) as models."""
    from .runs import RunDir
    from .spec import load_spec

    run = RunDir(Path(run_dir))
    spec = load_spec(run.root / "spec.toml", registry=registry)
    directory = run.fraction(fraction)
    if not directory.has_checkpoint:
        raise UsageError(f"{run.root}: no checkpoint for training fraction {fraction:g}")
    ens, ckpt = ensemble_from(spec, Checkpoint.load(directory.checkpoint_path), directory.checkpoint_path,
                              registry=registry)
    state = (ckpt.best_params, ckpt.best_buffers) if best else (ckpt.params, ckpt.buffers)
    return [ens.member(m, state) for m in range(len(ens))]


def ensemble_from(spec: Spec, ckpt: Checkpoint, path, device="cpu", registry=None, task: Task | None = None):
    """The ensemble a checkpoint holds (its members' final state loaded, on ``device``), once the
    checkpoint is checked against the spec's model; and the checkpoint with its tensors on ``device``."""
    ens = Ensemble(spec, ckpt.seeds, device=device, registry=registry, vectorize=False,
                   dtype=next(iter(ckpt.params.values())).dtype, task=task)
    ckpt.require(ens.member_shapes(), path)
    for name in ("params", "buffers", "best_params", "best_buffers"):
        setattr(ckpt, name, {k: v.to(device) for k, v in getattr(ckpt, name).items()})
    ens.load_state((ckpt.params, ckpt.buffers))
    return ens, ckpt
