"""Summaries and control plots of event data (``symfw data inspect``).

- :func:`summarize`: counts and weights per class, pT and mass summaries, and the signal's
  mass width in pT slices (true and measured), as a JSON-able dict.
- :func:`plot_reweighting`: the hybrid paper's Fig. 1 — the pT spectrum of signal, background
  and reweighted background, with the ratio to signal.
- :func:`plot_mass_slices`: the paper's Fig. 2 — the signal's dimuon mass in three pT slices,
  before (true four-vectors) and after the detector smearing.

Event quantities use every real particle: "mass" is the invariant mass of their sum, "system
pT" its transverse momentum (the dimuon pT for two muons), "leading pT" the largest pT.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .data import EventData
from .errors import UsageError
from .io import atomic_write

VARIABLES = {"leading-pt": "leading-muon $p_T$", "dimuon-pt": "dimuon $p_T$"}
DEFAULT_SLICE_EDGES = (20.0, 50.0)


# --------------------------------------------------------------------------- quantities


def _pt(p4: np.ndarray) -> np.ndarray:
    return np.hypot(p4[..., 1], p4[..., 2])


def _mass(p4: np.ndarray) -> np.ndarray:
    m2 = p4[..., 0] ** 2 - (p4[..., 1:] ** 2).sum(-1)
    return np.sqrt(np.maximum(m2, 0.0))


def quantities(p4: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per event: leading pT, system pT (``dimuon-pt``) and system mass, in GeV (float64)."""
    p4 = np.asarray(p4, dtype=np.float64) * mask[..., None]
    total = p4.sum(1)
    return {"leading-pt": _pt(p4).max(1), "dimuon-pt": _pt(total), "mass": _mass(total)}


def event_quantities(data) -> dict[str, np.ndarray]:
    """:func:`quantities` of every event of ``data`` (in memory or streamed, read chunk by chunk),
    and under ``true-…`` keys those of ``p4_true`` when the data has it."""
    parts: list[dict[str, np.ndarray]] = []
    names = ("p4", "mask", "p4_true") if data.has_p4_true else ("p4", "mask")
    for chunk in data.chunks(names=names):
        q = quantities(chunk.p4, chunk.mask)
        if chunk.p4_true is not None:
            q.update({f"true-{k}": v for k, v in quantities(chunk.p4_true, chunk.mask).items()})
        parts.append(q)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _true(q: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    return {k.removeprefix("true-"): v for k, v in q.items() if k.startswith("true-")} or None


def half_width(x: np.ndarray) -> float:
    """Half the central 68% interval (σ for a Gaussian, robust to Breit–Wigner tails)."""
    if len(x) < 2:
        return float("nan")
    lo, hi = np.percentile(x, [15.865, 84.135])
    return float(0.5 * (hi - lo))


def slices(edges: tuple[float, ...]) -> list[tuple[float, float]]:
    """Slices [0, e₁), [e₁, e₂), …, [e_last, ∞) from inner edges."""
    bounds = [0.0, *edges, math.inf]
    return list(zip(bounds[:-1], bounds[1:]))


def slice_label(lo: float, hi: float, var: str = "dimuon-pt") -> str:
    name = VARIABLES.get(var, var)
    if math.isinf(hi):
        return f"{name} ≥ {lo:g} GeV"
    if lo == 0:
        return f"{name} < {hi:g} GeV"
    return f"{lo:g} ≤ {name} < {hi:g} GeV"


def check_edges(edges: tuple[float, ...]) -> tuple[float, ...]:
    edges = tuple(float(e) for e in edges)
    if not edges or any(e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise UsageError(f"slice edges must be increasing positive numbers, got {list(edges)}")
    return edges


# --------------------------------------------------------------------------- summary


def _stats(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    q = np.percentile(x, [5, 50, 95])
    return {"mean": float(x.mean()), "p5": float(q[0]), "median": float(q[1]), "p95": float(q[2])}


def summarize(
    data: EventData, slice_by: str = "dimuon-pt", edges: tuple[float, ...] = DEFAULT_SLICE_EDGES,
    q: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Counts, weights, pT and mass summaries per class, and the signal mass width per pT slice
    (``q``: :func:`event_quantities` of ``data``, computed when not given)."""
    edges = check_edges(edges)
    q = event_quantities(data) if q is None else q
    q_true = _true(q)
    classes: dict[str, Any] = {}
    for name, cls in (("signal", 1), ("background", 0)):
        sel = data.label == cls
        w = data.weight[sel]
        n_eff = float(w.sum() ** 2 / (w**2).sum()) if w.sum() > 0 else 0.0
        classes[name] = {
            "events": int(sel.sum()),
            "sum_weights": float(w.sum()),
            "weight_min": float(w.min()) if len(w) else None,  # None: no event of the class
            "weight_max": float(w.max()) if len(w) else None,
            "effective_events": n_eff,
            "leading_pt": _stats(q["leading-pt"][sel]),
            "dimuon_pt": _stats(q["dimuon-pt"][sel]),
            "mass": {**_stats(q["mass"][sel]), "half_width_68": half_width(q["mass"][sel])},
        }
    sig = data.label == 1
    widths = []
    for lo, hi in slices(edges):
        sel = sig & (q[slice_by] >= lo) & (q[slice_by] < hi)
        row = {
            "slice": slice_label(lo, hi, slice_by).replace("$", "").replace("_T", "T"),
            "low": lo,
            "high": None if math.isinf(hi) else hi,
            "events": int(sel.sum()),
            "measured_median": float(np.median(q["mass"][sel])) if sel.any() else float("nan"),
            "measured_half_width": half_width(q["mass"][sel]),
        }
        if q_true is not None:
            row["true_half_width"] = half_width(q_true["mass"][sel])
        widths.append(row)
    return {
        "events": len(data),
        "particles": data.n_particles,
        "weighted": bool(not np.all(data.weight == 1)),
        "has_truth": data.has_p4_true,
        "classes": classes,
        "mass_width_by_slice": {"slice_by": slice_by, "slices": widths},
        "meta": {k: v for k, v in data.meta.items() if isinstance(v, (str, int, float, bool))},
    }


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 11,
            "axes.labelsize": 12,
            "legend.fontsize": 10,
            "legend.frameon": False,
            "xtick.direction": "in",
            "ytick.direction": "in",
            "xtick.top": True,
            "ytick.right": True,
        }
    )
    return plt


def _save(fig, path: Path) -> Path:
    def write(tmp: Path):
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")

    atomic_write(path, write)
    _pyplot().close(fig)
    return path


def _density(x, w, edges):
    """Normalised histogram (per GeV) and its statistical error, with weights."""
    h, _ = np.histogram(x, edges, weights=w)
    h2, _ = np.histogram(x, edges, weights=w * w)
    width = np.diff(edges)
    total = w.sum()
    return h / total / width, np.sqrt(h2) / total / width


def reweight_chi2(data: EventData, variable: str, edges: np.ndarray,
                  q: dict[str, np.ndarray] | None = None) -> tuple[float, int]:
    """χ² and ndf of the weighted background vs the signal spectrum of ``variable`` in ``edges``.

    Both histograms are normalised to unit area; each bin's variance is the sum of the
    signal's (counts) and the background's (sum of squared weights) relative variances.
    """
    x = (event_quantities(data) if q is None else q)[variable]
    sig, bkg = data.label == 1, data.label == 0
    s, _ = np.histogram(x[sig], edges)
    b, _ = np.histogram(x[bkg], edges, weights=data.weight[bkg])
    b2, _ = np.histogram(x[bkg], edges, weights=data.weight[bkg] ** 2)
    n_s, n_b = s.sum(), b.sum()
    var = s / n_s**2 + b2 / n_b**2
    ok = var > 0
    chi2 = float((((s / n_s - b / n_b) ** 2)[ok] / var[ok]).sum())
    return chi2, int(ok.sum() - 1)


def plot_reweighting(data: EventData, path: str | Path, variable: str | None = None, n_bins: int = 60,
                     q: dict[str, np.ndarray] | None = None) -> Path:
    """Fig. 1: the pT spectrum of signal, background and reweighted background (ratio below)."""
    plt = _pyplot()
    variable = variable or str(data.meta.get("reweight_variable", "leading-pt"))
    if variable not in VARIABLES:
        raise UsageError(f"unknown variable '{variable}'; known: {', '.join(VARIABLES)}")
    q = event_quantities(data) if q is None else q
    x = q[variable]
    sig, bkg = data.label == 1, data.label == 0
    hi = float(np.percentile(x[sig], 99.5))
    edges = np.linspace(0.0, hi, n_bins + 1)
    ones = np.ones(len(x))
    mode = data.meta.get("reweight")
    weighted = not np.all(data.weight[bkg] == 1)

    fig, (ax, rax) = plt.subplots(2, 1, sharex=True, figsize=(6.4, 6.0), gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    centers = 0.5 * (edges[1:] + edges[:-1])
    s, s_err = _density(x[sig], ones[sig], edges)
    ax.stairs(s, edges, fill=True, color="tab:blue", alpha=0.35, label=f"signal (Z→μμ), {sig.sum():,} events")
    ax.stairs(s, edges, color="tab:blue", lw=1.2)
    curves = []
    raw_label = "background (γ*→μμ), resampled to signal" if mode == "resample" else "background (γ*→μμ)"
    b, b_err = _density(x[bkg], ones[bkg], edges)
    curves.append((b, b_err, raw_label, "tab:red", "--" if weighted else "-"))
    if weighted:
        bw, bw_err = _density(x[bkg], data.weight[bkg], edges)
        curves.append((bw, bw_err, "reweighted background", "black", "-"))
    for h, err, label, color, ls in curves:
        ax.stairs(h, edges, color=color, ls=ls, lw=1.5, label=label)
        ratio = np.divide(h, s, out=np.full_like(h, np.nan), where=s > 0)
        r_err = np.divide(np.hypot(err, h * np.divide(s_err, s, out=np.zeros_like(s), where=s > 0)), s,
                          out=np.zeros_like(s), where=s > 0)
        rax.errorbar(centers, ratio, yerr=r_err, fmt="o" if color == "black" else "s", ms=2.5, color=color,
                     elinewidth=0.8, mfc=color if color == "black" else "none")
    if weighted or mode == "resample":
        chi2, ndf = reweight_chi2(data, variable, edges, q)
        ax.text(0.97, 0.60, f"{'reweighted' if weighted else 'resampled'} vs signal:\nχ²/ndf = {chi2:.1f}/{ndf}",
                transform=ax.transAxes, ha="right", va="top", fontsize=10)
    info = []
    if "reweight_bins" in data.meta and mode in ("weights", "resample"):
        info.append(f"reweighted in {data.meta['reweight_bins']} bins of {VARIABLES[variable]}")
    ax.set_ylabel(r"$1/N\;\mathrm{d}N/\mathrm{d}p_T$ [GeV$^{-1}$]")
    ax.set_ylim(0, 1.25 * max(float(np.nanmax(s)), *(float(np.nanmax(c[0])) for c in curves)))
    ax.legend(loc="upper right", title="; ".join(info) or None, title_fontsize=9)
    rax.axhline(1.0, color="tab:blue", lw=1)
    rax.set_ylim(0.0, 2.0)
    rax.set_ylabel("ratio to\nsignal")
    rax.set_xlabel(f"{VARIABLES[variable]} [GeV]")
    rax.set_xlim(0, hi)
    return _save(fig, Path(path))


def plot_mass_slices(
    data: EventData,
    path: str | Path,
    slice_by: str = "dimuon-pt",
    edges: tuple[float, ...] = DEFAULT_SLICE_EDGES,
    mass_range: tuple[float, float] | None = None,
    q: dict[str, np.ndarray] | None = None,
) -> Path:
    """Fig. 2: the signal's mass in pT slices, true (top, if known) and measured (bottom)."""
    plt = _pyplot()
    edges = check_edges(edges)
    if slice_by not in VARIABLES:
        raise UsageError(f"unknown slice variable '{slice_by}'; known: {', '.join(VARIABLES)}")
    sig = data.label == 1
    every = event_quantities(data) if q is None else q
    q = {k: v[sig] for k, v in every.items()}
    after = "after smearing (measured muons)"
    if "resolution" in data.meta:
        after += f"\nσ(pT)/pT = {data.meta['resolution']:g} ⊕ {data.meta.get('resolution_slope', 0):g}·pT/GeV"
    panels = [(after, q["mass"])]
    if "true-mass" in q:
        panels.insert(0, ("before smearing (true muons)", q["true-mass"]))
    if mass_range is None:
        window = str(data.meta.get("mass_window", ""))
        try:
            lo, hi = (float(v) for v in window.split("-"))
        except ValueError:
            lo, hi = (float(v) for v in np.percentile(q["mass"], [0.5, 99.5]))
        mass_range = (lo - 0.25 * (hi - lo) if window else lo, hi + 0.25 * (hi - lo) if window else hi)
    # finer bins for the narrow true peak, coarser for the smeared one
    n_bins = {panels[0][0]: 120 if len(panels) == 2 else 60, panels[-1][0]: 60}
    colors = ["tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple"]

    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(6.4, 3.4 * len(panels) + 0.6),
                             gridspec_kw={"hspace": 0.08}, squeeze=False)
    for ax, (title, mass) in zip(axes[:, 0], panels):
        for k, (lo, hi) in enumerate(slices(edges)):
            sel = (q[slice_by] >= lo) & (q[slice_by] < hi)
            if not sel.any():
                continue
            bins = np.linspace(*mass_range, n_bins[title] + 1)
            h, _ = np.histogram(mass[sel], bins)
            h = h / sel.sum() / np.diff(bins)
            label = f"{slice_label(lo, hi, slice_by)}: σ₆₈ = {half_width(mass[sel]):.1f} GeV ({sel.sum():,})"
            ax.stairs(h, bins, color=colors[k % len(colors)], lw=1.6, label=label)
        ax.set_ylabel(r"$1/N\;\mathrm{d}N/\mathrm{d}m_{\mu\mu}$ [GeV$^{-1}$]")
        ax.set_ylim(0, ax.get_ylim()[1] * (1.8 if "\n" in title else 1.5))
        ax.legend(loc="upper left", title=f"Z→μμ, {title}", title_fontsize=10, alignment="left")
    axes[-1, 0].set_xlabel(r"dimuon mass $m_{\mu\mu}$ [GeV]")
    axes[-1, 0].set_xlim(*mass_range)
    return _save(fig, Path(path))


def write_plots(
    data: EventData,
    directory: str | Path,
    slice_by: str = "dimuon-pt",
    edges: tuple[float, ...] = DEFAULT_SLICE_EDGES,
    q: dict[str, np.ndarray] | None = None,
) -> list[Path]:
    """Write fig1_pt_reweighting.png and fig2_mass_slices.png into ``directory``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a directory")
    q = event_quantities(data) if q is None else q
    return [
        plot_reweighting(data, directory / "fig1_pt_reweighting.png", q=q),
        plot_mass_slices(data, directory / "fig2_mass_slices.png", slice_by=slice_by, edges=edges, q=q),
    ]
