"""``symfw train``: train an ensemble of one spec, write a run directory, print held-out metrics.

The options shared with ``symfw compare`` live here too (typer ``Annotated`` aliases), along
with the progress bar and the parsing that turns bad input into one-line errors.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from symfw.core.errors import UsageError

from .app import JsonOpt, QuietOpt, RegistryOpt, err_console, parse_floats, registry_with

# -- options shared by train and compare -----------------------------------------------------
DataOpt = Annotated[str, typer.Option("--data", help="A dataset plugin (zmumu: generated, seeded) or an .npz/.h5 file.")]
EventsOpt = Annotated[int | None, typer.Option("--events", help="Events to generate (or the first N of a file).")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: the spec's, 100).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="AdamW learning rate (default: the spec's).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Batch size (default: the spec's, 128).")]
WdOpt = Annotated[float | None, typer.Option("--weight-decay", help="AdamW weight decay (default: the spec's, 0.01).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Base seed: data, split, and every member's seed.")]
FractionsOpt = Annotated[
    str | None, typer.Option("--fractions", help="Training fractions to sweep, e.g. 0.05,0.1,0.2,0.5,1.0.")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last completed epoch.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto (cuda when available).")]
VectorizeOpt = Annotated[
    str, typer.Option("--vectorize", help="Ensemble training: auto (vmap when possible), yes, or no (sequential).")
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads torch may use (default: torch's choice; 1 on a busy shared machine)."),
]
PtMaxOpt = Annotated[
    float | None,
    typer.Option("--train-pt-max", help="Train and validate only below this leading-muon pT [GeV]; report AUC vs pT."),
]


def parse_fractions(text: str | None) -> tuple[float, ...]:
    return (1.0,) if text is None else tuple(parse_floats(text, "--fractions", "0.1,0.5,1.0"))


def make_settings(data, events, seed, seeds, fractions, train_pt_max):
    from symfw.core.training import RunSettings

    return RunSettings(
        data=str(data), events=events, seed=seed, seeds=seeds,
        fractions=parse_fractions(fractions), train_pt_max=train_pt_max,
    )


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def check_vectorize(value: str) -> str:
    value = value.strip().lower()
    if value not in ("auto", "yes", "no"):
        raise UsageError(f"--vectorize must be auto, yes or no, got '{value}'")
    return value


def load_data(source: str, events: int | None, seed: int, quiet: bool, registry):
    """The events of ``--data``, with a progress bar while a generator runs."""
    from symfw.core.data import resolve_data

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, disable=quiet, transient=True,
    ) as progress:
        task = progress.add_task(f"data {source}", total=None)

        def report(done, total):
            progress.update(task, completed=done, total=total)

        return resolve_data(source, n_events=events, seed=seed, registry=registry, progress=report)


class EpochProgress:
    """A rich progress bar per (spec, fraction[, learning rate]): member-epochs done, mean validation AUC."""

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
        key = (record["spec"], record["fraction"], lr)
        n = len(record["members"])
        if key not in self.tasks:
            label = f"{record['spec']}" + (f" f={record['fraction']:g}" if record["fraction"] != 1 else "")
            label += f" lr={lr:g}" if lr is not None else ""
            self.tasks[key] = self.progress.add_task(f"{label} ×{n}", total=record["epochs"] * n, status="")
        aucs = [m["val"]["auc"] for m in record["members"] if m["val"]["auc"] is not None]
        status = f"epoch {record['epoch']}/{record['epochs']}  val AUC {sum(aucs) / len(aucs):.4f}" if aucs else ""
        self.progress.update(self.tasks[key], completed=record["epoch"] * n, status=status)


def results_console() -> Console:
    """stdout; wide enough for the tables when not a terminal."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def pm(stat: dict[str, Any] | None, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None or (isinstance(stat["mean"], float) and math.isnan(stat["mean"])):
        return "–"
    std = stat.get("std")
    return f"{stat['mean']:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{stat['mean']:.{digits}f}"


def train_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"{results['spec']}: held-out metrics (mean ± std over members)", title_justify="left")
    for col in ("fraction", "train events", "final test AUC", "best-val test AUC", "best epoch",
                "test acc", "1/εB @ εS=0.3", "1/εB @ εS=0.5", "time (s)"):
        table.add_column(col, justify="right")
    for f in results["fractions"]:
        s = f["summary"]
        table.add_row(
            f"{f['fraction']:g}", f"{f['n_train']:,}", pm(s["final_test"]["auc"]), pm(s["best_test"]["auc"]),
            pm(s["best_epoch"], 1), pm(s["final_test"]["accuracy"]), pm(s["final_test"]["rej30"], 1),
            pm(s["final_test"]["rej50"], 1), f"{f['train_time_s']:.1f}",
        )
    main = max(results["fractions"], key=lambda f: f["fraction"])
    table.caption = (
        f"{len(main['members'])} members, {main['epochs']} epochs, {main['parameters']:,} parameters each, "
        f"{main['mode']} on {main['device']}; test split used only for these numbers"
    )
    return table


def extrapolation_table(entries: dict[str, dict | None]) -> Table | None:
    entries = {k: v for k, v in entries.items() if v}
    if not entries:
        return None
    pt_max = next(iter(entries.values()))["pt_max"]
    table = Table(title=f"extrapolation: trained on leading pT < {pt_max:g} GeV (test events)", title_justify="left")
    for col in ("spec", "AUC below", "AUC above", "accuracy below", "accuracy above"):
        table.add_column(col, justify="right")
    for name, e in entries.items():
        below, above = e.get("below") or {}, e.get("above") or {}
        table.add_row(name, pm(below.get("auc")), pm(above.get("auc")), pm(below.get("accuracy")), pm(above.get("accuracy")))
    return table


def train(
    spec: Annotated[str, typer.Argument(help="A spec file (.toml) or a preset name.")],
    data: DataOpt = "zmumu",
    events: EventsOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    weight_decay: WdOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Ensemble members (different inits and batch orders).")] = 1,
    seed: SeedOpt = 0,
    fractions: FractionsOpt = None,
    train_pt_max: PtMaxOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<spec name>).")] = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    vectorize: VectorizeOpt = "auto",
    threads: ThreadsOpt = None,
    ddp: Annotated[
        int | None,
        typer.Option("--ddp", help="Data-parallel (DDP) on N local processes; torchrun -m symfw train also works."),
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    registry: RegistryOpt = None,
):
    """Train an ensemble of SPEC and report held-out metrics; everything lands in a run directory.

    Example: symfw train hybrid --data zmumu --events 20000 --epochs 30 --seeds 3 --out runs/hybrid
    Data-parallel: symfw train hybrid --data z.npz --ddp 2 (or: torchrun --nproc-per-node 2 -m symfw train ...)
    """
    from symfw.core.plots import write_plots
    from symfw.core.spec import load_spec
    from symfw.core.training import resolve_device, run_training, with_training_overrides

    reg = registry_with(registry)
    settings = make_settings(data, events, seed, seeds, fractions, train_pt_max)
    dev = resolve_device(device)
    mode = check_vectorize(vectorize)
    set_threads(threads)
    the_spec = with_training_overrides(
        load_spec(spec, registry=reg), epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay
    )
    out = out if out is not None else Path("runs") / the_spec.name
    from symfw.core.distributed import launched_by_torchrun

    if ddp is not None or launched_by_torchrun():
        from .ddp import DdpRequest, train_distributed

        if mode == "yes":
            raise UsageError("--vectorize yes: data-parallel training trains one member at a time")
        request = DdpRequest(the_spec, settings, out, resume, str(dev), tuple(registry or ()), quiet)
        results = train_distributed(ddp, request, threads)
        if results is None:  # a rank other than 0: rank 0 reports
            return
    else:
        events_data = load_data(settings.data, settings.events, settings.seed, quiet, reg)
        with EpochProgress(quiet) as progress:
            results = run_training(
                the_spec, events_data, settings, out, resume=resume, device=dev, vectorize=mode,
                registry=reg, on_epoch=progress,
            )
    plots = write_plots([results], out)
    if json_:
        typer.echo(json.dumps(results, indent=2))
        return
    console = results_console()
    console.print(train_table(results))
    table = extrapolation_table({the_spec.name: max(results["fractions"], key=lambda f: f["fraction"])["extrapolation"]})
    if table is not None:
        console.print(table)
    if not quiet:
        err_console.print(f"run directory: {out}  (plots: {', '.join(p.name for p in plots)})")
