"""Invariance diagnostics: how far a model's output moves under group elements of growing size.

For each generator T of the group (and, when the group has two or more boost generators, a
boost along a random direction n̂ of their span, as in SEAL's Fig. 2) and each parameter θ of a
grid (rapidity for boosts, radians for rotations), every event is moved by Λ = exp(±θ T) (the
sign drawn per event) — :func:`symfw.core.groups.random_elements` with the range [θ, θ] — and
we record the weighted means over events of

    |Δf| = |f(Λx) − f(x)|   (logit)        and        |Δp| = |σ(f(Λx)) − σ(f(x))|   (probability)

and the scale-free |Δq| = |F(f(Λx)) − F(f(x))|, the shift of each event's output quantile (F: the
weighted empirical distribution of the model's unmoved outputs on these events). |Δq| does not
change when a model's outputs are rescaled or passed through any increasing function, so a
penalty that merely flattens the outputs does not lower it.

Models are evaluated in float64 and eval mode; only real particles move. For an ensemble the
curves are averaged over members (the spread is kept as a standard deviation).

Each model is measured twice: against the full group (the first model's ``spec.group``) and
against the group it claims to keep by construction, its residual group
(``SymfwModel.residual_group``; :func:`claimed_curves`) — where |Δf| must vanish to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .groups import act, is_compact, random_elements
from .interfaces import SymmetryGroup
from .io import atomic_write

RANDOM_BOOST = "K·n̂"
DEFAULT_PARAMETERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclass
class InvarianceCurves:
    """Mean |Δf| and |Δp| per row (generator) and parameter, averaged over ensemble members."""

    label: str
    group: str
    parameters: list[float]
    dlogit: dict[str, list[float]]
    dprob: dict[str, list[float]]
    dlogit_std: dict[str, list[float]] = field(default_factory=dict)
    dprob_std: dict[str, list[float]] = field(default_factory=dict)
    dquantile: dict[str, list[float]] = field(default_factory=dict)
    dquantile_std: dict[str, list[float]] = field(default_factory=dict)
    n_events: int = 0
    n_members: int = 1
    logit_std: float = 0.0  # spread of the unmoved logits over events (member mean): the scale of |Δf|

    @property
    def rows(self) -> list[str]:
        return list(self.dlogit)

    @property
    def max_dlogit(self) -> float:
        """The largest mean |Δ logit| over rows and parameters."""
        return max((max(v) for v in self.dlogit.values() if v), default=0.0)

    @property
    def max_dprob(self) -> float:
        return max((max(v) for v in self.dprob.values() if v), default=0.0)

    @property
    def max_dquantile(self) -> float:
        return max((max(v) for v in self.dquantile.values() if v), default=0.0)

    def mean_over_parameters(self, row: str, prob: bool = False, key: str | None = None) -> float:
        """Mean over the non-zero parameters of the grid (the summary used for ratios) of |Δ logit|,
        |Δ probability| (``prob``) or ``key`` (``"dquantile"``)."""
        values = getattr(self, key or ("dprob" if prob else "dlogit"))[row]
        picked = [v for t, v in zip(self.parameters, values) if t > 0]
        return float(np.mean(picked)) if picked else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "group": self.group,
            "parameters": self.parameters,
            "n_events": self.n_events,
            "n_members": self.n_members,
            "logit_std": self.logit_std,
            "dlogit": self.dlogit,
            "dprob": self.dprob,
            "dlogit_std": self.dlogit_std,
            "dprob_std": self.dprob_std,
            "dquantile": self.dquantile,
            "dquantile_std": self.dquantile_std,
            "max_dlogit": self.max_dlogit,
            "max_dprob": self.max_dprob,
            "max_dquantile": self.max_dquantile,
            "summary": {
                row: {"dlogit": self.mean_over_parameters(row), "dprob": self.mean_over_parameters(row, True),
                      "dquantile": self.mean_over_parameters(row, key="dquantile")}
                for row in self.rows
            },
        }


def diagnostic_directions(group: SymmetryGroup, generators: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Row name → the generators its elements move along: each generator alone, and (for the
    random boost ``K·n̂``, when there are two or more boost-like ones) all the boost-like ones."""
    names = list(group.generator_names) if generators is None else list(generators)
    gens = group.generators(dtype=torch.float64)
    rows = {name: (name,) for name in names}
    boosts = tuple(name for name in names if not is_compact(gens[group.generator_index(name)]))
    if len(boosts) >= 2:
        rows[RANDOM_BOOST] = boosts
    return rows


def _empirical_cdf(values: torch.Tensor, weight: torch.Tensor, rtol: float = 1e-9) -> Callable[[torch.Tensor], torch.Tensor]:
    """y ↦ the weighted fraction of ``values`` below y, counting those within rounding of y
    (``rtol`` of the largest |value|) half: a change at rounding level moves no quantile."""
    order = torch.argsort(values)
    sorted_values = values[order]
    cumulative = torch.cat([weight.new_zeros(1), torch.cumsum(weight[order], 0)])
    tol = rtol * float(values.abs().max()) if values.numel() else 0.0

    def cdf(y: torch.Tensor) -> torch.Tensor:
        y = y.contiguous()
        below = cumulative[torch.searchsorted(sorted_values, y - tol)]
        up_to = cumulative[torch.searchsorted(sorted_values, y + tol, right=True)]
        return (below + up_to) / 2

    return cdf


@torch.no_grad()
def invariance_curves(
    models: Sequence[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    group: SymmetryGroup,
    p4: torch.Tensor,
    mask: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    parameters: Sequence[float] = DEFAULT_PARAMETERS,
    generators: Sequence[str] | None = None,
    label: str = "",
    seed: int = 0,
    chunk: int = 8192,
    progress: Callable[[], None] | None = None,
) -> InvarianceCurves:
    """Mean |Δf| and |Δp| for each model (callables (p4, mask) → logits, already float64/eval).

    The same group elements are used for every model. ``progress`` is called once per
    (row, parameter).
    """
    p4 = p4.to(torch.float64)
    n = p4.shape[0]
    w = torch.ones(n, dtype=torch.float64) if weight is None else weight.to(torch.float64)
    w = w / w.sum()
    rows = diagnostic_directions(group, generators)

    def evaluate(fn, x):
        return torch.cat([fn(x[i : i + chunk], mask[i : i + chunk]).to(torch.float64) for i in range(0, n, chunk)])

    refs = [evaluate(fn, p4) for fn in models]
    spread = [float(torch.sqrt((w * (r - (w * r).sum()) ** 2).sum())) for r in refs]
    cdfs = [_empirical_cdf(r, w) for r in refs]
    shape = (len(models), len(rows), len(parameters))
    dlogit, dprob, dquant = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    rng = torch.Generator().manual_seed(seed)
    for r, along in enumerate(rows.values()):
        for k, theta in enumerate(parameters):
            size = (float(theta), float(theta))
            elements = random_elements(group, n, generators=along, rapidity=size, angle=size, rng=rng)
            moved = act(elements, p4, mask)
            for m, fn in enumerate(models):
                out = evaluate(fn, moved)
                dlogit[m, r, k] = float((w * (out - refs[m]).abs()).sum())
                dprob[m, r, k] = float((w * (torch.sigmoid(out) - torch.sigmoid(refs[m])).abs()).sum())
                dquant[m, r, k] = float((w * (cdfs[m](out) - cdfs[m](refs[m])).abs()).sum())
            if progress is not None:
                progress()

    def per_row(a: np.ndarray) -> dict[str, list[float]]:
        return {name: [float(v) for v in a[r]] for r, name in enumerate(rows)}

    return InvarianceCurves(
        label=label,
        group=group.name,
        parameters=[float(t) for t in parameters],
        dlogit=per_row(dlogit.mean(0)),
        dprob=per_row(dprob.mean(0)),
        dlogit_std=per_row(dlogit.std(0)),
        dprob_std=per_row(dprob.std(0)),
        dquantile=per_row(dquant.mean(0)),
        dquantile_std=per_row(dquant.std(0)),
        n_events=n,
        n_members=len(models),
        logit_std=float(np.mean(spread)),
    )


# --------------------------------------------------------------------------- the figure

_STYLES = ["-", "--", ":", "-."]


def invariance_lines(curves: Sequence[InvarianceCurves]) -> tuple[str, list[tuple[int, str, int, str]]]:
    """What :func:`plot_invariance` draws: ``(colour_by, [(model index, row, colour index, line style)])``.

    Up to four models: every generator row of every model, colour = generator, line style = model.
    More models than line styles: colour = model, one row per model — the random direction K·n̂
    when the model has it (else its first row) — so that no two models look alike."""
    if len(curves) <= len(_STYLES):
        rows = list(dict.fromkeys(r for c in curves for r in c.rows))
        return "generator", [(m, r, rows.index(r), _STYLES[m]) for m, c in enumerate(curves) for r in c.rows]
    return "model", [(m, RANDOM_BOOST if RANDOM_BOOST in c.rows else next(iter(c.rows)), m, "-")
                     for m, c in enumerate(curves) if c.rows]


def plot_invariance(curves: Sequence[InvarianceCurves], path: str | Path) -> None:
    """SEAL Fig. 2 style: mean |Δlogit|, |Δp| and the output-quantile shift |Δq| vs θ; colour =
    generator and line = model, or with more than four models colour = model along K·n̂
    (:func:`invariance_lines`). Bands: ±1σ over members, drawn where they stay above zero (the
    axes are logarithmic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colour_by, lines = invariance_lines(curves)
    palette = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4), layout="constrained")
    for ax, key, ylabel in (
        (axes[0], "dlogit", "mean |Δ logit|"),
        (axes[1], "dprob", "mean |Δ probability|"),
        (axes[2], "dquantile", "mean |Δ output quantile|"),
    ):
        for m, r, colour, style in lines:
            c = curves[m]
            values, spread = getattr(c, key), getattr(c, f"{key}_std")
            x = np.asarray(c.parameters)
            keep = x > 0  # log axis: θ = 0 is the identity
            y = np.asarray(values[r])
            ax.plot(x[keep], y[keep], style, color=palette(colour % 10), marker="o", ms=3)
            if c.n_members > 1 and r in spread:
                s = np.asarray(spread[r])
                low, high = (y - s)[keep], (y + s)[keep]
                ax.fill_between(x[keep], np.where(low > 0, low, np.nan), high, where=low > 0,
                                color=palette(colour % 10), alpha=0.12, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("θ: rapidity for boosts K, angle in rad for rotations J")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.25)
    def members(c):
        return f"{c.n_members} member{'s' * (c.n_members > 1)}"

    if colour_by == "generator":
        rows = list(dict.fromkeys(r for _, r, _, _ in lines))
        handles = [Line2D([], [], color=palette(i % 10), marker="o", ms=3, label=r) for i, r in enumerate(rows)]
        fig.legend(handles=handles, title="generator", fontsize=8, loc="outside right upper")
        if len(curves) > 1 or curves[0].label:
            model_handles = [Line2D([], [], color="k", ls=_STYLES[m], label=f"{c.label}\n({members(c)})")
                             for m, c in enumerate(curves)]
            fig.legend(handles=model_handles, title="model", fontsize=8, loc="outside right lower")
    else:
        handles = [Line2D([], [], color=palette(colour % 10), marker="o", ms=3,
                          label=f"{curves[m].label} ({members(curves[m])}): {r}") for m, r, colour, _ in lines]
        fig.legend(handles=handles, title="model: direction", fontsize=8, loc="outside right upper")
    group = ", ".join(sorted({c.group for c in curves}))
    fig.suptitle(f"Output change under group elements exp(θT) of {group}, {curves[0].n_events:,} events")
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=150, format="png"))
    plt.close(fig)


def summary_ratios(
    curves: Sequence[InvarianceCurves], prob: bool = False, relative: bool = False, key: str | None = None,
) -> dict[str, dict[str, float]]:
    """For each model after the first: per row, (first model's mean |Δ|) / (this model's mean |Δ|).

    With ``relative``, each model's |Δ logit| is first divided by the spread of its own logits
    (``logit_std``), so a model is not called more invariant merely for having flatter outputs.
    ``key = "dquantile"``: the ratio of the output-quantile shifts (scale-free by construction).
    """
    out: dict[str, dict[str, float]] = {}
    first = curves[0]

    def value(c: InvarianceCurves, row: str) -> float:
        v = c.mean_over_parameters(row, prob, key)
        return v / c.logit_std if relative and c.logit_std > 0 else v

    for c in curves[1:]:
        ratios = {}
        for row in c.rows:
            if row in first.dlogit:
                mine = value(c, row)
                ratios[row] = value(first, row) / mine if mine > 0 else math.inf
        out[c.label] = ratios
    return out


def claimed_curves(
    models: Sequence[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
    p4: torch.Tensor,
    mask: torch.Tensor,
    **options: Any,
) -> InvarianceCurves | None:
    """:func:`invariance_curves` of one model's members (SymfwModels, float64, eval mode) under
    the group the model claims, its ``residual_group``, along all of that group's generators;
    None when it claims nothing (the trivial group) or its output is not claimed invariant (a
    four-vector head is equivariant). ``options`` as for invariance_curves."""
    group = models[0].residual_group
    if not group.generator_names or models[0].output_transforms != "invariant":
        return None
    return invariance_curves(models, group, p4, mask, **options)


def claimed_entry(model, curves: InvarianceCurves | None) -> dict[str, Any]:
    """The claimed group of ``model``, why, and its curves (or why there are none)."""
    entry: dict[str, Any] = {"group": model.residual_group.name, "reason": model.residual_reason}
    if curves is None and model.output_transforms != "invariant":
        entry["skipped"] = f"{model.output_transforms} output: equivariant, not an invariance to measure by |Δf|"
    elif curves is None:
        entry["skipped"] = "claims no symmetry (trivial group)"
    else:
        entry.update(curves.to_dict(), group=curves.group)
    return entry


def claimed_plot_path(plot: str | Path) -> Path:
    """Where the claimed-group figure goes next to the full-group one: ``invariance-claimed.png``."""
    plot = Path(plot)
    return plot.with_name(f"{plot.stem}-claimed{plot.suffix}")


def invariance_summary(
    members: Sequence[Sequence[torch.nn.Module]],
    names: Sequence[str],
    p4: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    plot: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """|Δf| for each model's members (one list per compared spec) on the given events, under the
    first model's group (``models``: per model its curves' summary; the ratios of the first
    model's |Δ| to each other's, also per unit logit spread) and under the group each model
    claims (``claimed``: per model its residual group, why, and its curves, ``max_dlogit`` the
    largest mean |Δ logit|, ≈ 0 when the claim holds). ``plot`` writes the full-group figure
    there and the claimed-group one next to it (``claimed_plot``)."""
    from .metrics import jsonable

    group = members[0][0].group
    fns = [[m.double().eval() for m in models] for models in members]
    out: dict[str, Any] = {"group": group.name, "n_events": int(p4.shape[0])}
    if group.generator_names:
        curves = [invariance_curves(f, group, p4, mask, weight=weight, label=name, seed=seed) for name, f in zip(names, fns)]
        if plot is not None:
            plot_invariance(curves, plot)
        out.update(
            models={c.label: c.to_dict() for c in curves},
            ratios_dlogit=summary_ratios(curves),
            ratios_dlogit_over_logit_std=summary_ratios(curves, relative=True),
            ratios_dquantile=summary_ratios(curves, key="dquantile"),
        )
    else:
        out["skipped"] = f"group '{group.name}' has no generators"
    claimed = [claimed_curves(f, p4, mask, weight=weight, label=name, seed=seed) for name, f in zip(names, fns)]
    out["claimed"] = {name: claimed_entry(f[0], c) for name, f, c in zip(names, fns, claimed)}
    if plot is not None and any(c is not None for c in claimed):
        plot_invariance([c for c in claimed if c is not None], claimed_plot_path(plot))
        out["claimed_plot"] = str(claimed_plot_path(plot))
    return jsonable(out)


# --------------------------------------------------------------------------- accuracy vs pT, boosted


@torch.no_grad()
def accuracy_vs_variable(
    members: Sequence[Sequence[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]],
    names: Sequence[str],
    group: SymmetryGroup,
    p4: torch.Tensor,
    mask: torch.Tensor,
    label: torch.Tensor,
    variable: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    generator: str | None = None,
    parameters: Sequence[float] = (0.0, 0.5, 1.0),
    bins: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """SEAL's Fig. 3: balanced accuracy (½(TPR + TNR) at probability 0.5, weighted) in bins of
    equal population of ``variable`` (e.g. the jet pT of the *unmoved* events), on the events and
    on the events moved by exp(±θ T) along ``generator`` (a random boost direction of the group
    when None), for each θ of ``parameters``; per model (members' mean and std)."""
    p4 = p4.to(torch.float64)
    w = torch.ones(p4.shape[0], dtype=torch.float64) if weight is None else weight.to(torch.float64)
    y = label.to(torch.bool)
    edges = np.unique(np.quantile(variable.numpy(), np.linspace(0, 1, bins + 1)))
    which = torch.as_tensor(np.clip(np.searchsorted(edges, variable.numpy(), side="right") - 1, 0, len(edges) - 2))
    rows = diagnostic_directions(group, None if generator is None else [generator])
    along = rows[generator] if generator is not None else rows.get(RANDOM_BOOST, next(iter(rows.values())))
    rng = torch.Generator().manual_seed(seed)
    moved = {}
    for theta in parameters:
        size = (float(theta), float(theta))
        moved[float(theta)] = p4 if theta == 0 else act(random_elements(group, p4.shape[0], generators=along,
                                                                        rapidity=size, angle=size, rng=rng), p4, mask)

    def balanced(pred: torch.Tensor, sel: torch.Tensor) -> float:
        sig, bkg = sel & y, sel & ~y
        if w[sig].sum() == 0 or w[bkg].sum() == 0:
            return math.nan
        return float(0.5 * (w[sig & pred].sum() / w[sig].sum() + w[bkg & ~pred].sum() / w[bkg].sum()))

    models: dict[str, Any] = {}
    for name, fns in zip(names, members):
        per_theta = {}
        for theta, x in moved.items():
            preds = [torch.cat([fn(x[i : i + 4096], mask[i : i + 4096]) for i in range(0, x.shape[0], 4096)]) > 0
                     for fn in fns]
            values = np.array([[balanced(pred, which == b) for b in range(len(edges) - 1)]
                               + [balanced(pred, torch.ones_like(y))] for pred in preds])
            per_theta[f"{theta:g}"] = {"bins": values[:, :-1].mean(0).tolist(), "bins_std": values[:, :-1].std(0).tolist(),
                                       "all": float(values[:, -1].mean()), "all_std": float(values[:, -1].std())}
        models[name] = per_theta
    return {"group": group.name, "along": list(along), "parameters": [float(t) for t in parameters],
            "edges": edges.tolist(), "n_events": int(p4.shape[0]), "models": models}


def plot_accuracy_vs_variable(result: dict[str, Any], path: str | Path, xlabel: str = "pT [GeV]") -> None:
    """Balanced accuracy vs the variable: colour = model, line style = θ of the boost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.asarray(result["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    for m, (name, per_theta) in enumerate(result["models"].items()):
        for k, (theta, r) in enumerate(per_theta.items()):
            ax.errorbar(centres, r["bins"], yerr=r["bins_std"], color=plt.get_cmap("tab10")(m % 10),
                        ls=_STYLES[k % len(_STYLES)], marker="o", ms=3, capsize=2,
                        label=f"{name}, θ = {theta}" if float(theta) else f"{name}, original")
    ax.set_xlabel(f"{xlabel} (of the original events; bins of equal population)")
    ax.set_ylabel("balanced accuracy")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7)
    ax.set_title(f"test events moved by exp(±θ T), T along {', '.join(result['along'])} ({result['group']})", fontsize=9)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=150, format="png"))
    plt.close(fig)
