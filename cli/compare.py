"""``symfw compare SPEC_A SPEC_B ...``: train every spec on identical splits and seeds, then compare."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from symfw.core.errors import UsageError
from symfw.core.io import check_writable

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
    TaskProgress,
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
    max_processes,
    metric_label,
    number,
    parse_floats,
    pm,
    registry_with,
    results_console,
    set_threads,
)


def compare_table(summary: dict[str, Any]) -> Table:
    rows = summary["rows"]
    metric = summary.get("primary", "auc")
    label = metric_label(metric)
    at = sorted({int(e) for r in rows for e in r[f"val_{metric}_at"]})
    table = Table(
        title="comparison on identical splits and seeds (mean ± std over members)", title_justify="left"
    )
    table.add_column("spec")
    table.add_column("params", justify="right")
    selection = summary.get("selection") or {}
    chosen = selection.get("grid") is not None
    lam_chosen = "lam_grid" in selection
    if chosen:
        table.add_column("lr (chosen)", justify="right")
    if lam_chosen:
        table.add_column("λ (chosen)", justify="right")
    table.add_column(f"final test {label}", justify="right")
    table.add_column(f"best-val test {label}", justify="right")
    voted = any(r.get(f"ensemble_final_test_{metric}") is not None for r in rows)
    if voted:
        table.add_column(f"ensemble test {label}", justify="right")
    for e in at:
        table.add_column(f"val {label} @{e}", justify="right")
    table.add_column("epochs to 99%", justify="right")
    table.add_column("time (s)", justify="right")
    for r in rows:
        table.add_row(
            r["spec"], f"{r['parameters']:,}", *([f"{r['lr']:g}"] if chosen else []),
            *([lam_cell(r)] if lam_chosen else []),
            pm(r[f"final_test_{metric}"]), pm(r[f"best_test_{metric}"]),
            *([number(r.get(f"ensemble_final_test_{metric}"))] if voted else []),
            *[pm(r[f"val_{metric}_at"].get(str(e)), 3) for e in at],
            pm(r["epochs_to_99"], 1), f"{r['train_time_s']:.0f}",
        )
    r0 = rows[0]
    table.caption = (
        f"{r0['members']} members × {r0['epochs']} epochs on {r0['n_train']:,} training events; "
        "val = validation split, test = test split (never used for selection); "
        + ("ensemble = the members voting as one model, final epoch; " if voted else "")
        + f"epochs to 99% = first epoch within 1% of the member's final val {label}"
    )
    return table


def lam_cell(row: dict[str, Any]) -> str:
    """The chosen λ, or for a spec without penalties its chosen seed replica."""
    if row.get("lam") is not None:
        return f"{row['lam']:g}"
    return f"– (seeds {row.get('seed_replica') or 0})"


def trial_table(selection: dict[str, Any]) -> Table:
    """Every trial of a λ search (one row each), its validation metric, and the chosen ones."""
    metric = selection.get("metric", "auc")
    budget = selection["budget"]["trials_per_spec"]
    table = Table(title=f"λ chosen on validation: {budget} trainings per spec (mean final-epoch val "
                  f"{metric_label(metric)}, {'largest' if selection.get('direction', 'max') == 'max' else 'smallest'} "
                  "wins; specs without penalties: seed replicas)", title_justify="left")
    for col in ("spec", "lr", "λ", "seeds", f"val {metric_label(metric)}", "chosen"):
        table.add_column(col, justify="left" if col == "spec" else "right")
    for name, entry in selection["specs"].items():
        for t in entry["trials"]:
            score = t[f"val_{metric}"]
            table.add_row(name, f"{t['lr']:g}", "–" if t["lam"] is None else f"{t['lam']:g}",
                          str(t["seed_replica"] or 0), "–" if score is None else f"{score:.4f}",
                          "✓" if t["run"] == entry["run"] else "")
    return table


def selection_table(selection: dict[str, Any] | None) -> Table | None:
    """The learning-rate trials of every spec and the one chosen on validation."""
    if not selection:
        return None
    if "lam_grid" in selection:
        return trial_table(selection)
    metric = selection.get("metric", "auc")
    table = Table(title=f"learning rate chosen on validation (mean final-epoch val {metric_label(metric)} per trial, "
                  f"{'largest' if selection.get('direction', 'max') == 'max' else 'smallest'} wins)", title_justify="left")
    table.add_column("spec")
    for lr in selection["grid"]:
        table.add_column(f"lr {lr:g}", justify="right")
    table.add_column("chosen", justify="right")
    for name, entry in selection["specs"].items():
        cells = ["–" if t[f"val_{metric}"] is None else f"{t[f'val_{metric}']:.4f}" for t in entry["trials"]]
        table.add_row(name, *cells, f"{entry['lr']:g}")
    return table


def invariance_table(inv: dict[str, Any] | None) -> Table | None:
    """Each spec's |Δ logit| under a random boost (K·n̂) and its ratio to the first spec's."""
    if not inv or "models" not in inv:
        return None
    from symfw.core.diagnostics import RANDOM_BOOST

    models = inv["models"]
    first = next(iter(models))
    row = RANDOM_BOOST if RANDOM_BOOST in models[first]["summary"] else next(iter(models[first]["summary"]))
    table = Table(
        title=f"invariance under {inv['group']} on {inv['n_events']:,} test events "
        f"(mean over θ > 0; ratios: {first} ÷ spec, min–max over generators)",
        title_justify="left",
    )
    for col in ("spec", "logit std", f"|Δ logit| {row}", f"|Δ prob| {row}", f"|Δ quantile| {row}", f"ratio {row}",
                "ratio range", "ratio ÷ spread range", "quantile ratio range"):
        table.add_column(col, justify="left" if col == "spec" else "right")

    def ratio(v: float | None) -> str:  # an exactly invariant model's ratio is infinite (null in JSON)
        return "∞" if v is None or math.isinf(v) else f"{v:.3g}×"

    def span(ratios: dict[str, float | None]) -> str:
        if not ratios:
            return "–"
        values = [math.inf if v is None else v for v in ratios.values()]
        return f"{ratio(min(values)).removesuffix('×')}–{ratio(max(values))}"

    for name, m in models.items():
        ratios = inv["ratios_dlogit"].get(name, {})
        relative = inv["ratios_dlogit_over_logit_std"].get(name, {})
        quantile = inv.get("ratios_dquantile", {}).get(name, {})
        table.add_row(
            name, f"{m['logit_std']:.3g}", f"{m['summary'][row]['dlogit']:.3g}", f"{m['summary'][row]['dprob']:.3g}",
            f"{m['summary'][row]['dquantile']:.3g}", ratio(ratios[row]) if row in ratios else "1", span(ratios),
            span(relative), span(quantile),
        )
    return table


def difference_table(summary: dict[str, Any]) -> Table | None:
    if not summary["differences"]:
        return None
    metric = summary.get("primary", "auc")
    table = Table(title="differences (paired by seed: mean ± standard error)", title_justify="left")
    for col in ("a − b", f"Δ final test {metric_label(metric)}", f"Δ best-val test {metric_label(metric)}"):
        table.add_column(col, justify="right" if col != "a − b" else "left")

    def fmt(d):
        if d["mean"] is None:
            return "–"
        return f"{d['mean']:+.4f}" + (f" ± {d['sem']:.4f}" if d["sem"] is not None else " (one seed)")

    for d in summary["differences"]:
        table.add_row(f"{d['a']} − {d['b']}", fmt(d[f"final_test_{metric}"]), fmt(d[f"best_test_{metric}"]))
    return table


def fraction_table(summary: dict[str, Any]) -> Table | None:
    by = summary.get("by_fraction")
    if not by:
        return None
    metric = summary.get("primary", "auc")
    fractions = sorted({f["fraction"] for rows in by.values() for f in rows})
    table = Table(title=f"final test {metric_label(metric)} vs training fraction (mean ± std)", title_justify="left")
    table.add_column("spec")
    for f in fractions:
        table.add_column(f"{f:g}", justify="right")
    for name, rows in by.items():
        cells = {f["fraction"]: pm(f[f"final_test_{metric}"]) for f in rows}
        table.add_row(name, *[cells.get(f, "–") for f in fractions])
    return table


def compare(
    specs: Annotated[list[str], typer.Argument(help="Two or more spec files (.toml) or preset names.")],
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
    seeds: Annotated[int, typer.Option("--seeds", help="Ensemble members per spec (same seeds for every spec).")] = 3,
    seed: SeedOpt = 0,
    fractions: FractionsOpt = None,
    train_pt_max: PtMaxOpt = None,
    cut_context: CutContextOpt = "leading-pt",
    lr_grid: Annotated[
        str | None,
        typer.Option(
            "--lr-grid",
            help="Train every spec at each of these learning rates (e.g. 3e-4,1e-3,3e-3) and keep, per spec, "
            "the one with the best validation AUC.",
        ),
    ] = None,
    lam_grid: Annotated[
        str | None,
        typer.Option(
            "--lam-grid",
            help="Train every spec with penalties at each of these λ (e.g. 0.1,1,10; 0 = penalty off; with "
            "--lr-grid at each (lr, λ)) and keep the best on validation; specs without penalties get as many "
            "trainings, as seed replicas, so every model has the same budget.",
        ),
    ] = None,
    invariance: Annotated[
        bool,
        typer.Option(
            "--invariance",
            help="Also measure each spec's |Δ logit| under the first spec's group on test events "
            "(as symfw diagnose invariance); writes invariance.png.",
        ),
    ] = False,
    matched_init: Annotated[
        bool,
        typer.Option(
            "--matched-init",
            help="Start every spec as the same function: weights beyond the input layers copied from the first "
            "spec (same seeds), input features not common to all specs at zero weight; compare.json records the "
            "largest first-batch output difference. Specs that differ beyond their input layers are refused.",
        ),
    ] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: compare.json, plots, a run per spec.")] = Path(
        "runs/compare"
    ),
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    vectorize: VectorizeOpt = "auto",
    threads: ThreadsOpt = None,
    compile_: CompileOpt = None,
    executor: Annotated[
        str, typer.Option("--executor", help="local (this process) or ray (a Ray task per spec, seed and fraction).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster to use (auto: the running one); default: a local Ray.")
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", help="Retries of a failed or killed training task (ray: 2, local: 0).")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", help="Run the independent trainings (specs × learning rates × fractions) in N "
                                         "processes of this machine; the same results as one after the other.")
    ] = 1,
    ddp: DdpOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    registry: RegistryOpt = None,
):
    """Train every SPEC on the same data, split and seeds; print a table, write compare.json and plots.

    Example: symfw compare pfn invariant hybrid --data zmumu --events 20000 --epochs 30 --seeds 3 --out cmp/
    On a Ray cluster: symfw compare pfn hybrid --seeds 10 --executor ray --address auto --out cmp/
    Data-parallel: symfw compare pfn hybrid --ddp 2 --out cmp/ (or torchrun --nproc-per-node 2 -m symfw compare ...)
    Both cores: symfw compare pfn invariant hybrid --lr-grid 3e-4,1e-3,3e-3 --jobs 2 --threads 1 --out cmp/
    SEAL's λ on validation: symfw compare pfn pfn-seal-group --lam-grid 0.1,1,10 --out cmp/
    """
    from symfw.core.compare import check_search, run_compare
    from symfw.core.executors import make_executor

    if len(specs) < 2:
        raise UsageError("compare needs at least two specs (files or preset names)")
    if lr_grid is not None and lr is not None:
        raise UsageError("--lr and --lr-grid exclude each other: the grid chooses the learning rate")
    grid = parse_floats(lr_grid, "--lr-grid", "3e-4,1e-3,3e-3") if lr_grid is not None else None
    lams = parse_floats(lam_grid, "--lam-grid", "0.1,1,10") if lam_grid is not None else None
    reg = registry_with(registry)
    settings = make_settings(data, events, seed, seeds, fractions, train_pt_max, cut_context, reg, compile_)
    if matched_init:
        settings = dataclasses.replace(settings, matched_init=True)
    dev = check_device(device)
    mode = check_vectorize(vectorize)
    set_threads(threads)
    if jobs > max_processes():
        raise UsageError(f"--jobs must be at most {max_processes()} (4 per CPU core of this machine), got {jobs}")
    check_writable(out)
    runner = make_executor(executor, address, retries, str(dev), jobs=jobs, threads=threads, vectorize=mode)
    loaded = load_specs(specs, reg, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                        schedule=schedule)
    check_search(loaded, settings, grid, lams)  # before the data are read
    if distributed.wanted(ddp):
        if executor != "local" or retries or jobs != 1:
            raise UsageError("--ddp trains every task data-parallel in this machine's processes: use --executor local")
        request = distributed.DdpRequest("compare", tuple(loaded), settings, out, resume, str(dev),
                                         tuple(registry or ()), quiet, {"lr_grid": grid, "lam_grid": lams, "invariance": invariance},
                                         {"format": format, "stream": stream, "chunk_events": chunk_events})
        summary = distributed.run_distributed(ddp, request, threads, mode)
        if summary is None:  # a rank other than 0: rank 0 reports
            return
    else:
        events_data = load_data(settings.data, settings.events, settings.seed, quiet, reg, format, stream, chunk_events)
        progress = (EpochProgress(quiet, show_lr=grid is not None or lams is not None) if runner.in_process
                    else TaskProgress(quiet, f"training tasks ({runner.name})"))
        with progress:
            summary = run_compare(
                loaded, events_data, settings, out, resume=resume, device=dev, vectorize=mode, registry=reg,
                on_epoch=progress if runner.in_process else None, on_task=None if runner.in_process else progress,
                executor=runner, lr_grid=grid, lam_grid=lams, invariance=invariance,
            )
    if json_:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = results_console()
    console.print(compare_table(summary))
    for table in (
        selection_table(summary.get("selection")),
        invariance_table(summary.get("invariance")),
        difference_table(summary),
        fraction_table(summary),
        extrapolation_table(summary.get("extrapolation") or {}, summary.get("primary", "auc")),
    ):
        if table is not None:
            console.print(table)
    if summary.get("matched_init") and not quiet:
        m = summary["matched_init"]
        err_console.print(f"matched initialisation to '{m['reference']}': largest first-batch output difference "
                          f"{m['first_batch_max_difference']:.2e} ({m['dtype']}, {m['probe_events']} events)")
    if not quiet:
        err_console.print(f"wrote {out / 'compare.json'} and {', '.join(Path(p).name for p in summary['plots'])}")
