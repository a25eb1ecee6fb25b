"""Data-parallel training of one model on many processes: PyTorch ``DistributedDataParallel``.

Launch with torchrun (one node or many)::

    torchrun --nproc-per-node 2 -m symfw train hybrid --data z.npz --out runs/hybrid
    symfw train hybrid --data z.npz --ddp 2 --out runs/hybrid        # the same, spawned by symfw

Each process (rank) reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: **gloo** on CPU, **NCCL** on CUDA
(rank r uses ``cuda:LOCAL_RANK``). What each rank does:

- **Data.** Every rank holds the events in memory and makes the same seeded split. In epoch e,
  member m's training events are shuffled by the permutation the single-process trainer uses
  (seeded by the member seed and e), cut into global batches of ``batch_size`` events, and rank r
  trains on the r-th contiguous slice of every global batch: the global batch is the spec's
  ``batch_size``, each rank's share ``batch_size / world_size``. A last global batch with fewer
  events than ranks is dropped.
- **Gradients.** ``DistributedDataParallel`` averages them across ranks. Rank r's loss is
  ``world_size · Σ_{i∈r} w_i·BCE_i / Σ_{i∈batch} w_i``, so the average is exactly the weighted
  BCE of the global batch (the single-process loss), whatever the event weights. A penalty (a
  mean over the rank's events) is scaled the same way by the rank's share of the batch's weight
  (or of its events, for an unweighted penalty), so penalised training matches one process too —
  for penalties that are means over events, as the interface asks (not SEAL's ``relative``
  option, which divides by each rank's own output variance).
- **Batch norm.** :func:`convert_sync_batchnorm` replaces ``nn.BatchNorm1d`` and
  :class:`~symfw.core.nn.MaskedBatchNorm` by versions that compute the batch statistics over the
  global batch (one ``torch.distributed`` all-reduce per layer of every rank's count, mean and
  squared deviations, with autograd through it), so normalisation, running statistics and
  gradients are those of the single-process run. Penalty passes normalise with the statistics
  the training pass recorded (:func:`~symfw.core.nn.shared_batch_statistics`, global ones with
  synchronised batch norm) and run no collective. Other normalisation layers keep per-rank statistics.
- **Metrics.** Rank 0 evaluates the whole validation split after every epoch and the test
  split at the end (the model is identical on every rank); only rank 0 writes the run
  directory; the final results are broadcast so every rank returns them.
- **Ensembles.** DDP trains one model: the members of ``--seeds S`` are trained one after the
  other, each on all ranks. A checkpoint after every epoch records the member and the epoch, so
  ``--resume`` continues where a killed run stopped (also on another world size: the global
  batch, and hence the result up to rounding, does not depend on it).

Hence a DDP run on W ranks computes what the single-process trainer computes with the same
``batch_size``, up to the order of floating-point sums (``tests/core/test_distributed.py``
measures the agreement). Random penalties draw per rank, so they do not reproduce the
single-process draws. See ``docs/scaling.md``.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import metrics as M
from .data import EventData
from .ensemble import Ensemble, PenaltyTerm
from .errors import SymfwError, UsageError
from .interfaces import Batch
from .nn import BatchNorm1d, MaskedBatchNorm, shared_batch_statistics
from .registry import get_registry
from .runs import FractionDir, RunDir
from .spec import Spec
from .training import (
    EnsembleJob,
    EpochCallback,
    RunSettings,
    Tensors,
    _final_results,
    _member_metrics,
    adamw,
    batch_order,
    batches,
    check_data_fits,
    lam_at,
    member_seeds,
    penalty_seed,
    penalty_terms,
    prepare_split,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
MODE = "ddp"


# --------------------------------------------------------------------------- process group


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or a launcher that sets the same variables) started this process."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise UsageError(f"${name} must be set to an integer by torchrun (got {os.environ.get(name)!r})") from None


def init_process_group(device: str | torch.device = "auto", timeout_s: float = 1800) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    ``device``: ``cpu`` (gloo), ``cuda`` (NCCL, ``cuda:LOCAL_RANK``) or ``auto`` (cuda when
    available). Joins an already initialised group instead of creating one.
    """
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    name = str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        dev, backend = torch.device("cpu"), "gloo"
    elif name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        if local >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {local} has no GPU: {torch.cuda.device_count()} CUDA device(s) on this node; "
                "start at most that many processes per node"
            )
        dev, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(dev)
    else:
        raise UsageError(f"--device must be cpu, cuda or auto, got '{device}'")
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, backend, dev)


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto") -> Iterator[DistInfo]:
    """:func:`init_process_group` for the duration of a block, destroyed afterwards."""
    created = not dist.is_initialized()
    info = init_process_group(device)
    try:
        yield info
        if created and info.world_size > 1:
            dist.barrier()  # leave together: no rank tears its connections down while others still use them
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def end_process(code: int = 0) -> NoReturn:
    """Flush stdout and stderr and end this rank's process at once, without interpreter teardown.

    A ``DistributedDataParallel`` module keeps its process group alive after
    ``destroy_process_group`` (torch 2.13), so gloo's worker threads outlive the training; one that
    releases the tensors of the last collective while Python shuts down needs the GIL and aborts
    the process ("terminate called without an active exception"), after all work is done. symfw's
    own rank processes (``--ddp`` and the non-zero ranks under torchrun) therefore end here.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def current() -> DistInfo:
    """The process group this process belongs to (it must be initialised)."""
    if not dist.is_initialized():
        raise UsageError("no process group: call symfw.core.distributed.init_process_group() first (or use torchrun)")
    backend = dist.get_backend()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, backend, dev)


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (pickled through ``torch.distributed``)."""
    if info.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(info: DistInfo, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and return its value on every rank.

    A symfw error raised by ``fn`` is raised on every rank, so no rank is left waiting in a
    collective while rank 0 reports bad input.
    """
    outcome: tuple[str, Any] = ("ok", None)
    if info.is_main:
        try:
            outcome = ("ok", fn())
        except SymfwError as exc:
            outcome = ("error", exc)
    kind, value = broadcast(outcome, info)
    if kind == "error":
        raise value
    return value


# --------------------------------------------------------------------------- batch norm


class _SumOverRanks(torch.autograd.Function):
    """``dist.all_reduce`` with autograd: the gradient of a sum over ranks is the sum of the ranks'
    gradients. (``torch.distributed.nn.functional.all_reduce`` does the same but is deprecated, and
    its default group, bound when it is first imported, can keep a destroyed process group alive.)"""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks."""
    return _SumOverRanks.apply(t)


def _syncing(module: nn.Module) -> bool:
    return (
        module.training
        and module.track_running_stats
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


def _global_moments(x: torch.Tensor, m: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Mean and biased variance over ``dims`` of the entries where ``m`` is 1, on every rank's data.

    One all-reduce per call: every rank contributes its count and mean in its own row of a
    (ranks, 1 + F) table, and its sum of squared deviations from its own mean; the global variance
    is Σ_r [M2_r + n_r (mean_r − mean)²] / N (Chan et al.), two-pass accurate like the
    single-process formula.
    """
    features, world, rank = x.shape[-1], dist.get_world_size(), dist.get_rank()
    n = m.sum(dims).reshape(1)
    mean_r = (x * m).sum(dims) / n.clamp_min(1.0)
    m2_r = (((x - mean_r) ** 2) * m).sum(dims)
    mine = torch.zeros(world, 1, dtype=x.dtype, device=x.device)
    mine[rank] = 1.0
    table = mine * torch.cat([n, mean_r]).unsqueeze(0)  # zeros except this rank's row
    total = _all_reduce(torch.cat([table.flatten(), m2_r]))
    table, m2 = total[: world * (1 + features)].view(world, 1 + features), total[world * (1 + features) :]
    counts, means = table[:, :1], table[:, 1:]
    count = counts.sum(0).clamp_min(1.0)
    mean = (counts * means).sum(0) / count
    var = (m2 + (counts * (means - mean) ** 2).sum(0)) / count
    return mean, var, count


class SyncMaskedBatchNorm(MaskedBatchNorm):
    """:class:`MaskedBatchNorm` whose training statistics cover the real particles of every rank."""

    def moments(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _global_moments(x, m, (0, 1)) if _syncing(self) else super().moments(x, m)


class SyncBatchNorm1d(BatchNorm1d):
    """``nn.BatchNorm1d`` on (B, F) inputs with statistics over the global batch (CPU and CUDA).

    ``torch.nn.SyncBatchNorm`` does the same on GPUs only; this one runs wherever
    ``torch.distributed`` does (gloo included).
    """

    def local_statistics(self) -> bool:
        return not _syncing(self)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not _syncing(self):
            return super().moments(x)
        return _global_moments(x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device), (0,))


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d`` and ``MaskedBatchNorm`` of ``module`` (in place) by its
    synchronised version; parameters and running statistics are kept, names unchanged."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is MaskedBatchNorm:
                new: nn.Module = SyncMaskedBatchNorm(child.weight.shape[0], eps=child.eps, momentum=child.momentum)
            elif type(child) in (nn.BatchNorm1d, BatchNorm1d):
                new = SyncBatchNorm1d(
                    child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                    track_running_stats=child.track_running_stats,
                )
            else:
                continue
            new.track_running_stats = child.track_running_stats
            new.to(device=child.weight.device, dtype=child.weight.dtype)  # before loading: no rounding
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(parent, name, new)
    return module


# --------------------------------------------------------------------------- training


def shard(n: int, info: DistInfo) -> tuple[int, int]:
    """This rank's contiguous [lo, hi) of a global batch of ``n`` events."""
    return n * info.rank // info.world_size, n * (info.rank + 1) // info.world_size


def global_steps(n_train: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """The single-process batches, less a last one with fewer events than ranks."""
    steps = batches(n_train, batch_size)
    if len(steps) > 1 and steps[-1][1] - steps[-1][0] < world_size:
        steps.pop()
    return steps


@torch.no_grad()
def predict(model: nn.Module, p4: torch.Tensor, mask: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Logits of ``model`` on the events, in eval mode, as (1, n)."""
    was_training = model.training
    model.eval()
    try:
        out = torch.cat([model(p4[s : s + chunk], mask[s : s + chunk]) for s in range(0, p4.shape[0], chunk)])
    finally:
        model.train(was_training)
    return out.unsqueeze(0)


def _train_epoch(
    ddp: DistributedDataParallel,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    tensors: Tensors,
    order: torch.Tensor,
    steps: list[tuple[int, int]],
    terms: list[PenaltyTerm],
    info: DistInfo,
) -> tuple[float, float, int]:
    """One epoch of this rank's shares; returns the global-batch BCE and penalty means, events."""
    ddp.train()
    acc = torch.zeros(2, dtype=torch.float64, device=info.device)  # Σ_batches n·BCE share, n·penalty share
    count = 0
    for start, stop in steps:
        idx = order[start:stop]
        lo, hi = shard(stop - start, info)
        mine = idx[lo:hi]
        w_batch = tensors.weight[idx].sum().clamp_min(1e-30)
        p4, mask, label, weight = tensors.p4[mine], tensors.mask[mine], tensors.label[mine], tensors.weight[mine]
        with shared_batch_statistics(model) as shared:
            logits = ddp(p4, mask)
            wbce = (F.binary_cross_entropy_with_logits(logits, label, reduction="none") * weight).sum()
            loss = wbce * (info.world_size / w_batch)
            penalty = torch.zeros((), dtype=loss.dtype, device=loss.device)
            if terms:

                def fn(x, m=None, _model=model):
                    if m is None:
                        m = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
                    with shared.reusing():
                        return _model(x, m)

                batch = Batch(p4=p4, mask=mask, label=label, weight=weight, logits=logits if shared.exact else None)
                # a penalty is a (weighted) mean over this rank's events: scaled by the rank's share
                # of the global batch, the ranks' average is the mean over the global batch
                shares = {True: weight.sum() / w_batch, False: (hi - lo) / (stop - start)}
                for term in terms:
                    share = shares[term.penalty.weighted] * info.world_size
                    penalty = penalty + term.lam * share * term.penalty(fn, batch)
        (loss + penalty).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n = stop - start
        acc[0] += (wbce.detach() / w_batch).double() * n
        acc[1] += penalty.detach().double() * n / info.world_size
        count += n
    if info.world_size > 1:
        dist.all_reduce(acc)
    return float(acc[0]) / count, float(acc[1]) / count, count


def _buffer_sync(enabled: bool) -> dict[str, bool]:
    """DDP's option to broadcast rank 0's buffers before each forward (named differently across torch versions)."""
    import inspect

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": enabled}


def _copy_into(ens_state: tuple[dict, dict], m: int, model: nn.Module) -> None:
    """Write ``model``'s parameters and buffers into member m's slice of a stacked state."""
    params, buffers = ens_state
    with torch.no_grad():
        for k, v in model.named_parameters():
            params[k][m].copy_(v)
        for k, v in model.named_buffers():
            buffers[k][m].copy_(v)


def train_ensemble_ddp(
    job: EnsembleJob,
    tensors: Tensors,
    info: DistInfo,
    directory: FractionDir | None = None,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    sync_batchnorm: bool = True,
) -> dict[str, Any]:
    """Train the members of ``job`` one after the other, each data-parallel on every rank.

    Called on every rank; returns the results (those of :func:`symfw.core.training.train_ensemble`,
    ``mode`` ``"ddp"``) on every rank. ``on_epoch`` is called on rank 0 only, with the epoch record
    of the member being trained (``member``, ``members`` (its entry), ``epoch``, ``epochs``,
    ``n_members``, ``spec``, ``fraction``).
    """
    spec, cfg, device = job.spec, job.spec.training, info.device
    registry = job.registry or get_registry()
    n_members = len(job.seeds)
    train_idx = torch.as_tensor(job.split.train, dtype=torch.long)
    val_t = torch.as_tensor(job.split.val, device=device)
    val_p4, val_mask = tensors.p4[val_t], tensors.mask[val_t]
    steps = global_steps(len(train_idx), cfg.batch_size, info.world_size)
    if cfg.batch_size < 2 * info.world_size:
        raise UsageError(
            f"--batch-size {cfg.batch_size} is too small for {info.world_size} rank(s): "
            f"each rank needs at least 2 events of every batch (use >= {2 * info.world_size})"
        )
    ens = Ensemble(spec, job.seeds, device=device, registry=registry, vectorize=False, dtype=tensors.p4.dtype)
    penalties = penalty_terms(spec, ens.base.group, registry)
    reason = (
        f"DistributedDataParallel on {info.world_size} rank(s) ({info.backend}), members one after the other, "
        f"{'synchronised' if sync_batchnorm else 'per-rank'} batch norm"
    )

    def load() -> dict[str, Any] | None:
        ckpt = directory.load_checkpoint("cpu") if (directory is not None and resume) else None
        if ckpt is not None and ckpt.get("mode") != MODE:
            raise UsageError(
                f"{directory.root}: the checkpoint was written by single-process training; "
                "resume it without torchrun/--ddp"
            )
        return ckpt

    ckpt = on_main(info, load)
    if ckpt is not None:
        ens.load_state((ckpt["params"], ckpt["buffers"]))
        history, train_time = ckpt["history"], ckpt["train_time_s"]
        best_state = (ckpt["best"]["params"], ckpt["best"]["buffers"])
        best_state = tuple({k: v.to(device) for k, v in part.items()} for part in best_state)
        best_auc, best_epoch = list(ckpt["best"]["auc"]), list(ckpt["best"]["epoch"])
        first, first_epoch, opt_state = ckpt["member"], ckpt["epoch"], ckpt["optimizer"]
        if first_epoch >= cfg.epochs:
            first, first_epoch, opt_state = first + 1, 0, None
    else:
        history, train_time = [], 0.0
        best_state = ens.state()
        best_auc, best_epoch = [-math.inf] * n_members, [0] * n_members
        first, first_epoch, opt_state = 0, 0, None

    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        for m in range(first, n_members):
            model = ens.member(m).train()
            if sync_batchnorm and info.world_size > 1:
                convert_sync_batchnorm(model)
            ddp = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None, **_buffer_sync(not sync_batchnorm)
            )
            opt = adamw(list(model.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
            if m == first and opt_state is not None:
                opt.load_state_dict(opt_state)
            for epoch in range(first_epoch if m == first else 0, cfg.epochs):
                t0 = time.perf_counter()
                torch.manual_seed(penalty_seed([job.seeds[m]], epoch))
                terms = [PenaltyTerm(ref.name, pen, lam_at(ref, epoch)) for ref, pen in penalties]
                order = batch_order(train_idx, [job.seeds[m]], epoch, device)[0]
                loss, pen, _ = _train_epoch(ddp, model, opt, tensors, order, steps, terms, info)
                _copy_into((ens.params, ens.buffers), m, model)
                if not info.is_main:
                    continue
                val = _member_metrics(tensors, job.split.val, predict(model, val_p4, val_mask))[0]
                auc = val["auc"] if math.isfinite(val["auc"]) else -math.inf
                if auc > best_auc[m]:
                    best_auc[m], best_epoch[m] = auc, epoch + 1
                    _copy_into(best_state, m, model)
                train_time += time.perf_counter() - t0
                entry = {
                    "member": m,
                    "seed": job.seeds[m],
                    "loss": loss,
                    **({"penalty": pen, "lam": {t.name: t.lam for t in terms}} if penalties else {}),
                    "val": val,
                }
                if len(history) <= epoch:
                    history.append({"epoch": epoch + 1, "members": []})
                history[epoch]["members"].append(M.jsonable(entry))
                if directory is not None:
                    params, buffers = ens.state()
                    directory.save_checkpoint(
                        {
                            "epoch": epoch + 1,
                            "member": m,
                            "params": params,
                            "buffers": buffers,
                            "optimizer": opt.state_dict(),
                            "best": {"params": best_state[0], "buffers": best_state[1], "auc": best_auc,
                                     "epoch": best_epoch},
                            "history": history,
                            "train_time_s": train_time,
                            "mode": MODE,
                            "mode_reason": reason,
                            "seeds": job.seeds,
                            "world_size": info.world_size,
                        }
                    )
                    directory.write_metrics(history)
                if on_epoch is not None:
                    on_epoch(
                        {"epoch": epoch + 1, "epochs": cfg.epochs, "member": m, "n_members": n_members,
                         "members": [history[epoch]["members"][-1]], "spec": spec.name, "fraction": job.split.fraction,
                         "lr": cfg.lr}
                    )

    def final() -> dict[str, Any]:
        results = _final_results(job, ens, tensors, history, best_state, best_epoch, train_time, MODE, reason)
        results["world_size"] = info.world_size
        if directory is not None:
            directory.write_results(results)
        return results

    return on_main(info, final)


def run_training_ddp(
    spec: Spec,
    data: EventData,
    settings: RunSettings,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    registry=None,
    on_epoch: EpochCallback | None = None,
    dtype: torch.dtype = torch.float32,
    info: DistInfo | None = None,
    sync_batchnorm: bool = True,
) -> dict[str, Any]:
    """:func:`symfw.core.training.run_training`, data-parallel over the initialised process group.

    Call it on every rank with the same arguments (each rank loads the same ``data``); every
    rank returns the same results. Only rank 0 writes ``out``.
    """
    info = info or current()
    split = prepare_split(data, settings)
    check_data_fits(spec, data, registry)
    data_record = {"data": data.describe(), "split": split.describe()}
    run = RunDir(Path(out)) if out is not None else None
    if run is not None:
        on_main(info, lambda: run.start(spec, settings.record(), data_record, resume))
    tensors = Tensors.from_data(data, info.device, dtype)
    seeds = member_seeds(settings.seed, settings.seeds)
    per_fraction = []
    for fraction in sorted(settings.fractions):
        directory = run.fraction(fraction) if run is not None else None
        if directory is not None and resume:
            done = on_main(info, lambda d=directory: d.results() if d.done else None)
            if done is not None:
                per_fraction.append(done)
                continue
        job = EnsembleJob(
            spec=spec,
            split=split.with_fraction(fraction),
            seeds=seeds,
            device=info.device,
            vectorize="no",
            train_pt_max=settings.train_pt_max,
            registry=registry,
            base_seed=settings.seed,
        )
        per_fraction.append(
            train_ensemble_ddp(job, tensors, info, directory, resume=resume, on_epoch=on_epoch,
                               sync_batchnorm=sync_batchnorm)
        )
    results = M.jsonable({"spec": spec.name, "settings": settings.record(), **data_record, "fractions": per_fraction})
    if run is not None:
        on_main(info, lambda: run.write_results(results))
    return results


# --------------------------------------------------------------------------- local launch


def free_port() -> int:
    """A TCP port free on this machine now (for a single-node rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank: int, nproc: int, port: int, threads: int, queue, fn: Callable, args: tuple) -> None:
    """Entry point of a spawned rank: torchrun's environment, then ``fn(*args)``."""
    os.environ.update(
        RANK=str(local_rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    torch.set_num_threads(threads)
    try:
        value = ("ok", fn(*args))
    except SymfwError as exc:
        value = ("error", exc)
    queue.put((local_rank, value))
    end_process(0)


def launch(nproc: int, fn: Callable, *args: Any, threads: int | None = None) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` new processes on this machine, as torchrun would start them.

    Each process gets torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT`` on a free local port) and ``threads`` CPU threads (default:
    this machine's cores shared evenly); ``fn`` usually calls :func:`process_group`. Processes
    are started with ``torch.multiprocessing`` (spawn), so ``fn`` must be importable. Returns the
    ranks' return values; a symfw error raised by any rank is raised here, and a rank that
    crashes before returning ends the others and raises :class:`symfw.core.errors.SymfwError`.
    """
    import torch.multiprocessing as mp

    if nproc < 1:
        raise UsageError(f"--ddp must be >= 1 process, got {nproc}")
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    queue = mp.get_context("spawn").SimpleQueue()
    ctx = mp.start_processes(
        _spawned, args=(nproc, free_port(), threads, queue, fn, args), nprocs=nproc, join=False, start_method="spawn"
    )
    values: dict[int, Any] = {}

    def drain():
        while not queue.empty():
            rank, value = queue.get()
            values[rank] = value

    try:
        while not ctx.join(timeout=0.2):
            drain()
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        drain()
        errors = [v[1] for _, v in sorted(values.items()) if v[0] == "error"]
        if errors:
            raise errors[0] from None
        if len(values) == nproc:  # every rank had returned; one crashed while its interpreter shut down
            return [values[r][1] for r in range(nproc)]
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise SymfwError(f"distributed training failed on rank {exc.error_index}: {lines[-1].strip()}") from None
    drain()
    errors = [v[1] for _, v in sorted(values.items()) if v[0] == "error"]
    if errors:
        raise errors[0]
    return [values[r][1] for r in range(nproc)]
