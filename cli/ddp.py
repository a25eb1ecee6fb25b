"""The data-parallel path of ``symfw train`` and ``symfw compare``: started by torchrun, or by
``--ddp N`` (spawned here).

Under torchrun every process runs the whole command; rank 0 shows the progress, writes the
outputs and prints the tables, the other ranks train and stay silent. With ``--ddp N`` this
process spawns N ranks on this machine (:func:`symfw.core.distributed.launch`), waits for them,
and prints rank 0's results itself. Each rank runs the one orchestration with
``parallel=<its process group>``. See docs/scaling.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from symfw.core.errors import SymfwError, UsageError


@dataclass(frozen=True)
class DdpRequest:
    """What every rank needs to train (picklable: sent to spawned ranks). ``command`` is
    ``train`` (one spec) or ``compare`` (with ``options`` for :func:`run_compare`)."""

    command: str
    specs: tuple[Any, ...]
    settings: Any
    out: Path
    resume: bool
    device: str
    registry: tuple[Path, ...]
    quiet: bool
    options: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)  # format, stream, chunk_events of --data


def _rank_main(request: DdpRequest, torchrun: bool = False) -> dict[str, Any] | None:
    """One rank: join the group, load the data, train; rank 0 returns the results.

    Under torchrun the other ranks end their process here (:func:`end_process`), silently: rank 0
    reports the results, or the error every rank raised (a rank exiting with an error code would
    make torchrun stop rank 0 at once).
    """
    from symfw.core.compare import run_compare
    from symfw.core.distributed import end_process, process_group
    from symfw.core.training import run_training

    from ._common import EpochProgress, load_data, registry_with

    reg = registry_with(list(request.registry))
    with process_group(request.device) as info:
        try:
            quiet = request.quiet or not info.is_main
            s = request.settings
            data = load_data(s.data, s.events, s.seed, quiet, reg, **request.data_options)
            with EpochProgress(quiet, show_lr=request.options.get("lr_grid") is not None
                               or request.options.get("lam_grid") is not None) as progress:
                if request.command == "train":
                    results = run_training(request.specs[0], data, s, request.out, resume=request.resume,
                                           registry=reg, on_epoch=progress, parallel=info)
                else:
                    results = run_compare(list(request.specs), data, s, request.out, resume=request.resume,
                                          registry=reg, on_epoch=progress, parallel=info, **request.options)
        except SymfwError:
            if torchrun and not info.is_main:
                end_process(0)
            raise
    if torchrun and not info.is_main:
        end_process(0)
    return results if info.is_main else None


def wanted(nproc: int | None) -> bool:
    """Whether the command trains data-parallel: ``--ddp N`` (at most 4 per CPU core), or started by torchrun."""
    from symfw.core.distributed import launched_by_torchrun

    from ._common import max_processes

    if nproc is not None and nproc < 1:
        raise UsageError(f"--ddp must be >= 1, got {nproc}")
    if nproc is not None and nproc > max_processes():
        raise UsageError(f"--ddp must be at most {max_processes()} (4 per CPU core of this machine), got {nproc}")
    return nproc is not None or launched_by_torchrun()


def run_distributed(
    nproc: int | None, request: DdpRequest, threads: int | None = None, vectorize: str = "auto"
) -> dict[str, Any] | None:
    """Train data-parallel; the results on rank 0 (and with ``--ddp``), None on other ranks."""
    from symfw.core.distributed import launch, launched_by_torchrun

    if vectorize == "yes":
        raise UsageError("--vectorize yes: data-parallel training trains one member at a time")
    if nproc is not None and launched_by_torchrun():
        raise UsageError("--ddp: this process was started by torchrun already; leave --ddp out")
    if nproc is None:
        return _rank_main(request, torchrun=True)
    if nproc < 1:
        raise UsageError(f"--ddp must be >= 1, got {nproc}")
    return launch(nproc, _rank_main, request, threads=threads)[0]
