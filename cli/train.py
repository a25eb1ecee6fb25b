"""``symfw train``: train an ensemble of one spec, write a run directory, print held-out metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from symfw.core.compare import ensemble_value
from symfw.core.io import check_writable
from symfw.core.runs import safe_dirname

from . import ddp as distributed
from ._common import (
    BatchOpt,
    CompileOpt,
    CutContextOpt,
    ChunkOpt,
    DataOpt,
    DdpOpt,
    DeviceOpt,
    EpochProgress,
    EpochsOpt,
    EventsOpt,
    FormatOpt,
    FractionsOpt,
    JsonOpt,
    LrOpt,
    PtMaxOpt,
    QuietOpt,
    RegistryOpt,
    ResumeOpt,
    SeedOpt,
    StreamOpt,
    ThreadsOpt,
    VectorizeOpt,
    ScheduleOpt,
    WdOpt,
    check_device,
    check_vectorize,
    err_console,
    extrapolation_table,
    load_data,
    load_specs,
    make_settings,
    number,
    pm,
    registry_with,
    results_console,
    set_threads,
    task_columns,
)


def train_table(results: dict[str, Any], registry, task_options: dict[str, Any] | None = None) -> Table:
    main = max(results["fractions"], key=lambda f: f["fraction"])
    task = main.get("task", "binary")
    columns = task_columns(task, registry, task_options)  # e.g. no four-vector resolutions for one target
    table = Table(title=f"{results['spec']}: held-out metrics, task {task} (mean ± std over members)",
                  title_justify="left")
    primary = main.get("primary", "auc")
    label = dict(columns).get(primary, primary)
    voted = len(main["members"]) > 1
    heads = ("fraction", "train events", f"final test {label}", f"best-val test {label}",
             *([f"ensemble test {label}"] if voted else []), "best epoch",
             *[f"test {h}" for k, h in columns if k != primary], "time (s)")
    for col in heads:
        table.add_column(col, justify="right")
    for f in results["fractions"]:
        s = f["summary"]
        table.add_row(
            f"{f['fraction']:g}", f"{f['n_train']:,}", pm(s["final_test"][primary]), pm(s["best_test"][primary]),
            *([number(ensemble_value(f))] if voted else []), pm(s["best_epoch"], 1), *[pm(s["final_test"].get(k), 1 if k.startswith("rej") else 4)
                                      for k, _ in columns if k != primary],
            f"{f['train_time_s']:.1f}",
        )
    table.caption = (
        f"{len(main['members'])} members, {main['epochs']} epochs, {main['parameters']:,} parameters each, "
        f"{main['mode']} on {main['device']}; test split used only for these numbers"
        + ("; ensemble = the members voting as one model, final epoch" if voted else "")
    )
    reference = (main.get("report") or {}).get("sum_of_inputs")
    if reference:  # what a four-momentum regression must beat
        table.caption += "\nreference, the plain sum of the inputs: " + ", ".join(
            f"{h} {reference[k]:.4f}" for k, h in columns if k in reference)
    return table


def train(
    spec: Annotated[str, typer.Argument(help="A spec file (.toml) or a preset name.")],
    data: DataOpt = "zmumu",
    events: EventsOpt = None,
    format: FormatOpt = None,
    stream: StreamOpt = None,
    chunk_events: ChunkOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    weight_decay: WdOpt = None,
    schedule: ScheduleOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Ensemble members (different inits and batch orders).")] = 1,
    seed: SeedOpt = 0,
    fractions: FractionsOpt = None,
    train_pt_max: PtMaxOpt = None,
    cut_context: CutContextOpt = "leading-pt",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<spec name>).")] = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    vectorize: VectorizeOpt = "auto",
    threads: ThreadsOpt = None,
    compile_: CompileOpt = None,
    ddp: DdpOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    registry: RegistryOpt = None,
):
    """Train an ensemble of SPEC and report held-out metrics; everything lands in a run directory.

    Example: symfw train hybrid --data zmumu --events 20000 --epochs 30 --seeds 3 --out runs/hybrid
    Regression: symfw build --preset pfn --task regression --out r.toml && symfw train r.toml --data zmumu
    Data-parallel: symfw train hybrid --data z.npz --ddp 2 (or: torchrun --nproc-per-node 2 -m symfw train ...)
    """
    from symfw.core.plots import write_plots
    from symfw.core.training import run_training

    reg = registry_with(registry)
    settings = make_settings(data, events, seed, seeds, fractions, train_pt_max, cut_context, reg, compile_)
    dev = check_device(device)
    mode = check_vectorize(vectorize)
    set_threads(threads)
    (the_spec,) = load_specs([spec], reg, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                        schedule=schedule)
    out = out if out is not None else Path("runs") / safe_dirname(the_spec.name)  # never outside runs/
    check_writable(out)
    if distributed.wanted(ddp):
        request = distributed.DdpRequest("train", (the_spec,), settings, out, resume, str(dev), tuple(registry or ()),
                                         quiet, data_options={"format": format, "stream": stream,
                                                              "chunk_events": chunk_events})
        results = distributed.run_distributed(ddp, request, threads, mode)
        if results is None:  # a rank other than 0: rank 0 reports
            return
    else:
        events_data = load_data(settings.data, settings.events, settings.seed, quiet, reg, format, stream, chunk_events)
        with EpochProgress(quiet) as progress:
            results = run_training(
                the_spec, events_data, settings, out, resume=resume, device=dev, vectorize=mode,
                registry=reg, on_epoch=progress,
            )
    plots = write_plots([results], out, registry=reg)
    if json_:
        typer.echo(json.dumps(results, indent=2))
        return
    console = results_console()
    console.print(train_table(results, reg, the_spec.task.options))
    main = max(results["fractions"], key=lambda f: f["fraction"])
    table = extrapolation_table({the_spec.name: main["extrapolation"]}, main.get("primary", "auc"))
    if table is not None:
        console.print(table)
    if not quiet:
        err_console.print(f"run directory: {out}  (plots: {', '.join(p.name for p in plots)})")
