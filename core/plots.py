"""PNG plots of training results (matplotlib, Agg backend).

- ``auc_vs_epoch.png``: validation AUC vs epoch, mean over members ± 1σ band (hybrid paper,
  Fig. 4);
- ``auc_vs_fraction.png``: test AUC vs training fraction ± 1σ (Fig. 6), when several fractions
  were trained;
- ``general_weight_vs_pt.png``: the learned weight of the general subnet vs leading pT ± 1σ
  (Fig. 5), for models whose combiner learns one;
- ``extrapolation.png``: test AUC and accuracy vs leading pT below and above the training cut
  (SEAL, Figs. 3–5), when trained with ``--train-pt-max``.

Every function takes :func:`symfw.core.training.run_training` results and returns the path
it wrote, or None when there is nothing to plot.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write  # noqa: E402

PT_LABEL = r"leading-particle $p_\mathrm{T}$ [GeV]"


def _nan(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _main(result: dict[str, Any]) -> dict[str, Any]:
    return max(result["fractions"], key=lambda f: f["fraction"])


def _colors(n: int):
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=150, format="png"))
    plt.close(fig)
    return path


def _names(results, names):
    return list(names) if names is not None else [r["spec"] for r in results]


def _primary(result: dict[str, Any]) -> str:
    return _main(result).get("primary", "auc")


def _metric_label(metric: str) -> str:
    return {"auc": "AUC", "loss": "loss"}.get(metric, metric)


def plot_auc_vs_epoch(results: Sequence[dict], path: Path, names: Sequence[str] | None = None) -> Path:
    """The validation primary metric (AUC for classifiers) vs epoch with ±1σ bands over members
    (largest training fraction)."""
    metric = _primary(results[0])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, result, color in zip(_names(results, names), results, _colors(len(results))):
        main = _main(result)
        epochs = np.asarray(main["curves"]["epoch"])
        auc = np.asarray([_nan(row) for row in main["curves"][f"val_{metric}"]])
        with warnings.catch_warnings():  # an epoch where every member diverged (all NaN) is a gap
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(auc, axis=1)
            std = np.nanstd(auc, axis=1, ddof=1) if auc.shape[1] > 1 else np.zeros_like(mean)
        ax.plot(epochs, mean, color=color, label=f"{name} ({auc.shape[1]} seed{'s' * (auc.shape[1] != 1)})")
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)
    main = _main(results[0])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(f"validation {_metric_label(metric)}")
    ax.set_title(f"{_metric_label(metric)} vs epoch ({main['n_train']:,} training events; bands: ±1σ over seeds)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_auc_vs_fraction(results: Sequence[dict], path: Path, names: Sequence[str] | None = None) -> Path | None:
    """Final test primary metric vs training fraction with ±1σ error bands; None with one fraction."""
    if all(len(r["fractions"]) < 2 for r in results):
        return None
    metric = _primary(results[0])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, result, color in zip(_names(results, names), results, _colors(len(results))):
        fr = sorted(result["fractions"], key=lambda f: f["fraction"])
        x = np.asarray([f["fraction"] for f in fr])
        mean = _nan([f["summary"]["final_test"][metric]["mean"] for f in fr])
        std = _nan([f["summary"]["final_test"][metric]["std"] for f in fr])
        ax.plot(x, mean, "o-", color=color, label=name)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)
    full = max(results[0]["fractions"], key=lambda f: f["fraction"])
    n_full = round(full["n_train"] / full["fraction"])
    ticks = sorted({f["fraction"] for r in results for f in r["fractions"]})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"training fraction (of {n_full:,} training events)")
    ax.set_ylabel(f"test {_metric_label(metric)} (final epoch)")
    ax.set_title(f"{_metric_label(metric)} vs training-set size (bands: ±1σ over seeds)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def plot_general_weight(results: Sequence[dict], path: Path, names: Sequence[str] | None = None) -> Path | None:
    """Learned general-subnet weight vs leading pT ±1σ; None when no model learns a weight."""
    curves = [(n, _main(r)["general_weight"]) for n, r in zip(_names(results, names), results)]
    curves = [(n, c) for n, c in curves if c]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for (name, c), color in zip(curves, _colors(len(curves))):
        x, mean, std = _nan(c["pt_centers"]), _nan(c["mean"]), _nan(c["std"])  # empty bins: None
        ax.plot(x, mean, color=color, label=f"{name} ({len(c['per_member'])} seed{'s' * (len(c['per_member']) != 1)})")
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, linewidth=0)
    ax.set_xlabel(curves[0][1].get("variable", PT_LABEL))
    ax.set_ylabel("weight of the general subnet $w$")
    ax.set_ylim(0, 1)
    ax.set_title("Learned general-subnet weight vs pT (test events; bands: ±1σ over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def pt_scale(lo: float, hi: float) -> str:
    """The x scale of a pT axis: logarithmic when the bins span more than a factor 4 (a falling
    spectrum, 20–200 GeV), linear for a narrow window (jets of 550–650 GeV), where a log axis
    would show one tick."""
    return "log" if lo > 0 and hi / lo > 4 else "linear"


def plot_extrapolation(results: Sequence[dict], path: Path, names: Sequence[str] | None = None) -> Path | None:
    """Test AUC and accuracy in pT bins, with the training cut marked; None without a cut."""
    entries = [(n, _main(r).get("extrapolation")) for n, r in zip(_names(results, names), results)]
    entries = [(n, e) for n, e in entries if e]
    if not entries:
        return None
    metric = _primary(results[0])
    keys = [metric] + (["accuracy"] if "accuracy" in entries[0][1]["bins"][0] else [])
    fig, axes = plt.subplots(len(keys), 1, figsize=(6.4, 3.2 * len(keys)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    pt_max = entries[0][1]["pt_max"]
    for (name, e), color in zip(entries, _colors(len(entries))):
        lo, hi = np.asarray([b["lo"] for b in e["bins"]]), np.asarray([b["hi"] for b in e["bins"]])
        x = _nan([b.get("pt_mean", 0.5 * (b["lo"] + b["hi"])) for b in e["bins"]])
        xerr = np.vstack([x - lo, hi - x])  # the bar spans the bin; the marker sits at its mean pT
        for ax, key in zip(axes, keys):
            mean = _nan([b[key]["mean"] if key in b else None for b in e["bins"]])
            std = _nan([b[key]["std"] if key in b else None for b in e["bins"]])
            ax.errorbar(x, mean, yerr=std, xerr=xerr, fmt="o", color=color, capsize=2, label=name)
    edges = [b[k] for _, e in entries for b in e["bins"] for k in ("lo", "hi")]
    scale = pt_scale(min(edges), max(edges))
    for ax, label in zip(axes, [f"test {_metric_label(k)}" for k in keys]):
        ax.set_xscale(scale)
        xlim = ax.get_xlim()
        if scale == "log":
            ticks = [t for t in (5, 10, 20, 50, 100, 200, 500, 1000, 2000) if xlim[0] <= t <= xlim[1]]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axvline(pt_max, color="k", linestyle="--", linewidth=1)
        ax.axvspan(pt_max, xlim[1], color="0.9", zorder=0)
        ax.set_xlim(xlim)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(title=f"trained on $p_T$ < {pt_max:g} GeV", fontsize=8)
    axes[0].set_title("Extrapolation: shaded = pT range unseen in training (bars: ±1σ over seeds)", fontsize=10)
    axes[-1].set_xlabel(entries[0][1].get("variable", PT_LABEL))
    return _save(fig, path)


def plot_resolution_vs_pt(results: Sequence[dict], path: Path, names: Sequence[str] | None,
                          resolutions: Sequence[tuple[str, str]]) -> Path | None:
    """Four-momentum resolutions vs true pT (one panel each, mean ± 1σ over members, test split);
    None when no result has them (``report.resolution_vs_pt``)."""
    entries = [(n, (_main(r).get("report") or {}).get("resolution_vs_pt")) for n, r in zip(_names(results, names), results)]
    entries = [(n, e) for n, e in entries if e]
    if not entries:
        return None
    fig, axes = plt.subplots(1, len(resolutions), figsize=(3.4 * len(resolutions), 3.6), squeeze=False)
    for (name, curves), color in zip(entries, _colors(len(entries))):
        x = _nan(curves[0]["centers"])
        for ax, (key, label) in zip(axes[0], resolutions):
            values = np.asarray([_nan(c[key]) for c in curves])
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            ax.errorbar(x, mean, yerr=std, fmt="o-", color=color, capsize=2, ms=3, label=name)
    reference = (_main(results[0]).get("report") or {}).get("sum_of_inputs_vs_pt")
    if reference:
        for ax, (key, _) in zip(axes[0], resolutions):
            ax.plot(_nan(reference["centers"]), _nan(reference[key]), "k--", lw=1, label="sum of the inputs")
    for ax, (_, label) in zip(axes[0], resolutions):
        ax.set_xlabel(r"true $p_\mathrm{T}$ [GeV]")
        ax.set_ylabel(f"{label} resolution")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Resolution vs pT (test events; 68 % widths; bars: ±1σ over seeds)", fontsize=10)
    return _save(fig, path)


def write_plots(results: Sequence[dict], out: Path, names: Sequence[str] | None = None, registry=None) -> list[Path]:
    """Every plot that applies, into ``out`` (the task's own plots too); returns the paths written."""
    out = Path(out)
    metric = _primary(results[0])
    written = [
        plot_auc_vs_epoch(results, out / f"{metric}_vs_epoch.png", names),
        plot_auc_vs_fraction(results, out / f"{metric}_vs_fraction.png", names),
        plot_general_weight(results, out / "general_weight_vs_pt.png", names),
        plot_extrapolation(results, out / "extrapolation.png", names),
    ]
    task_name = _main(results[0]).get("task", "binary")
    from .registry import get_registry

    cls = (registry or get_registry()).get("task", task_name)
    written += cls(cls.Options()).plots(results, out, _names(results, names))
    return [p for p in written if p is not None]
