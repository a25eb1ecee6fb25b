"""``symfw data``: generate a dataset with a dataset plugin, inspect an event file, convert a file
of any format symfw reads to symfw's own layout."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from symfw.core.data import resolve_data, save_events, target_summary
from symfw.core.errors import UsageError
from symfw.core.io import check_writable, jsonable

from ._common import (
    ChunkOpt,
    FormatOpt,
    JsonOpt,
    QuietOpt,
    RegistryOpt,
    StreamOpt,
    err_console,
    make_app,
    out_console,
    parse_floats,
    registry_with,
)

app = make_app("Generate toy datasets, inspect event files, convert files of other formats to symfw's layout.")

SUFFIXES = (".npz", ".h5", ".hdf5")


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, null, lists), else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def write_events(data, out: Path, quiet: bool, json_: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save ``data`` to ``out`` (a status line on a terminal) and return its summary, printed as JSON with ``--json``."""
    if quiet or not err_console.is_terminal:
        save_events(data, out)
    else:
        with err_console.status(f"writing {out}"):
            save_events(data, out)
    summary = data.describe()
    if json_:
        out_console.print_json(json.dumps(jsonable({"file": str(out), **(extra or {}), **summary}), allow_nan=False))
    return summary


@app.command("generate")
def generate(
    dataset: Annotated[str, typer.Argument(help="Dataset plugin, e.g. zmumu (see `symfw plugins list`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .npz or .h5/.hdf5.")],
    events: Annotated[int | None, typer.Option("--events", "-n", help="Number of events (default: the plugin's).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same events.")] = 0,
    resolution: Annotated[float | None, typer.Option(help="a in the muon resolution σ(pT)/pT = a ⊕ b·pT (zmumu: 0.05).")] = None,
    resolution_slope: Annotated[float | None, typer.Option(help="b in σ(pT)/pT = a ⊕ b·pT, per GeV (zmumu: 0.002; 0 with a = 0.1 is the paper's).")] = None,
    reweight: Annotated[str | None, typer.Option(help="Background reweighting: weights, resample or none.")] = None,
    reweight_variable: Annotated[str | None, typer.Option(help="Reweight in: leading-pt or dimuon-pt.")] = None,
    signal_fraction: Annotated[float | None, typer.Option(help="Share of signal events.")] = None,
    process: Annotated[str | None, typer.Option("--process", help="jets: the processes, one class each, e.g. top,qcd.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any plugin option as KEY=VALUE (repeatable; JSON values).")] = None,
    json_: JsonOpt = False,
    registry: RegistryOpt = None,
    quiet: QuietOpt = False,
):
    """Generate events with a dataset plugin and write them to a file.

    Example: symfw data generate zmumu --events 200000 --seed 7 --out z.npz
    """
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out {out}: unknown file type '{out.suffix}'; use .npz, .h5 or .hdf5")
    check_writable(out, directory=False)
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    reg = registry_with(registry)
    if dataset not in reg.entries["dataset"]:
        known = ", ".join(reg.names("dataset")) or "none"
        raise UsageError(f"unknown dataset '{dataset}'; known: {known}")
    options = parse_settings(set_)
    shortcuts = {
        "resolution": resolution,
        "resolution_slope": resolution_slope,
        "reweight": reweight,
        "reweight_variable": reweight_variable,
        "signal_fraction": signal_fraction,
        "processes": process,
    }
    options.update({k: v for k, v in shortcuts.items() if v is not None})

    bar = Progress(
        TextColumn(f"generating {dataset}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=True,
    )
    task = bar.add_task("events", total=events)

    def progress(done: int, total: int | None) -> None:
        if not bar.live.is_started:  # started on the first event, so bad input prints only its error
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        start = time.perf_counter()
        data = resolve_data(dataset, n_events=events, seed=seed, options=options, registry=reg, progress=progress)
        seconds = time.perf_counter() - start
    finally:
        if bar.live.is_started:
            bar.stop()
    summary = write_events(data, out, quiet, json_)
    if not quiet:
        err_console.print(
            f"wrote {out}: {summary['n_events']:,} events ({summary['n_signal']:,} signal, "
            f"{summary['n_background']:,} background), seed {seed}; made in {seconds:.1f} s "
            f"({summary['n_events'] / max(seconds, 1e-9):,.1f} events/s)"
        )


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """Rich tables of :func:`symfw.core.inspect.summarize`'s result."""
    names = list(summary["classes"])
    classes = Table(title=f"{summary['events']:,} events, {summary['particles']} particles each", title_justify="left")
    classes.add_column("")
    for name in names:
        classes.add_column(name, justify="right")
    cls = [summary["classes"][n] for n in names]

    def spread(c, key):
        d = c[key]
        return f"{d['median']:.1f} [{d['p5']:.1f}, {d['p95']:.1f}]" if "median" in d else "–"  # no event of the class

    rows = [
        ("events", lambda c: _fmt(c["events"])),
        ("sum of weights", lambda c: _fmt(c["sum_weights"])),
        ("weights min / max", lambda c: "–" if c["weight_min"] is None else f"{c['weight_min']:.3g} / {c['weight_max']:.3g}"),
        ("effective events", lambda c: _fmt(c["effective_events"], 0)),
        ("leading pT [GeV] median [5%, 95%]", lambda c: spread(c, "leading_pt")),
        ("dimuon pT [GeV] median [5%, 95%]", lambda c: spread(c, "dimuon_pt")),
        ("mass [GeV] median [5%, 95%]", lambda c: spread(c, "mass")),
        ("mass σ68 [GeV]", lambda c: _fmt(c["mass"]["half_width_68"], 2)),
    ]
    for label, get in rows:
        classes.add_row(label, *(get(c) for c in cls))
    meta = summary.get("meta", {})
    if "resolution" in meta:
        classes.caption = (
            f"{meta.get('source', '')} seed {meta.get('seed', '?')}: σ(pT)/pT = {meta['resolution']:g} ⊕ "
            f"{meta.get('resolution_slope', 0):g}·pT/GeV; background reweighting: {meta.get('reweight', '?')}"
            + (f" in {meta.get('reweight_bins')} bins of {meta.get('reweight_variable')}" if meta.get("reweight") != "none" else "")
        )
    widths = summary["mass_width_by_slice"]
    slices = Table(title="signal mass in pT slices [GeV]", title_justify="left")
    for col in ("slice", "events", "median", "σ68", "true σ68"):
        slices.add_column(col, justify="left" if col == "slice" else "right")
    for row in widths["slices"]:
        slices.add_row(row["slice"], _fmt(row["events"]), _fmt(row["measured_median"]),
                       _fmt(row["measured_half_width"], 2), _fmt(row.get("true_half_width"), 2))
    return [classes, slices]


def target_line(target: dict[str, Any] | None) -> str | None:
    """One line on :func:`symfw.core.data.target_summary`'s result (None without a target)."""
    if target is None:
        return None
    if target["dim"] != 4:
        return f"target: {target['dim']} value{'s' if target['dim'] > 1 else ''} per event"
    return (f"target: 4 values per event (E, px, py, pz): mass median {target['mass_median']:.1f} GeV, "
            f"pT median {target['pt_median']:.1f} GeV")


def parse_edges(text: str) -> tuple[float, ...]:
    return tuple(parse_floats(text, "--slices", "0,20,50,100 (GeV)"))


def open_file(file: str, format: str | None, stream: bool | None, chunk_events: int | None, registry):
    """The events of a data file (not a dataset plugin), loaded or streamed."""
    from symfw.core.streaming import open_events

    return open_events(file, format=format, stream=stream, chunk_events=chunk_events, registry=registry)


@app.command("inspect")
def inspect(
    file: Annotated[str, typer.Argument(help="Event file in any format symfw reads (a quoted glob for several).")],
    plots: Annotated[Path | None, typer.Option("--plots", help="Write the Fig. 1 and Fig. 2 PNGs into this folder.")] = None,
    slice_by: Annotated[str, typer.Option(help="pT slices of the mass plot in: dimuon-pt or leading-pt.")] = "dimuon-pt",
    slices: Annotated[str, typer.Option("--slices", help="Inner slice edges in GeV, comma-separated.")] = "20,50",
    format: FormatOpt = None,
    stream: StreamOpt = None,
    chunk_events: ChunkOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    registry: RegistryOpt = None,
):
    """Validate an event file and summarise it: classes, weights, pT and mass; optionally plot.

    A file larger than memory is read in chunks (--stream), never whole.

    Example: symfw data inspect z.npz --plots plots/
    """
    from symfw.core import inspect as insp

    if slice_by not in insp.VARIABLES:
        raise UsageError(f"--slice-by: unknown variable '{slice_by}'; known: {', '.join(insp.VARIABLES)}")
    edges = insp.check_edges(parse_edges(slices))
    if plots is not None:
        check_writable(plots, "--plots")
    data = open_file(file, format, stream, chunk_events, registry_with(registry))
    q = insp.event_quantities(data)
    summary = {**insp.summarize(data, slice_by=slice_by, edges=edges, q=q), "target": target_summary(data)}
    written = []
    if plots is not None:
        written = [str(p) for p in insp.write_plots(data, plots, slice_by=slice_by, edges=edges, q=q)]
    if json_:
        out_console.print_json(json.dumps(jsonable({"file": str(file), **summary, "plots": written}), allow_nan=False))
    else:
        for table in summary_tables(summary):
            out_console.print(table)
        if summary["target"] is not None:
            out_console.print(target_line(summary["target"]))
        for path in written:
            out_console.print(f"plot: {path}")
    if not quiet and written and json_:
        err_console.print(f"wrote {len(written)} plots to {plots}")


@app.command("convert")
def convert(
    source: Annotated[str, typer.Argument(help="Data file in any format symfw reads (a quoted glob for several).")],
    out: Annotated[Path, typer.Argument(help="Output file in symfw's layout: .npz, or .h5/.hdf5 (streamable).")],
    format: FormatOpt = None,
    stream: StreamOpt = None,
    chunk_events: ChunkOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    registry: RegistryOpt = None,
):
    """Write a data file of any format symfw reads in symfw's own layout, atomically.

    The events are checked as training checks them; a file larger than memory is converted
    chunk by chunk. HDF5 output is read fastest when streamed (only the rows needed).

    Example: symfw data convert train.h5 top-tagging-train.h5 (the Top Tagging table → symfw's HDF5)
    """
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"{out}: unknown file type '{out.suffix}'; use .npz, .h5 or .hdf5")
    check_writable(out, "OUT", directory=False)
    if Path(source).exists() and Path(source).resolve() == out.resolve():
        raise UsageError(f"{out}: is the input file; write the converted events to another file")
    start = time.perf_counter()
    data = open_file(source, format, stream, chunk_events, registry_with(registry))
    summary = write_events(data, out, quiet, json_, {"source": source})
    if not quiet:
        classes = f", classes {data.meta['classes']}" if "classes" in data.meta else ""
        err_console.print(
            f"wrote {out}: {summary['n_events']:,} events × {summary['n_particles']} particles "
            f"({summary['n_classes']} classes{classes}{', with targets' if data.target is not None else ''}) "
            f"from {source} ({data.meta.get('format', 'symfw')}) in {time.perf_counter() - start:.1f} s"
        )
