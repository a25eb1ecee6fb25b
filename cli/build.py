"""``symfw build``: assemble a complete model spec from a preset and component choices."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from symfw.core.io import check_writable
from symfw.core.model import build_model
from symfw.core.spec import Spec, check_penalties, resolve_spec, write_spec

from ._common import QuietOpt, RegistryOpt, err_console, registry_with

NONE = "none"


def _ref(current: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """Keep the current options when the name is unchanged; else the new component's defaults."""
    if current is not None and current.get("name") == name:
        return current
    return {"name": name}


def apply_choices(
    base: dict[str, Any],
    *,
    group: str | None = None,
    general: str | None = None,
    invariants: str | None = None,
    invariant_encoder: str | None = None,
    context: str | None = None,
    combiner: str | None = None,
    inputs: list[str] | None = None,
    penalties: list[str] | None = None,
    lam: float | None = None,
    name: str | None = None,
    spurions: list[str] | None = None,
    task: str | None = None,
    classes: int | None = None,
    head: str | None = None,
) -> dict[str, Any]:
    """Apply ``symfw build`` choices to a spec dict (``"none"`` removes a component)."""
    spec = dict(base)
    if task:
        spec["task"] = _ref(spec.get("task"), task)
    if classes is not None:
        current = dict(spec.get("task") or {"name": "multiclass"})
        spec["task"] = {**current, "options": {**current.get("options", {}), "classes": classes}}
    if head:
        spec["head"] = {**spec.get("head", {}), "kind": head}
    if name:
        spec["name"] = name
    if group:
        spec["group"] = _ref(spec.get("group"), group)
    if general:
        if general == NONE:
            spec.pop("general", None)
        else:
            cur = (spec.get("general") or {}).get("encoder")
            spec["general"] = {"encoder": _ref(cur, general)}
    if invariants or invariant_encoder:
        if invariants == NONE:
            spec.pop("invariant", None)
        else:
            cur = dict(spec.get("invariant") or {"encoder": {"name": "mlp"}})
            if invariants:
                cur["invariants"] = _ref(cur.get("invariants"), invariants)
            if invariant_encoder:
                cur["encoder"] = _ref(cur.get("encoder"), invariant_encoder)
            spec["invariant"] = cur
    for key, value in (("context", context), ("combiner", combiner)):
        if value == NONE:
            spec.pop(key, None)
        elif value:
            spec[key] = _ref(spec.get(key), value)
    if inputs:
        spec["inputs"] = [] if inputs == [NONE] else [{"name": n} for n in inputs]
    if spurions:  # one spurions transform, last (spurions are never seen by the input method)
        kept = [r for r in spec.get("inputs", []) if r.get("name") != "spurions"]
        spec["inputs"] = kept if spurions == [NONE] else [*kept, {"name": "spurions", "options": {"set": spurions}}]
    if penalties:
        if penalties == [NONE]:
            spec["penalties"] = []
        else:
            spec["penalties"] = [{"name": n, **({"lam": lam} if lam is not None else {})} for n in penalties]
    elif lam is not None:
        spec["penalties"] = [{**p, "lam": lam} for p in spec.get("penalties", [])]
    return spec


def summary_table(spec: Spec, model=None) -> Table:
    """Components, parameter counts per part and hidden neurons (the counts come from the built
    model), and the residual group the model keeps by construction."""
    model = build_model(spec) if model is None else model
    params, hidden = model.parameter_counts(), model.hidden_neuron_counts()
    table = Table(title=f"model '{spec.name}'", title_justify="left")
    table.add_column("part")
    table.add_column("components")
    table.add_column("parameters", justify="right")
    table.add_column("hidden neurons", justify="right")

    def sub(s):
        if s is None:
            return ""
        inv = f"{s.invariants.name} → " if s.invariants else ""
        return f"{inv}{s.encoder.name}"

    rows = {
        "general": sub(spec.general),
        "invariant": sub(spec.invariant),
        "combiner": f"{spec.combiner.name}({spec.context.name if spec.context else ''})" if spec.combiner else "",
        "head": ("Σ w_i p_i, w: MLP " if spec.head.kind == "four-vector" else "MLP ")
        + (";".join(map(str, spec.head.hidden)) or "linear")
        + f" → {4 if spec.head.kind == 'four-vector' else model.out_features} (task {spec.task.name})",
    }
    for part, desc in rows.items():
        if part in params:
            table.add_row(part, desc, f"{params[part]:,}", str(hidden[part]))
    table.add_row("total", f"group {spec.group.name}", f"{params['total']:,}", str(hidden["total"]), style="bold")
    table.add_row("keeps", f"residual group {model.residual_group.name}", "", "")
    extras = [f"inputs: {', '.join(r.name for r in spec.inputs)}"] if spec.inputs else []
    extras += [f"penalty {p.name} (λ={p.lam:g})" for p in spec.penalties]
    if extras:
        table.caption = "; ".join(extras)
    return table


def build(
    preset: Annotated[str, typer.Option(help="Preset to start from (see `symfw plugins list`).")] = "hybrid",
    group: Annotated[str | None, typer.Option(help="Symmetry group the model targets.")] = None,
    general: Annotated[str | None, typer.Option(help="Encoder of the general subnet, or 'none'.")] = None,
    invariants: Annotated[str | None, typer.Option(help="Invariant map of the invariant subnet, or 'none'.")] = None,
    invariant_encoder: Annotated[str | None, typer.Option(help="Encoder of the invariant subnet.")] = None,
    context: Annotated[str | None, typer.Option(help="Symmetry-breaking context, or 'none'.")] = None,
    combiner: Annotated[str | None, typer.Option(help="Combiner pooling the two subnets, or 'none'.")] = None,
    inputs: Annotated[list[str] | None, typer.Option("--inputs", help="Input transform (repeatable), or 'none'.")] = None,
    penalty: Annotated[list[str] | None, typer.Option("--penalty", help="Penalty (repeatable), or 'none'.")] = None,
    lam: Annotated[float | None, typer.Option(help="Weight λ of the penalties.")] = None,
    spurions: Annotated[
        str | None, typer.Option("--spurions", help="Spurion sets, comma-separated (beam, beam-plus, time, beam-axis), or 'none'.")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="What the model learns: binary (default), multiclass, regression.")
    ] = None,
    classes: Annotated[int | None, typer.Option("--classes", help="Number of classes of the multiclass task.")] = None,
    head: Annotated[
        str | None, typer.Option("--head", help="mlp, or four-vector (equivariant Σ w_i p_i; regression of 4 targets).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the spec.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the spec here instead of stdout.")] = None,
    registry: RegistryOpt = None,
    quiet: QuietOpt = False,
):
    """Write a complete model spec (every default filled in) and summarise the model on stderr.

    Example: symfw build --group lorentz --combiner weighted-pt --out spec.toml
    Regression: symfw build --preset pfn --task regression --out r.toml
    Equivariant four-momentum: symfw build --preset invariant --task regression --head four-vector
    """
    if out is not None:
        check_writable(out, directory=False)
    reg = registry_with(registry)
    base = reg.preset(preset)
    data = apply_choices(
        base,
        group=group,
        general=general,
        invariants=invariants,
        invariant_encoder=invariant_encoder,
        context=context,
        combiner=combiner,
        inputs=inputs,
        penalties=penalty,
        lam=lam,
        name=name,
        spurions=[x.strip() for x in spurions.split(",") if x.strip()] if spurions else None,
        task=task,
        classes=classes,
        head=head,
    )
    spec = resolve_spec(data, origin="build", registry=reg)
    check_penalties(spec, reg, origin="build")
    if not quiet:
        model = build_model(spec)
        err_console.print(summary_table(spec, model))
        err_console.print(f"residual group: {model.residual_reason}", soft_wrap=True)
    if out is None:
        typer.echo(spec.to_toml(), nl=False)
    else:
        write_spec(spec, out)
        if not quiet:
            err_console.print(f"wrote {out}")
