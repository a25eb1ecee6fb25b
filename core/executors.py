"""Where the trainings of ``symfw compare`` run: in this process, or as Ray tasks on a cluster.

A comparison is cut into **tasks**; a task trains some members (seeds) of one spec on one
training fraction into its own folder, a complete :class:`~symfw.core.runs.FractionDir`
(checkpoint after every epoch, ``metrics.jsonl``, ``results.json`` written last)::

    OUT/<spec>/fraction-<f>/             the (spec, fraction) ensemble, as symfw train writes it
    OUT/<spec>/fraction-<f>/member-<m>/  one seed's task, when tasks are split by seed

- :class:`LocalExecutor` (default, no dependency) runs the tasks one after the other in this
  process, one task per (spec, fraction) with all its seeds trained together (vmapped).
- :class:`RayExecutor` sends one task per (spec, seed, fraction) to a Ray cluster
  (``ray.init(address)``: a local one by default, ``auto`` for the running cluster), at most as
  many at once as the cluster has CPUs (or GPUs with ``--device cuda``).

Both gather the results the same way: when every seed of a (spec, fraction) is done, the
per-seed folders are merged into ``OUT/<spec>/fraction-<f>/`` — parameters stacked by member,
histories joined, test metrics recomputed for the ensemble — exactly the files an ensemble
trained in one process has; then ``results.json`` per spec, and ``compare.json``.

Failures: a task that raises (other than bad input) or whose worker dies is retried
(``max_retries``: Ray's own retries for Ray; a loop here for the local executor); a retried task
resumes from its folder's last checkpoint. A task counts as finished only once its
``results.json`` is written, so a failure never loses finished work: the driver gathers every
other task, reports the failures, and ``--resume`` trains only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from . import metrics as M
from .data import EventData
from .ensemble import Ensemble
from .errors import SymfwError, UsageError
from .io import atomic_write
from .runs import CHECKPOINT_FILE, METRICS_FILE, RESULTS_FILE, FractionDir, RunDir
from .spec import Spec
from .training import (
    EnsembleJob,
    EpochCallback,
    RunSettings,
    Tensors,
    _final_results,
    check_data_fits,
    member_seeds,
    prepare_split,
    resolve_device,
    train_ensemble,
)

TASK_FILES = (CHECKPOINT_FILE, METRICS_FILE, RESULTS_FILE)  # results.json last: it marks a task done
TaskCallback = Callable[["TrainTask", int, int], None]


def member_dirname(member: int) -> str:
    return f"member-{member}"


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TrainTask:
    """Members ``members`` of ``spec`` on training fraction ``fraction``, into ``directory``."""

    spec: Spec
    name: str
    settings: RunSettings
    fraction: float
    members: tuple[int, ...]
    directory: str
    device: str = "cpu"
    vectorize: str = "auto"

    @property
    def label(self) -> str:
        who = f"seed {self.members[0]}" if len(self.members) == 1 else f"{len(self.members)} seeds"
        return f"{self.name} f={self.fraction:g} {who}"


def _writable(data: EventData) -> EventData:
    """``data`` with writable arrays (Ray hands tasks read-only views of its object store)."""
    arrays = {k: getattr(data, k) for k in ("p4", "label", "mask", "weight", "p4_true")}
    if all(a is None or a.flags.writeable for a in arrays.values()):
        return data
    return EventData(**{k: None if a is None else np.array(a) for k, a in arrays.items()}, meta=dict(data.meta))


def run_task(
    task: TrainTask,
    data: EventData,
    *,
    registry=None,
    on_epoch: EpochCallback | None = None,
    return_files: bool = True,
) -> dict[str, bytes] | None:
    """Train the task into its folder (continuing from a checkpoint there) and return the folder's
    files, so a driver without access to the worker's disk can write them."""
    directory = FractionDir(Path(task.directory))
    if not directory.done:
        data = _writable(data)
        settings = task.settings
        device = resolve_device(task.device)
        seeds = member_seeds(settings.seed, settings.seeds)
        job = EnsembleJob(
            spec=task.spec,
            split=prepare_split(data, settings).with_fraction(task.fraction),
            seeds=[seeds[m] for m in task.members],
            device=device,
            vectorize=task.vectorize,
            train_pt_max=settings.train_pt_max,
            registry=registry,
            base_seed=settings.seed,
        )
        train_ensemble(job, Tensors.from_data(data, device), directory, resume=True, on_epoch=on_epoch)
    return {name: (directory.root / name).read_bytes() for name in TASK_FILES} if return_files else None


def commit(task: TrainTask, files: dict[str, bytes] | None) -> None:
    """Write a finished task's files into its folder unless they are there already."""
    directory = FractionDir(Path(task.directory))
    if files is None or directory.done:
        return
    for name in TASK_FILES:
        atomic_write(directory.root / name, lambda tmp, content=files[name]: tmp.write_bytes(content))


# --------------------------------------------------------------------------- executors


class Failure(NamedTuple):
    task: TrainTask
    error: str


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"


class LocalExecutor:
    """Tasks one after the other in this process; all seeds of a (spec, fraction) in one task.

    ``split_members=True`` makes one task per seed, as the Ray executor does. A task that raises
    anything but a symfw error is retried up to ``max_retries`` times (from its checkpoint).
    """

    name = "local"
    in_process = True

    def __init__(self, max_retries: int = 0, split_members: bool = False):
        if max_retries < 0:
            raise UsageError(f"--retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.split_members = split_members

    def map(self, fn: Callable, tasks: Sequence[TrainTask], shared: Any, on_done: Callable) -> list[Failure]:
        failures = []
        for task in tasks:
            for attempt in range(self.max_retries + 1):
                try:
                    files = fn(task, shared)
                except SymfwError as exc:  # bad input: retrying cannot help
                    failures.append(Failure(task, str(exc)))
                    break
                except Exception as exc:  # noqa: BLE001 - any crash of a task: retry, then report
                    if attempt == self.max_retries:
                        failures.append(Failure(task, _one_line(exc)))
                else:
                    on_done(task, files)
                    break
        return failures


def _ray_call(fn: Callable, task: TrainTask, data: EventData) -> tuple[str, Any]:
    """A Ray task: symfw errors come back as values (not retried), anything else raises (retried)."""
    try:
        return "ok", fn(task, data)
    except SymfwError as exc:
        return "error", str(exc)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class RayExecutor:
    """One Ray task per (spec, seed, fraction); results gathered as tasks finish.

    ``address``: None starts a local Ray instance (and shuts it down afterwards); ``"auto"`` or
    ``"ray://host:10001"`` / ``"host:6379"`` joins a running cluster. An already initialised Ray
    (``ray.init`` called by the caller) is used as it is. Each task asks for ``num_cpus`` CPUs
    (and ``num_gpus`` GPUs); Ray retries a task that raises or whose worker dies ``max_retries``
    times.
    """

    name = "ray"
    in_process = False
    split_members = True

    def __init__(self, address: str | None = None, max_retries: int = 2, num_cpus: float = 1, num_gpus: float = 0):
        if not ray_available():
            raise UsageError("--executor ray needs Ray: pip install 'symfw[ray]' (or pip install 'ray>=2.9')")
        if max_retries < 0:
            raise UsageError(f"--retries must be >= 0, got {max_retries}")
        self.address, self.max_retries, self.num_cpus, self.num_gpus = address, max_retries, num_cpus, num_gpus

    def map(self, fn: Callable, tasks: Sequence[TrainTask], shared: Any, on_done: Callable) -> list[Failure]:
        import logging

        import ray

        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UsageError(f"--address {self.address}: cannot connect to Ray ({_one_line(exc)})") from None
        failures = []
        try:
            remote = ray.remote(_ray_call).options(
                num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries, retry_exceptions=True
            )
            data_ref = ray.put(shared)
            pending = {remote.remote(fn, task, data_ref): task for task in tasks}
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ref)
                try:
                    kind, value = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    failures.append(Failure(task, _one_line(getattr(exc, "cause", None) or exc)))
                    continue
                if kind == "error":
                    failures.append(Failure(task, value))
                else:
                    on_done(task, value)
        finally:
            if started:
                ray.shutdown()
        return failures


def make_executor(name: str, address: str | None = None, retries: int | None = None, device: str = "cpu"):
    """The executor named on the command line (``local`` or ``ray``)."""
    name = name.strip().lower()
    if name == "local":
        if address is not None:
            raise UsageError("--address is for --executor ray")
        return LocalExecutor(max_retries=0 if retries is None else retries)
    if name == "ray":
        gpus = 1 if str(device).startswith("cuda") else 0
        return RayExecutor(address=address, max_retries=2 if retries is None else retries, num_gpus=gpus)
    raise UsageError(f"--executor must be local or ray, got '{name}'")


# --------------------------------------------------------------------------- planning and gathering


def _member_dirs(fdir: FractionDir, n: int) -> list[FractionDir]:
    return [FractionDir(fdir.root / member_dirname(m)) for m in range(n)]


def plan_tasks(
    specs: Sequence[Spec],
    runs: Sequence[RunDir],
    names: Sequence[str],
    settings: RunSettings,
    split_members: bool,
    device: str = "cpu",
    vectorize: str = "auto",
) -> list[TrainTask]:
    """The tasks still to run: finished folders are skipped; a (spec, fraction) that has per-seed
    folders already keeps being trained per seed, so no finished seed is trained again."""
    tasks = []
    everyone = tuple(range(settings.seeds))
    for spec, run, name in zip(specs, runs, names):
        for fraction in sorted(settings.fractions):
            fdir = run.fraction(fraction)
            if fdir.done:
                continue
            members = _member_dirs(fdir, settings.seeds)
            base = TrainTask(spec, name, settings, fraction, everyone, str(fdir.root.resolve()), str(device), vectorize)
            if split_members or any(d.root.exists() for d in members):
                tasks += [
                    replace(base, members=(m,), directory=str(d.root.resolve()))
                    for m, d in enumerate(members)
                    if not d.done
                ]
            else:
                tasks.append(base)
    return tasks


def _stack(parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _stack_optimizer(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """AdamW states of one-member ensembles as the state of the stacked ensemble (element-wise)."""
    out = {"param_groups": states[0]["param_groups"], "state": {}}
    for i, first in states[0]["state"].items():
        out["state"][i] = {
            k: torch.cat([s["state"][i][k] for s in states]) if v.dim() > 0 else v for k, v in first.items()
        }
    return out


def merge_members(
    spec: Spec,
    settings: RunSettings,
    fraction: float,
    fdir: FractionDir,
    data: EventData,
    device: str | torch.device = "cpu",
    registry=None,
) -> dict[str, Any]:
    """Join the finished per-seed folders of one (spec, fraction) into ``fdir``: the checkpoint,
    ``metrics.jsonl`` and ``results.json`` an ensemble of all seeds trained at once writes."""
    device = resolve_device(device) if isinstance(device, str) else device
    ckpts = [d.load_checkpoint("cpu") for d in _member_dirs(fdir, settings.seeds)]
    seeds = member_seeds(settings.seed, settings.seeds)
    params, buffers = _stack([c["params"] for c in ckpts]), _stack([c["buffers"] for c in ckpts])
    best = (_stack([c["best"]["params"] for c in ckpts]), _stack([c["best"]["buffers"] for c in ckpts]))
    epochs = len(ckpts[0]["history"])
    history = [
        {"epoch": e + 1, "members": [{**c["history"][e]["members"][0], "member": m} for m, c in enumerate(ckpts)]}
        for e in range(epochs)
    ]
    best_auc = [c["best"]["auc"][0] for c in ckpts]
    best_epoch = [c["best"]["epoch"][0] for c in ckpts]
    train_time = float(sum(c["train_time_s"] for c in ckpts))
    modes = {(c["mode"], c["mode_reason"]) for c in ckpts}
    mode, mode_reason = modes.pop() if len(modes) == 1 else ("mixed", "; ".join(sorted(f"{a}: {b}" for a, b in modes)))
    dtype = next(iter(params.values())).dtype
    ens = Ensemble(spec, seeds, device=device, registry=registry, vectorize=False, dtype=dtype)
    ens.load_state(({k: v.to(device) for k, v in params.items()}, {k: v.to(device) for k, v in buffers.items()}))
    job = EnsembleJob(
        spec=spec,
        split=prepare_split(data, settings).with_fraction(fraction),
        seeds=seeds,
        device=device,
        vectorize="no",
        train_pt_max=settings.train_pt_max,
        registry=registry,
        base_seed=settings.seed,
    )
    best_state = tuple({k: v.to(device) for k, v in part.items()} for part in best)
    results = _final_results(
        job, ens, Tensors.from_data(data, device, dtype), history, best_state, best_epoch, train_time, mode, mode_reason
    )
    fdir.save_checkpoint(
        {
            "epoch": epochs,
            "params": params,
            "buffers": buffers,
            "optimizer": _stack_optimizer([c["optimizer"] for c in ckpts]),
            "best": {"params": best[0], "buffers": best[1], "auc": best_auc, "epoch": best_epoch},
            "history": history,
            "train_time_s": train_time,
            "mode": mode,
            "mode_reason": mode_reason,
            "seeds": seeds,
        }
    )
    fdir.write_metrics(history)
    fdir.write_results(results)
    return results


def train_specs(
    specs: Sequence[Spec],
    names: Sequence[str],
    data: EventData,
    settings: RunSettings,
    out: str | Path,
    *,
    executor=None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    vectorize: str = "auto",
    registry=None,
    on_epoch: EpochCallback | None = None,
    on_task: TaskCallback | None = None,
    task_fn: Callable = run_task,
) -> list[dict[str, Any]]:
    """Train every spec into ``out/<name>/`` through ``executor``; the :func:`run_training`
    results per spec, in order.

    ``task_fn(task, data)`` trains one task (:func:`run_task`; replaceable, e.g. to wrap it).
    ``on_epoch`` reaches the trainer only with an in-process executor; ``on_task(task, done,
    total)`` follows finished tasks. Raises :class:`SymfwError` naming the failed tasks once
    every other task has finished and been gathered.
    """
    executor = executor or LocalExecutor()
    if vectorize not in ("auto", "yes", "no"):
        raise UsageError(f"vectorize must be auto, yes or no, got '{vectorize}'")
    out = Path(out)
    device = str(device)
    split = prepare_split(data, settings)
    data_record = {"data": data.describe(), "split": split.describe()}
    runs = [RunDir(out / name) for name in names]
    for spec in specs:
        check_data_fits(spec, data, registry)
    for spec, run in zip(specs, runs):
        run.start(spec, settings.record(), data_record, resume)
    tasks = plan_tasks(specs, runs, names, settings, executor.split_members, device, vectorize)
    fn = partial(task_fn, registry=registry, on_epoch=on_epoch, return_files=False) if executor.in_process else task_fn
    finished = [0]

    def done(task: TrainTask, files: dict[str, bytes] | None) -> None:
        commit(task, files)
        finished[0] += 1
        if on_task is not None:
            on_task(task, finished[0], len(tasks))

    failures = executor.map(fn, tasks, data, done)
    results, missing = [], 0
    for spec, run in zip(specs, runs):
        fractions = []
        for fraction in sorted(settings.fractions):
            fdir = run.fraction(fraction)
            members = _member_dirs(fdir, settings.seeds)
            if not fdir.done and all(d.done for d in members):
                merge_members(spec, settings, fraction, fdir, data, device, registry)
            if fdir.done:
                fractions.append(fdir.results())
            else:
                missing += 1
        if len(fractions) == len(settings.fractions):
            record = {"spec": spec.name, "settings": settings.record(), **data_record, "fractions": fractions}
            result = M.jsonable(record)
            run.write_results(result)
            results.append(result)
    if failures:
        first = failures[0]
        raise SymfwError(
            f"{len(failures)} of {len(tasks)} training tasks failed (first: {first.task.label}: {first.error}); "
            f"finished tasks are kept in {out}: rerun with --resume to train the rest"
        )
    if missing:  # cannot happen without failures; guards the invariant
        raise SymfwError(f"{missing} (spec, fraction) ensembles are incomplete in {out}; rerun with --resume")
    return results

