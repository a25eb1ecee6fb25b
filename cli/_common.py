"""What the commands share: the app factory and its error rendering, option aliases, consoles,
progress bars, parsing of option values, and the tables of held-out metrics.

Commands import from here, never from each other; ``app.py`` only wires them together.
Domain errors become one line on stderr: exit code 2 for bad input (:class:`UsageError` and
its kinds), 1 for failures while running; an operating-system error or running out of memory
that no check foresaw is one line with exit code 1 as well. ``SYMFW_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from symfw.core.errors import SymfwError, UsageError

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False, soft_wrap=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"Warning: {message}", err=True)


class SymfwGroup(TyperGroup):
    """Renders symfw's domain errors as one clean line with the right exit code."""

    def invoke(self, ctx):
        warnings.showwarning = _one_line_warning  # symfw's warnings: "Warning: …", one line each
        try:
            return super().invoke(ctx)
        except SymfwError as exc:
            if os.environ.get("SYMFW_DEBUG") == "1":
                raise
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted; completed work is saved (resume with --resume where supported).", err=True)
            raise typer.Exit(130) from None
        except (OSError, MemoryError) as exc:  # the last resort: what no check before the work foresaw
            if os.environ.get("SYMFW_DEBUG") == "1":
                raise
            what = "out of memory" if isinstance(exc, MemoryError) else (
                f"{exc.filename + ': ' if getattr(exc, 'filename', None) else ''}{exc.strerror or exc}")
            typer.echo(f"Error: {what} ({type(exc).__name__}; completed work is saved)", err=True)
            raise typer.Exit(1) from None


def make_app(help: str) -> typer.Typer:
    """A typer app with symfw's conventions (used for the root and every command group)."""
    return typer.Typer(
        help=help, cls=SymfwGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


# -- option aliases reused across commands ----------------------------------------------------
RegistryOpt = Annotated[
    list[Path] | None,
    typer.Option("--registry", help="Extra registry TOML with [presets.NAME] tables (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries on stderr.")]
DataOpt = Annotated[str, typer.Option(
    "--data", help="A dataset plugin (zmumu: generated, seeded), or a data file in any format symfw reads "
                   "(.npz, .h5, .root; a quoted glob such as 'jets/*.root' reads several as one).")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="Read the data file as this format (default: chosen by content and extension; "
                     "`symfw plugins list` shows the file formats).")]
StreamOpt = Annotated[bool | None, typer.Option(
    "--stream/--no-stream", help="Read the data file in chunks instead of loading it (default: when its arrays "
                                 "would take more than a quarter of the available memory).", show_default=False)]
ChunkOpt = Annotated[int | None, typer.Option(
    "--chunk-events", help="Events read at once when streaming (default 65536): bounds the memory the events take.")]
EventsOpt = Annotated[int | None, typer.Option("--events", help="Events to generate (or the first N of a file).")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: the spec's, 100).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="AdamW learning rate (default: the spec's).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Batch size (default: the spec's, 128).")]
WdOpt = Annotated[float | None, typer.Option("--weight-decay", help="AdamW weight decay (default: the spec's, 0.01).")]
ScheduleOpt = Annotated[str | None, typer.Option(
    "--schedule", help="Learning rate per epoch: constant, or cosine (from --lr to 0) (default: the spec's, constant).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Base seed: data, split, and every member's seed.")]
FractionsOpt = Annotated[
    str | None, typer.Option("--fractions", help="Training fractions to sweep, e.g. 0.05,0.1,0.2,0.5,1.0.")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last completed epoch.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto (cuda when available).")]
VectorizeOpt = Annotated[
    str, typer.Option("--vectorize", help="Ensemble training: auto (one after the other on the CPU, vmap on a GPU when possible), yes (vmap), or no (one after the other).")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads torch may use (default: torch's choice; 1 on a busy shared machine)."),
]
PtMaxOpt = Annotated[
    float | None,
    typer.Option("--train-pt-max", help="Train and validate only below this value of the breaking variable "
                 "(leading-particle pT, GeV; see --cut-context); report metrics on both sides."),
]
CutContextOpt = Annotated[
    str, typer.Option("--cut-context", help="The breaking context whose variable --train-pt-max cuts (default leading-pt).")
]
CompileOpt = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="Run the training step through torch.compile, or eagerly "
                 "(default: where it pays, docs/performance.md)."),
]
DdpOpt = Annotated[
    int | None,
    typer.Option("--ddp", help="Data-parallel on N local processes (torchrun -m symfw ... also works)."),
]

# options that name a spec field: a core error about the field names the option too
SPEC_OPTIONS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "weight_decay": "--weight-decay",
                "schedule": "--schedule"}


def registry_with(extra: list[Path] | None):
    from symfw.core.registry import get_registry

    return get_registry(tuple(extra or ()))


def parse_floats(text: str, option: str, example: str = "0.1,0.5,1.0") -> list[float]:
    """Comma-separated numbers of a CLI option; an empty list or a non-number is a UsageError."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{option}: give comma-separated numbers, e.g. {example}")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise UsageError(f"{option}: '{part}' is not a number") from None
    return values


def make_settings(data, events, seed, seeds, fractions, train_pt_max, cut_context="leading-pt", registry=None,
                  compile=None):
    from symfw.core.training import RunSettings

    if registry is not None:  # before any data is made: the cut variable must exist
        try:
            registry.get("context", cut_context)
        except SymfwError as exc:
            raise UsageError(f"--cut-context: {exc}") from None

    parsed = (1.0,) if fractions is None else tuple(parse_floats(fractions, "--fractions", "0.1,0.5,1.0"))
    try:
        return RunSettings(data=str(data), events=events, seed=seed, seeds=seeds, fractions=parsed,
                           train_pt_max=train_pt_max, cut_context=cut_context, compile=compile)
    except UsageError as exc:  # the settings' field names are the options' names
        raise UsageError(f"--{str(exc).replace('_', '-')}") from None


def load_specs(sources: list[str], registry, **overrides):
    """Specs from files or presets, with ``[training]`` overrides from options (None keeps the spec's)."""
    from symfw.core.spec import load_spec
    from symfw.core.training import with_training_overrides

    specs = []
    for source in sources:
        spec = load_spec(source, registry=registry)
        try:
            specs.append(with_training_overrides(spec, **overrides))
        except UsageError as exc:
            field = str(exc).split(":", 1)[0].removeprefix("training.")
            raise UsageError(f"{SPEC_OPTIONS.get(field, field)}: {str(exc).split(':', 1)[1].strip()}") from None
    return specs


def max_processes() -> int:
    """The most threads (``--threads``) or local processes (``--ddp``) symfw starts: 4 per CPU core."""
    return 4 * (os.cpu_count() or 1)


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    if threads > max_processes():
        raise UsageError(f"--threads must be at most {max_processes()} (4 per CPU core of this machine), got {threads}")
    import torch

    torch.set_num_threads(threads)


def check_vectorize(value: str) -> str:
    value = value.strip().lower()
    if value not in ("auto", "yes", "no"):
        raise UsageError(f"--vectorize must be auto, yes or no, got '{value}'")
    return value


def check_device(device: str):
    from symfw.core.training import resolve_device

    try:
        return resolve_device(device)
    except UsageError as exc:
        raise UsageError(f"--{exc}") from None


def load_data(source: str, events: int | None, seed: int, quiet: bool, registry, format: str | None = None,
              stream: bool | None = None, chunk_events: int | None = None):
    """The events of ``--data``, with a progress bar while a generator runs (a file: loaded, or
    streamed with ``--stream``, ``--format`` and ``--chunk-events`` as given)."""
    from symfw.core.data import resolve_data

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, disable=quiet, transient=True,
    ) as progress:
        task = progress.add_task(f"data {source}", total=None)

        def report(done, total):
            progress.update(task, completed=done, total=total)

        return resolve_data(source, n_events=events, seed=seed, registry=registry, progress=report, format=format,
                            stream=stream, chunk_events=chunk_events)


class EpochProgress:
    """A rich progress bar per (spec, fraction[, trial: learning rate, λ, seeds]): member-epochs done, mean
    validation metric. ``show_lr``: the trainings of a choice on validation, labelled by their trial."""

    def __init__(self, quiet: bool, show_lr: bool = False):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=err_console, disable=quiet,
        )
        self.tasks: dict[tuple[str, float, float | None], Any] = {}
        self.show_lr = show_lr

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, record: dict[str, Any]) -> None:
        lr = record.get("lr") if self.show_lr else None
        lams = tuple(sorted((record.get("lam") or {}).items())) if self.show_lr else ()
        seed = record["members"][0].get("seed") if self.show_lr and record["members"] else None
        key = (record["spec"], record["fraction"], lr, lams, seed)
        n = len(record["members"])
        if key not in self.tasks:
            label = f"{record['spec']}" + (f" f={record['fraction']:g}" if record["fraction"] != 1 else "")
            label += f" lr={lr:g}" if lr is not None else ""
            label += "".join(f" λ={v:g}" for _, v in lams[:1])
            label += f" seed {seed}" if seed is not None else ""
            self.tasks[key] = self.progress.add_task(f"{label} ×{n}", total=record["epochs"] * n, status="")
        metric = record.get("primary", "auc")
        values = [m["val"][metric] for m in record["members"] if m["val"].get(metric) is not None]
        status = f"epoch {record['epoch']}/{record['epochs']}"
        if values:
            status += f"  val {metric_label(metric)} {sum(values) / len(values):.4f}"
        self.progress.update(self.tasks[key], completed=record["epoch"] * n, status=status)


class TaskProgress:
    """A rich progress bar of finished training tasks (executors that run elsewhere, e.g. Ray)."""

    def __init__(self, quiet: bool, label: str):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(), console=err_console, disable=quiet,
        )
        self.bar = self.progress.add_task(label, total=None, last="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, task, done: int, total: int) -> None:
        self.progress.update(self.bar, completed=done, total=total, last=f"done: {task.label}")


# -- tables ------------------------------------------------------------------------------------


def results_console() -> Console:
    """stdout; wide enough for the tables when not a terminal."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def pm(stat: dict[str, Any] | None, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None or (isinstance(stat["mean"], float) and math.isnan(stat["mean"])):
        return "–"
    std = stat.get("std")
    return f"{stat['mean']:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{stat['mean']:.{digits}f}"


def number(value: float | None, digits: int = 4) -> str:
    """A single value as the tables print it ("–" when missing or NaN)."""
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def metric_label(metric: str) -> str:
    return {"auc": "AUC"}.get(metric, metric)


def task_columns(task_name: str, registry, options: dict[str, Any] | None = None) -> tuple[tuple[str, str], ...]:
    """The (metric, header) columns the task (with its spec's ``options``) puts in the tables."""
    cls = registry.get("task", task_name)
    return tuple(cls(cls.Options.model_validate(options or {})).columns)


def extrapolation_table(entries: dict[str, dict | None], metric: str = "auc") -> Table | None:
    entries = {k: v for k, v in entries.items() if v}
    if not entries:
        return None
    pt_max = next(iter(entries.values()))["pt_max"]
    keys = [metric] + (["accuracy"] if metric != "accuracy" and "accuracy" in (next(iter(entries.values())).get("below") or {}) else [])
    variable = next(iter(entries.values())).get("variable", "leading-particle pT [GeV]").removesuffix(" [GeV]")
    table = Table(title=f"extrapolation: trained on {variable} < {pt_max:g} GeV (test events)", title_justify="left")
    table.add_column("spec", justify="right")
    for key in keys:
        table.add_column(f"{metric_label(key)} below", justify="right")
        table.add_column(f"{metric_label(key)} above", justify="right")
    for name, e in entries.items():
        below, above = e.get("below") or {}, e.get("above") or {}
        table.add_row(name, *[cell for key in keys for cell in (pm(below.get(key)), pm(above.get(key)))])
    return table
