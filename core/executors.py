"""The one orchestration of training (:func:`train_runs`), and where its tasks run.

``symfw train`` (one spec) and ``symfw compare`` (several) both call :func:`train_runs`: it
makes the split once, checks every spec against the data, starts (or, with ``resume``, checks)
each run directory, cuts the work into **tasks** — some members (seeds) of one spec on one
training fraction, trained by the one epoch loop (:func:`symfw.core.training.train_ensemble`)
into their own folder (``RUN/fraction-<f>/``, or ``RUN/fraction-<f>/member-<m>/`` per seed) —
has an executor run them, and gathers the results: in memory for tasks run in this process,
from the folders otherwise.

- :class:`LocalExecutor` (default) runs the tasks one after the other in this process, all seeds
  of a (spec, fraction) together; under data-parallel training every rank runs the same tasks.
- :class:`RayExecutor` sends one task per (spec, seed, fraction) to a Ray cluster.

Per-seed folders are merged (:meth:`~symfw.core.checkpoint.Checkpoint.merge`, test metrics
recomputed) into exactly the files an ensemble trained at once has. A task that fails (other
than by bad input) is retried from its last checkpoint; it counts as finished once its
``results.json`` is written, so a failure never loses finished work and ``--resume`` trains only
what is missing.
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
from .checkpoint import Checkpoint
from .data import EventData, Split
from .errors import SymfwError, UsageError
from .io import atomic_write
from .limits import check_training
from .runs import CHECKPOINT_FILE, METRICS_FILE, RESULTS_FILE, FractionDir, RunDir, check_claimable
from .spec import Spec, check_penalties
from .training import (
    EnsembleJob,
    EpochCallback,
    RunSettings,
    Tensors,
    check_data_fits,
    ensemble_from,
    final_results,
    make_task,
    member_seeds,
    prepare_split,
    resolve_device,
    train_ensemble,
)

TASK_FILES = (CHECKPOINT_FILE, METRICS_FILE, RESULTS_FILE)  # results.json last: it marks a task done
TaskCallback = Callable[["TrainTask", int, int], None]


def member_dirname(member: int) -> str:
    return f"member-{member}"


def _on_main(parallel, fn: Callable[[], Any]) -> Any:
    if parallel is None:
        return fn()
    from .distributed import on_main

    return on_main(parallel, fn)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TrainTask:
    """Members ``members`` of ``spec`` (run number ``run``) on training fraction ``fraction`` of
    ``split``, into ``directory`` (None: results in memory only)."""

    spec: Spec
    name: str
    run: int
    settings: RunSettings
    split: Split
    fraction: float
    members: tuple[int, ...]
    directory: str | None
    device: str = "cpu"
    vectorize: str = "auto"
    dtype: torch.dtype = torch.float32
    matched: Any = None  # MatchedInit or None

    @property
    def label(self) -> str:
        who = f"seed {self.members[0]}" if len(self.members) == 1 else f"{len(self.members)} seeds"
        return f"{self.name} f={self.fraction:g} {who}"

    @property
    def whole(self) -> bool:
        return len(self.members) == self.settings.seeds


def _writable(data: EventData) -> EventData:
    """``data`` with writable arrays (Ray hands tasks read-only views of its object store);
    streamed events are read from their file, and their per-event arrays are only read."""
    if not data.in_memory:
        return data
    arrays = {k: getattr(data, k) for k in ("p4", "label", "mask", "weight", "p4_true", "target")}
    return EventData(**{k: a if a is None or a.flags.writeable else np.array(a) for k, a in arrays.items()},
                     meta=dict(data.meta))


def run_task(
    task: TrainTask,
    data: EventData,
    *,
    registry=None,
    on_epoch: EpochCallback | None = None,
    parallel=None,
    return_files: bool = True,
) -> tuple[dict[str, Any], dict[str, bytes] | None]:
    """Train the task (continuing from a checkpoint in its folder) and return its results, and
    its folder's files for a driver without access to the worker's disk."""
    directory = FractionDir(Path(task.directory)) if task.directory is not None else None
    done = _on_main(parallel, lambda: directory.results() if directory is not None and directory.done else None)
    if done is None:
        data = _writable(data)
        device = resolve_device(task.device)
        seeds = member_seeds(task.settings.seed, task.settings.seeds, task.settings.trial)
        job = EnsembleJob(
            spec=task.spec, split=task.split.with_fraction(task.fraction), seeds=[seeds[m] for m in task.members],
            device=device, vectorize=task.vectorize, train_pt_max=task.settings.train_pt_max, registry=registry,
            cut_context=task.settings.cut_context, matched=task.matched, compile=task.settings.compile,
        )
        tensors = Tensors.from_data(data, make_task(task.spec, registry), device, task.dtype)
        done = train_ensemble(job, tensors, directory, resume=True, on_epoch=on_epoch, parallel=parallel)
    files = None
    if return_files and directory is not None:
        files = {name: (directory.root / name).read_bytes() for name in TASK_FILES}
    return done, files


def commit(task: TrainTask, files: dict[str, bytes] | None) -> None:
    """Write a finished task's files into its folder unless they are there already."""
    if files is None or task.directory is None or FractionDir(Path(task.directory)).done:
        return
    for name in TASK_FILES:
        atomic_write(Path(task.directory) / name, lambda tmp, content=files[name]: tmp.write_bytes(content))


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
    anything but a symfw error is retried up to ``max_retries`` times (from its checkpoint), then
    reported as a failure — or, with ``reraise``, raised as it is (``symfw train``: one task).
    """

    name = "local"
    in_process = True

    def __init__(self, max_retries: int = 0, split_members: bool = False, reraise: bool = False):
        if max_retries < 0:
            raise UsageError(f"--retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.split_members = split_members
        self.reraise = reraise

    def map(self, fn: Callable, tasks: Sequence[TrainTask], shared: Any, on_done: Callable) -> list[Failure]:
        failures = []
        for task in tasks:
            for attempt in range(self.max_retries + 1):
                try:
                    value = fn(task, shared)
                except SymfwError as exc:  # bad input: retrying cannot help
                    if self.reraise:
                        raise
                    failures.append(Failure(task, str(exc)))
                    break
                except Exception as exc:  # noqa: BLE001 - any crash of a task: retry, then report
                    if attempt == self.max_retries:
                        if self.reraise:
                            raise
                        failures.append(Failure(task, _one_line(exc)))
                else:
                    on_done(task, value)
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
    is used as it is. Each task asks for ``num_cpus`` CPUs (and ``num_gpus`` GPUs); Ray retries
    a task that raises or whose worker dies ``max_retries`` times.
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


_WORKER: dict[str, Any] = {}


def _start_worker(threads: int, data: EventData) -> None:
    """A worker process of :class:`ProcessExecutor`: its torch threads, and the events (sent once)."""
    torch.set_num_threads(threads)
    _WORKER["data"] = data


def _worker_call(fn: Callable, task: TrainTask) -> tuple[str, Any]:
    return _ray_call(fn, task, _WORKER["data"])


class ProcessExecutor:
    """Tasks in ``jobs`` worker processes of this machine, each worker on ``threads`` torch
    threads: the results are those of running the tasks one after the other with as many threads
    (``--jobs N``). With ``split_members`` (the default unless the members are to be vmapped) each
    seed of a (spec, fraction) is a task of its own, as the Ray executor does — the members train
    one after the other on a CPU anyway, and 15 tasks of 3 specs × 5 seeds share two processes
    evenly where 3 tasks split 2 + 1; a (spec, fraction) already started as one ensemble resumes as
    one, and a spec with penalties stays one task (its members share one stream of penalty draws)."""

    name = "processes"
    in_process = False
    split_penalised = False  # a penalised spec's members share their penalty draws: one task, as one after the other

    def __init__(self, jobs: int, threads: int = 1, max_retries: int = 0, split_members: bool = True):
        if jobs < 1 or threads < 1 or max_retries < 0:
            raise UsageError(f"--jobs must be >= 1 (got {jobs}), with >= 1 thread each")
        self.jobs, self.threads, self.max_retries = jobs, threads, max_retries
        self.split_members = split_members

    def map(self, fn: Callable, tasks: Sequence[TrainTask], shared: Any, on_done: Callable) -> list[Failure]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        failures: list[Failure] = []
        pending, retry = list(tasks), []
        for _ in range(self.max_retries + 1):
            if not pending:
                break
            retry = []
            with ProcessPoolExecutor(min(self.jobs, len(pending)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start_worker, initargs=(self.threads, shared)) as pool:
                futures = {pool.submit(_worker_call, fn, task): task for task in pending}
                for future in as_completed(futures):
                    task = futures[future]
                    try:
                        kind, value = future.result()
                    except Exception as exc:  # noqa: BLE001 - a crashed task or worker: retry, then report
                        retry.append((task, _one_line(exc)))
                        continue
                    if kind == "error":
                        failures.append(Failure(task, value))
                    else:
                        on_done(task, value)
            pending = [task for task, _ in retry]
        return failures + [Failure(task, error) for task, error in retry]


def make_executor(name: str, address: str | None = None, retries: int | None = None, device: str = "cpu",
                  jobs: int = 1, threads: int | None = None, vectorize: str = "auto"):
    """The executor named on the command line (``local`` — in worker processes with ``jobs`` > 1 — or ``ray``)."""
    name = name.strip().lower()
    if jobs != 1 and name != "local":
        raise UsageError("--jobs is for the local executor (Ray schedules its own workers)")
    if name == "local":
        if address is not None:
            raise UsageError("--address is for --executor ray")
        if jobs != 1:
            return ProcessExecutor(jobs, threads or 1, max_retries=0 if retries is None else retries,
                                   split_members=vectorize != "yes")
        return LocalExecutor(max_retries=0 if retries is None else retries)
    if name == "ray":
        gpus = 1 if str(device).startswith("cuda") else 0
        return RayExecutor(address=address, max_retries=2 if retries is None else retries, num_gpus=gpus)
    raise UsageError(f"--executor must be local or ray, got '{name}'")


# --------------------------------------------------------------------------- planning and gathering


def _member_dirs(fdir: FractionDir, n: int) -> list[FractionDir]:
    return [FractionDir(fdir.root / member_dirname(m)) for m in range(n)]


def plan_tasks(
    specs: Sequence[Spec], runs: Sequence[RunDir | None], names: Sequence[str],
    settings: RunSettings | Sequence[RunSettings], split: Split,
    split_members: bool, device: str = "cpu", vectorize: str = "auto", dtype: torch.dtype = torch.float32,
    matched: Sequence[Any] | None = None, split_penalised: bool = True,
) -> list[TrainTask]:
    """The tasks still to run: finished folders are skipped; a (spec, fraction) that has per-seed
    folders already keeps being trained per seed, so no finished seed is trained again. ``settings``:
    one for every spec, or one per spec (seed replicas). Without ``split_penalised`` a spec with
    penalties stays one task (its members share one stream of penalty draws, docs/training.md)."""
    tasks = []
    per_run = [settings] * len(specs) if isinstance(settings, RunSettings) else list(settings)
    for i, (spec, run, name, settings) in enumerate(zip(specs, runs, names, per_run)):
        everyone = tuple(range(settings.seeds))
        for fraction in sorted(settings.fractions):
            fdir = run.fraction(fraction) if run is not None else None
            where = str(fdir.root.resolve()) if fdir is not None else None
            base = TrainTask(spec, name, i, settings, split, fraction, everyone, where, str(device), vectorize, dtype,
                             matched[i] if matched is not None else None)
            if fdir is None:
                tasks.append(base)
                continue
            if fdir.done:
                continue
            members = _member_dirs(fdir, settings.seeds)
            started_together = fdir.checkpoint_path.exists()  # a resumed ensemble goes on as one task
            per_seed = split_members and not started_together and (split_penalised or not spec.penalties)
            if per_seed or any(d.root.exists() for d in members):
                tasks += [replace(base, members=(m,), directory=str(d.root.resolve()))
                          for m, d in enumerate(members) if not d.done]
            else:
                tasks.append(base)
    return tasks


def merge_members(spec: Spec, settings: RunSettings, split: Split, fraction: float, fdir: FractionDir,
                  data: EventData, device: str | torch.device = "cpu", registry=None) -> dict[str, Any]:
    """Join the finished per-seed folders of one (spec, fraction) into ``fdir``: the checkpoint,
    ``metrics.jsonl`` and ``results.json`` an ensemble of all seeds trained at once writes."""
    device = resolve_device(device) if isinstance(device, str) else device
    ckpt = Checkpoint.merge([Checkpoint.load(d.checkpoint_path) for d in _member_dirs(fdir, settings.seeds)])
    dtype = next(iter(ckpt.params.values())).dtype
    task = make_task(spec, registry)
    job = EnsembleJob(spec=spec, split=split.with_fraction(fraction), seeds=ckpt.seeds, device=device,
                      vectorize="no", train_pt_max=settings.train_pt_max, registry=registry,
                      cut_context=settings.cut_context)
    tensors = Tensors.from_data(data, task, device, dtype)
    train_t = torch.as_tensor(job.split.train, device=device)
    task.prepare(tensors.target[train_t].to(dtype), tensors.weight[train_t])
    ens, ckpt = ensemble_from(spec, ckpt, fdir.root, device, registry, task)
    results = final_results(job, task, ens, tensors, ckpt)
    ckpt.save(fdir.checkpoint_path)
    fdir.write_metrics(ckpt.history)
    fdir.write_results(results)
    return results


def train_runs(
    specs: Sequence[Spec],
    outs: Sequence[str | Path | None],
    data: EventData,
    settings: RunSettings,
    *,
    names: Sequence[str] | None = None,
    executor=None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    vectorize: str = "auto",
    registry=None,
    on_epoch: EpochCallback | None = None,
    on_task: TaskCallback | None = None,
    dtype: torch.dtype = torch.float32,
    parallel=None,
    split: Split | None = None,
    task_fn: Callable = run_task,
    before_start: Callable[[], None] | None = None,
    matched: Sequence[Any] | None = None,
    trials: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Train every spec (into its run directory ``outs[i]``, or in memory when None) on one split
    of ``data``; the results per spec (``{spec, settings, data, split, fractions}``), in order.

    Before anything is written, every spec is checked against the data, its penalties and the
    memory the run needs (:func:`symfw.core.limits.check_training`), and every run folder must be
    new, empty or symfw's; then each run folder is locked (:class:`~symfw.core.runs.FolderLock`,
    held until this returns) and only then checked for a run already there and started.
    ``before_start`` runs (on rank 0) after those checks, before the locks are taken.
    ``matched``: per spec, its :class:`~symfw.core.matching.MatchedInit` (or None). ``trials``: per
    spec, its seed replica (``RunSettings.trial``; default 0: the same member seeds for every spec).

    ``executor`` runs the tasks (:class:`LocalExecutor` by default); ``task_fn(task, data)``
    trains one (:func:`run_task`; replaceable, e.g. to wrap it). ``on_epoch`` reaches the
    trainer only with an in-process executor; ``on_task(task, done, total)`` follows finished
    tasks. ``split``: the run's split when the caller made it already (else made here, once).
    ``parallel`` (a :class:`~symfw.core.distributed.DistInfo`): every rank calls this,
    trains data-parallel, and rank 0 writes. Raises :class:`SymfwError` naming the failed tasks
    once every other task has finished and been gathered.
    """
    executor = executor or LocalExecutor()
    if settings.matched_init and matched is None:
        raise UsageError("matched initialisation needs the compared specs: use symfw compare --matched-init")
    if vectorize not in ("auto", "yes", "no"):
        raise UsageError(f"vectorize must be auto, yes or no, got '{vectorize}'")
    if parallel is not None and (not executor.in_process or executor.max_retries or executor.split_members):
        raise UsageError("data-parallel training runs its tasks in process: use the local executor, without retries")
    if parallel is not None and vectorize == "yes":
        raise UsageError("vectorize yes: data-parallel training trains one member at a time")
    device = str(parallel.device if parallel is not None else resolve_device(device) if isinstance(device, str) else device)
    names = list(names) if names is not None else [s.name for s in specs]
    if trials is not None and len(trials) != len(specs):
        raise UsageError(f"trials: one seed replica per spec, got {len(trials)} for {len(specs)} specs")
    per_run = [settings if not t else replace(settings, trial=t) for t in (trials or [0] * len(specs))]
    split = split if split is not None else prepare_split(data, settings, registry)
    data_record = {"data": data.describe(), "split": split.describe()}
    members = 1 if executor.split_members else settings.seeds
    concurrent = min(getattr(executor, "jobs", 1), len(specs) * len(settings.fractions))
    processes = parallel.world_size if parallel is not None and torch.device(device).type == "cpu" else concurrent
    for spec in specs:
        _on_main(parallel, lambda spec=spec: check_training(
            spec, members=members, n_train=len(split.train), n_eval=max(len(split.val), len(split.test)),
            n_events=data.resident_events, device=device, registry=registry, dtype=dtype, processes=processes,
            vectorized=vectorize == "yes" and parallel is None))
        check_data_fits(spec, data, registry)
        check_penalties(spec, registry, origin=f"spec '{spec.name}'")
    runs = [RunDir(Path(out)) if out is not None else None for out in outs]
    locks = []

    def start() -> None:  # every run checked before any is started: nothing half-written
        for run in runs:
            if run is not None:
                check_claimable(run.root)
        if before_start is not None:
            before_start()
        locks.extend(run.lock().acquire() for run in runs if run is not None)  # held until training ends
        started = [run.root for run in runs if run is not None and run.started]
        if started and not resume:
            raise UsageError(f"{started[0]} already holds a run; pass --resume to continue it or choose another --out")
        for spec, run, run_settings in zip(specs, runs, per_run):
            if run is not None:
                run.start(spec, run_settings.record(), data_record, resume)

    try:
        _on_main(parallel, start)
        return _train_started(specs, runs, names, data, per_run, split, data_record, outs, executor, device,
                              vectorize, registry, on_epoch, on_task, dtype, parallel, task_fn, matched)
    finally:
        for lock in locks:
            lock.release()


def _train_started(specs, runs, names, data, per_run, split, data_record, outs, executor, device, vectorize,
                   registry, on_epoch, on_task, dtype, parallel, task_fn, matched) -> list[dict[str, Any]]:
    """The rest of :func:`train_runs`, its run folders locked and started: plan, train, gather."""
    settings = per_run[0]  # what every spec shares (seeds, fractions, cuts); only the seed replica differs
    tasks = plan_tasks(specs, runs, names, per_run, split, executor.split_members, device, vectorize, dtype, matched,
                       split_penalised=getattr(executor, "split_penalised", True))
    if executor.in_process:
        fn = partial(task_fn, registry=registry, on_epoch=on_epoch, parallel=parallel, return_files=False)
    else:
        fn = task_fn
    in_memory: dict[tuple[int, float], dict[str, Any]] = {}
    finished = [0]

    def done(task: TrainTask, value: tuple[dict[str, Any], dict[str, bytes] | None]) -> None:
        results, files = value
        commit(task, files)
        if task.whole:
            in_memory[(task.run, task.fraction)] = results
        finished[0] += 1
        if on_task is not None:
            on_task(task, finished[0], len(tasks))

    failures = executor.map(fn, tasks, data, done)

    def gather(i: int, spec: Spec, run: RunDir | None, fraction: float) -> dict[str, Any] | None:
        if (i, fraction) in in_memory:
            return in_memory[(i, fraction)]
        fdir = run.fraction(fraction) if run is not None else None
        if fdir is None:
            return None
        if not fdir.done and all(d.done for d in _member_dirs(fdir, settings.seeds)):
            return merge_members(spec, per_run[i], split, fraction, fdir, data, device, registry)
        return fdir.results() if fdir.done else None

    results, missing = [], 0
    for i, (spec, run) in enumerate(zip(specs, runs)):
        fractions = [_on_main(parallel, lambda f=f: gather(i, spec, run, f)) for f in sorted(settings.fractions)]
        missing += sum(f is None for f in fractions)
        if all(f is not None for f in fractions):
            result = M.jsonable({"spec": spec.name, "settings": per_run[i].record(), **data_record,
                                 "fractions": fractions})
            if run is not None:
                _on_main(parallel, lambda run=run, result=result: run.write_results(result))
            results.append(result)
    if failures:
        first = failures[0]
        where = f"finished tasks are kept in {Path(outs[0]).parent if len(outs) > 1 else outs[0]}: " if outs[0] else ""
        raise SymfwError(
            f"{len(failures)} of {len(tasks)} training tasks failed (first: {first.task.label}: {first.error}); "
            f"{where}rerun with --resume to train the rest"
        )
    if missing:  # cannot happen without failures; guards the invariant
        raise SymfwError(f"{missing} (spec, fraction) ensembles are incomplete; rerun with --resume")
    return results
