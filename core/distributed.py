"""Data-parallel training over many processes: the :class:`DataParallelStepper` of the one loop.

Launch with torchrun (one node or many), or let symfw spawn the ranks on this machine::

    torchrun --nproc-per-node 2 -m symfw train hybrid --data z.npz --out runs/hybrid
    symfw train hybrid --data z.npz --ddp 2 --out runs/hybrid
    symfw compare pfn hybrid --data z.npz --ddp 2 --out cmp/

Each process (rank) reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: **gloo** on CPU, **NCCL** on CUDA
(rank r uses ``cuda:LOCAL_RANK``). Every rank runs the same orchestration
(:func:`symfw.core.executors.train_runs`) and the same epoch loop
(:func:`symfw.core.training.train_ensemble`) with a :class:`DataParallelStepper`:

- **Data.** Every rank holds the events and makes the same split. Member m's batch order is the
  single-process one; rank r trains on the r-th contiguous shard of every global batch of
  ``batch_size`` events. A last global batch with fewer events than ranks is dropped.
- **Gradients.** Rank r's loss is ``world_size · Σ_{i∈r} w_i·ℓ_i / Σ_{i∈batch} w_i``; the
  gradients are summed over ranks (one all-reduce per step) and divided by the world size, so
  they are exactly the single-process gradients of the global batch whatever the weights. A
  penalty (a mean over the rank's events, as the interface asks) is scaled by the rank's share
  of the batch's weight (or events, when unweighted) — not SEAL's ``relative`` option, which
  divides by each rank's own output variance.
- **Batch norm.** :func:`convert_sync_batchnorm` replaces ``nn.BatchNorm1d`` and
  :class:`~symfw.core.nn.MaskedBatchNorm` by versions whose statistics cover the global batch
  (one all-reduce per layer, autograd through it). Penalty passes reuse the recorded statistics
  and run no collective. Other normalisation layers keep per-rank statistics.
- **Ensembles, metrics, files.** The members of ``--seeds S`` train one after the other within
  every step. Rank 0 evaluates, writes the run directory and the same
  :class:`~symfw.core.checkpoint.Checkpoint` as a single process (so a run can be resumed on
  another world size, or in one process); results are broadcast so every rank returns them.

Hence W ranks compute what one process computes with the same ``batch_size``, up to the order
of floating-point sums (``tests/core/test_distributed.py`` measures it). Random penalties and
augmentation draw per rank, so they do not reproduce the single-process draws. See
``docs/scaling.md``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from .errors import SymfwError, UsageError
from .interfaces import Batch
from .nn import BatchNorm1d, MaskedBatchNorm
from .training import Stepper, batches, resolve_device

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
    sync_batchnorm: bool = True  # batch statistics over the global batch (False: per rank)

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
    dev = resolve_device(str(device))
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {local} has no GPU: {torch.cuda.device_count()} CUDA device(s) on this node; "
                "start at most that many processes per node"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
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

    def local_statistics(self) -> bool:
        return not _syncing(self)

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


class DataParallelStepper(Stepper):
    """The ensemble's members one after the other, each data-parallel over the process group:
    rank r's shard of every batch, losses scaled by the shard's share, gradients summed over
    ranks (see the module docstring); only rank 0 evaluates and writes (:meth:`on_main`)."""

    mode = MODE

    def __init__(self, ens, info: DistInfo):
        sync = info.sync_batchnorm and info.world_size > 1
        super().__init__(ens, f"data-parallel on {info.world_size} rank(s) ({info.backend}), members one "
                              f"after the other, {'synchronised' if sync else 'per-rank'} batch norm")
        if sync:
            convert_sync_batchnorm(ens.base)
        self.info, self.is_main = info, info.is_main

    def steps(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        world = self.info.world_size
        if batch_size < 2 * world:
            raise UsageError(
                f"training.batch_size {batch_size} is too small for {world} rank(s): "
                f"each rank needs at least 2 events of every batch (use >= {2 * world})"
            )
        return global_steps(n, batch_size, world)

    def step(self, batch: Batch, terms) -> tuple[torch.Tensor, torch.Tensor]:
        ens, world = self.ens, self.info.world_size
        lo, hi = shard(batch.p4.shape[1], self.info)
        terms = [t for t in terms if t.lam != 0]
        losses, penalties = [], []
        for m in range(len(ens)):
            w = batch.weight[m]
            shares = (w[lo:hi].sum() / w.sum().clamp_min(1e-30), (hi - lo) / w.shape[0])
            total, loss, penalty = ens.member_loss(*ens._slice(m), batch.p4[m, lo:hi], batch.mask[m, lo:hi],
                                                   batch.label[m, lo:hi], w[lo:hi], terms, shares)
            (total * world).backward()
            losses.append(loss)
            penalties.append(penalty)
        if world > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ens.parameters()]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= world
            offset = 0
            for p in ens.parameters():
                p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        return torch.stack(losses), torch.stack(penalties)

    def reduce(self, totals: torch.Tensor) -> torch.Tensor:
        if self.info.world_size > 1:
            totals = totals.clone()
            dist.all_reduce(totals)
        return totals

    def on_main(self, fn: Callable[[], Any]) -> Any:
        return on_main(self.info, fn)


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
