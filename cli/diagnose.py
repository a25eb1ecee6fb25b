"""``symfw diagnose``: how far trained (or untrained) models are from their spec's symmetry."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich import box
from rich.table import Table

from symfw.core.errors import SymfwError, UsageError
from symfw.core.io import check_writable

from ._common import (
    FormatOpt,
    JsonOpt,
    QuietOpt,
    RegistryOpt,
    err_console,
    make_app,
    out_console,
    parse_floats,
    registry_with,
)

app = make_app("Diagnose models: invariance under the spec's group; accuracy vs pT on boosted events.")

RUN_MARKER = "run.json"
MAX_THETA = 700.0  # |θ| of --rapidities: exp(θ) overflows float64 beyond ~709


def _floats(text: str, option: str) -> list[float]:
    values = parse_floats(text, option, "0,0.5,1")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise UsageError(f"{option}: expected non-negative finite numbers, got '{text}'")
    if max(values) > MAX_THETA:
        raise UsageError(f"{option}: at most {MAX_THETA:g} (exp(θ) overflows double precision beyond ~709), "
                         f"got {max(values):g}")
    return sorted(set(values))


def _expand(targets: list[str]) -> list[tuple[str, str | None]]:
    """(target, label): a ``symfw compare`` output folder stands for its runs, in the compared
    order (with a learning-rate grid, the chosen runs), labelled with their spec names."""
    from symfw.core.compare import compared_runs
    from symfw.core.runs import read_json_object

    out = []
    for target in targets:
        path = Path(target)
        if path.is_dir() and not (path / RUN_MARKER).is_file() and (path / "compare.json").is_file():
            summary = read_json_object(path / "compare.json", {"specs": list})
            try:
                runs = [(str(path / run), str(name)) for run, name in zip(compared_runs(summary), summary["specs"])
                        if (path / run / RUN_MARKER).is_file()]
            except (KeyError, TypeError, AttributeError):
                raise UsageError(f"{path / 'compare.json'}: not a symfw compare.json (its selection is damaged)") from None
            if runs:
                out.extend(runs)
                continue
        out.append((target, None))
    return out


def _load_target(target: str, label: str | None, *, fraction: float, best: bool, seed: int, reg):
    """(label, spec, models, run settings or None) for a run directory or a spec/preset."""
    from symfw.core.model import build_model
    from symfw.core.spec import load_spec

    path = Path(target)
    if path.is_dir():
        if not (path / RUN_MARKER).is_file():
            raise UsageError(f"{target}: a directory but not a training run (no {RUN_MARKER})")
        from symfw.core.runs import RunDir
        from symfw.core.training import load_members

        run = RunDir(path)
        models = load_members(path, fraction=fraction, best=best, registry=reg)
        spec = load_spec(path / "spec.toml", registry=reg)
        return label or path.name or str(path), spec, models, run.settings()
    spec = load_spec(target, registry=reg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec, reg)
    return f"{spec.name} (untrained)", spec, [model], None


def _load_binary(targets: list[str], why: str, **options) -> list:
    """:func:`_load_target` for every target (compare folders expanded); a non-binary task is refused."""
    loaded = [_load_target(t, label, **options) for t, label in _expand(targets)]
    for label, spec, _, _ in loaded:
        if spec.task.name != "binary":
            raise UsageError(f"{label}: {why}; task {spec.task.name} has other outputs")
    return loaded


def _events(data: str | None, events: int, seed: int, settings: dict | None, reg, format: str | None = None):
    """The events to evaluate on: a run's held-out test split when the run's data is asked for
    (a large file streamed: only the events evaluated are read)."""
    from symfw.core.data import resolve_data

    if settings is not None and (data is None or data == settings.get("data")):
        from symfw.core.training import RunSettings, prepare_split

        run_settings = RunSettings.from_record(settings)
        full = resolve_data(run_settings.data, n_events=run_settings.events, seed=run_settings.seed, registry=reg,
                            format=format)
        test = prepare_split(full, run_settings).test
        return full.subset(np.sort(test)[:events]), f"test split of the run's data ({run_settings.data})"
    if data is None:
        raise UsageError("--data: required unless the first target is a training run directory")
    return resolve_data(data, n_events=events, seed=seed, registry=reg, format=format), f"{data} (seed {seed})"


QUANTITIES = {"dlogit": "|Δ logit|", "dprob": "|Δ probability|", "dquantile": "|Δ output quantile|"}


def _table(c, key: str, claimed: bool = False) -> Table:
    """One model: rows θ (rapidity for K, radians for J), columns generators; ``key`` names the
    quantity (dlogit, dprob, dquantile)."""
    quantity = QUANTITIES[key]
    scale = f"; logit std {c.logit_std:.2g}" if key == "dlogit" else ""
    which = f"its claimed group {c.group}" if claimed else c.group
    title = f"{c.label}: mean {quantity} under exp(±θT) of {which}{scale}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("θ", justify="right")
    for r in c.rows:
        table.add_column(r, justify="right")
    values = getattr(c, key)
    for k, theta in enumerate(c.parameters):
        if theta > 0:
            table.add_row(f"{theta:g}", *(f"{values[r][k]:.2g}" for r in c.rows))
    table.add_row("mean", *(f"{c.mean_over_parameters(r, key=key):.2g}" for r in c.rows), style="bold")
    return table


TargetsArg = Annotated[
    list[str],
    typer.Argument(help="Run directories, compare folders, or specs (files or preset names).", metavar="RUN_DIR|SPEC..."),
]
DiagDataOpt = Annotated[
    str | None, typer.Option("--data", help="Dataset (e.g. zmumu) or data file; default: a run's own test split.")
]
EventsOpt = Annotated[int, typer.Option("--events", help="Number of events to evaluate on.")]
DiagSeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the generated events, the group elements and untrained models.")]
FractionOpt = Annotated[float, typer.Option("--fraction", help="Training fraction of a run to load.")]
BestOpt = Annotated[bool, typer.Option("--best", help="Load a run's best-validation members instead of the final ones.")]


def _check_common(events: int, seed: int, out: Path | None) -> None:
    if events < 1:
        raise UsageError(f"--events must be >= 1, got {events}")
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be in [0, 2^32), got {seed}")
    if out is not None:
        check_writable(out)


@app.command("invariance")
def invariance(
    targets: TargetsArg,
    data: DiagDataOpt = None,
    format: FormatOpt = None,
    events: EventsOpt = 5000,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for invariance.json and invariance.png.")] = None,
    parameters: Annotated[
        str, typer.Option("--rapidities", help="Comma-separated grid of θ (rapidity for boosts, radians for rotations).")
    ] = "0,0.25,0.5,0.75,1,1.5,2",
    generators: Annotated[
        str | None, typer.Option("--generators", help="Comma-separated generator names (default: all of the group's).")
    ] = None,
    seed: DiagSeedOpt = 12345,
    fraction: FractionOpt = 1.0,
    best: BestOpt = False,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Mean |Δf| and |Δ probability| vs boost rapidity per generator, as a table and a PNG (SEAL Fig. 2).

    A target is a training run directory, a `symfw compare` output folder (its runs, in order),
    a spec file or a preset name (built untrained).

    Each event is moved by exp(±θT) for each generator T of the first target's group (and by a
    boost along a random direction); models run in float64, eval mode. Several targets are
    evaluated on the same events and the same group elements; the first is the reference of
    the ratios. Each model is also measured along every generator of the group it claims to
    keep by construction (its residual group, e.g. so2-z for beam spurions), where |Δ| must
    vanish to rounding. Example: symfw diagnose invariance runs/pfn runs/pfn-seal --out diag/
    """
    from symfw.core.diagnostics import (
        claimed_curves,
        claimed_entry,
        claimed_plot_path,
        diagnostic_directions,
        invariance_curves,
        plot_invariance,
        summary_ratios,
    )
    from symfw.core.io import atomic_write_json, jsonable

    _check_common(events, seed, out)
    grid = _floats(parameters, "--rapidities")
    names = [g.strip() for g in generators.split(",") if g.strip()] if generators else None
    reg = registry_with(registry)
    loaded = _load_binary(targets, "diagnose invariance measures the change of one logit",
                          fraction=fraction, best=best, seed=seed, reg=reg)
    group = loaded[0][2][0].group
    n_rows = len(diagnostic_directions(group, names))  # unknown names: UsageError listing the known ones
    sample, where = _events(data, events, seed, loaded[0][3], reg, format)
    tensors = sample.tensors(dtype=torch.float64)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console, disable=quiet)
    curves, claimed = [], []
    with progress:
        for label, spec, models, _ in loaded:
            fns = [m.double().eval() for m in models]
            keeps = fns[0].residual_group
            n_claimed = len(diagnostic_directions(keeps)) if keeps.generator_names else 0
            task = progress.add_task(f"{label}", total=(n_rows + n_claimed) * len(grid))
            common = dict(weight=tensors["weight"], parameters=grid, label=label, seed=seed,
                          progress=lambda: progress.advance(task))
            curves.append(invariance_curves(fns, group, tensors["p4"], tensors["mask"], generators=names, **common))
            claimed.append((fns[0], claimed_curves(fns, tensors["p4"], tensors["mask"], **common)))
    ratios = summary_ratios(curves) if len(curves) > 1 else {}
    payload = {
        "events": where,
        "n_events": len(sample),
        "models": [c.to_dict() for c in curves],
        "ratios_dlogit": ratios,
        "ratios_dprob": summary_ratios(curves, prob=True) if len(curves) > 1 else {},
        "ratios_dlogit_over_logit_std": summary_ratios(curves, relative=True) if len(curves) > 1 else {},
        "ratios_dquantile": summary_ratios(curves, key="dquantile") if len(curves) > 1 else {},
        "claimed": [{"label": c.label, **claimed_entry(model, kept)} for c, (model, kept) in zip(curves, claimed)],
    }
    kept_curves = [kept for _, kept in claimed if kept is not None]
    if out is not None:
        atomic_write_json(out / "invariance.json", payload)
        plot_invariance(curves, out / "invariance.png")
        if kept_curves:
            plot_invariance(kept_curves, claimed_plot_path(out / "invariance.png"))
    if json_:
        typer.echo(json.dumps(jsonable(payload), indent=2, allow_nan=False))
    else:
        out_console.print(f"{len(sample):,} events: {where}")
        for key in QUANTITIES:
            for c in curves:
                out_console.print(_table(c, key))
        for key, what in (("ratios_dlogit", "|Δ logit|"), ("ratios_dlogit_over_logit_std", "|Δ logit| / logit std"),
                          ("ratios_dquantile", "|Δ output quantile|")):
            for label, per_row in payload[key].items():
                text = ", ".join(f"{r} {v:.3g}×" for r, v in per_row.items())
                out_console.print(f"{what} of {curves[0].label} over {label} (mean over θ>0): {text}")
        for entry, (_, kept) in zip(payload["claimed"], claimed):
            out_console.print(f"claimed group of {entry['label']}: {entry['reason']}", soft_wrap=True)
            if kept is not None:
                out_console.print(_table(kept, "dlogit", claimed=True))
    if out is not None and not quiet:
        figures = " and ".join(str(p) for p in [out / "invariance.png", *([claimed_plot_path(out / "invariance.png")] if kept_curves else [])])
        err_console.print(f"wrote {out / 'invariance.json'}, {figures}")


@app.command("pt")
def pt(
    targets: TargetsArg,
    data: DiagDataOpt = None,
    format: FormatOpt = None,
    events: EventsOpt = 5000,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for accuracy_vs_pt.json and .png.")] = None,
    parameters: Annotated[
        str, typer.Option("--rapidities", help="Comma-separated θ of the boosts applied to the events (0: original).")
    ] = "0,0.5,1",
    generator: Annotated[
        str | None, typer.Option("--generator", help="Boost along this generator (default: a random boost direction).")
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="The breaking context whose variable bins the events "
                                                   "(default: the first model's context, else leading-pt).")
    ] = None,
    bins: Annotated[int, typer.Option("--bins", help="Bins of equal population.")] = 8,
    seed: DiagSeedOpt = 12345,
    fraction: FractionOpt = 1.0,
    best: BestOpt = False,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Balanced accuracy in bins of pT on the events and on the events boosted by exp(±θT) (SEAL Fig. 3).

    Example: symfw diagnose pt runs/cmp --rapidities 0,0.5,1 --context system-pt --out diag/
    """
    from symfw.core.diagnostics import accuracy_vs_variable, plot_accuracy_vs_variable
    from symfw.core.io import atomic_write_json, jsonable
    from symfw.core.training import context_variable

    if not 2 <= bins <= 100:
        raise UsageError(f"--bins must be in [2, 100], got {bins}")
    _check_common(events, seed, out)
    grid = _floats(parameters, "--rapidities")
    reg = registry_with(registry)
    loaded = _load_binary(targets, "diagnose pt measures a binary classifier's accuracy",
                          fraction=fraction, best=best, seed=seed, reg=reg)
    group = loaded[0][2][0].group
    if generator is not None:
        from symfw.core.diagnostics import diagnostic_directions

        diagnostic_directions(group, [generator])  # an unknown name: a UsageError listing the known ones
    name = context or (loaded[0][1].context.name if loaded[0][1].context is not None else "leading-pt")
    try:
        reg.get("context", name)
    except SymfwError as exc:
        raise UsageError(f"--context: {exc}") from None
    sample, where = _events(data, events, seed, loaded[0][3], reg, format)
    t = sample.tensors(dtype=torch.float64)
    variable = torch.as_tensor(context_variable(name, sample, reg), dtype=torch.float64)
    with err_console.status("evaluating", spinner="dots") if not quiet else contextlib.nullcontext():
        result = accuracy_vs_variable([[m.double().eval() for m in models] for _, _, models, _ in loaded],
                                      [label for label, *_ in loaded], group, t["p4"], t["mask"], t["label"], variable,
                                      weight=t["weight"], generator=generator, parameters=grid, bins=bins, seed=seed)
    result.update(context=name, events=where)
    if out is not None:
        atomic_write_json(out / "accuracy_vs_pt.json", result)
        plot_accuracy_vs_variable(result, out / "accuracy_vs_pt.png", xlabel=f"{name} [GeV]")
    if json_:
        typer.echo(json.dumps(jsonable(result), indent=2, allow_nan=False))
        return
    table = Table(title=f"balanced accuracy in bins of {name} ({where}); boosts along {', '.join(result['along'])}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    edges = result["edges"]
    for col in ["model", "θ", "all", *[f"{a:.0f}–{b:.0f}" for a, b in zip(edges, edges[1:])]]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, per_theta in result["models"].items():
        for theta, r in per_theta.items():
            table.add_row(label, theta, f"{r['all']:.3f}", *(f"{v:.3f}" for v in r["bins"]))
    out_console.print(table)
    if out is not None and not quiet:
        err_console.print(f"wrote {out / 'accuracy_vs_pt.json'}, {out / 'accuracy_vs_pt.png'}")
