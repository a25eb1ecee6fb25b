"""Classifier metrics with event weights: AUC, accuracy, background rejection.

AUC and the ROC curve come from scikit-learn (``roc_auc_score`` / ``roc_curve`` with
``sample_weight``). Scores are logits; the accuracy cut is logit 0 (probability 0.5).
Background rejection at signal efficiency ε_S is 1/ε_B, with ε_B read off the ROC curve at
TPR = ε_S: the smallest false-positive rate of a ROC point with TPR = ε_S, or the linear
interpolation between the two ROC points around it.

Metrics that are undefined (one class only, ε_B = 0) are ``nan``/``inf`` in memory and
``None`` in JSON (see :func:`jsonable`).

Regression (docs/data.md, "Regression metrics"): :func:`regression_metrics` (MSE, MAE, bias per
component), :func:`four_vector_resolutions` (PELICAN's resolutions of a predicted four-momentum)
and :func:`resolution_vs` (the same in quantile bins of a variable), all with optional event
weights; quantiles are :func:`weighted_quantile`'s (the inverted CDF).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from . import kinematics as kin
from .io import jsonable  # noqa: F401 - re-exported: M.jsonable

SIGNAL_EFFICIENCIES = (0.3, 0.5)
METRICS = ("auc", "accuracy", "rej30", "rej50")


def _arrays(labels, scores, weights):
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (len(y) == len(s) == len(w)):
        raise ValueError(f"labels, scores and weights differ in length: {len(y)}, {len(s)}, {len(w)}")
    return y, s, w


def _both_classes(y: np.ndarray, w: np.ndarray) -> bool:
    return bool(w[y == 1].sum() > 0 and w[y == 0].sum() > 0)


def auc(labels, scores, weights=None) -> float:
    """Weighted area under the ROC curve; ``nan`` unless both classes have weight."""
    y, s, w = _arrays(labels, scores, weights)
    if not _both_classes(y, w):
        return math.nan
    return float(roc_auc_score(y, s, sample_weight=w))


def accuracy(labels, scores, weights=None, threshold: float = 0.0) -> float:
    """Weighted fraction of events with (score > threshold) == label; threshold 0 on logits."""
    y, s, w = _arrays(labels, scores, weights)
    total = w.sum()
    if total <= 0:
        return math.nan
    return float((w * ((s > threshold) == (y == 1))).sum() / total)


def background_rejection(labels, scores, weights=None, signal_efficiency: float = 0.3) -> float:
    """1/ε_B at ε_S = ``signal_efficiency`` (``inf`` when no background passes)."""
    y, s, w = _arrays(labels, scores, weights)
    if not _both_classes(y, w):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w)
    # first ROC point reaching ε_S (the smallest ε_B there), linear between ROC points before it
    i = int(np.searchsorted(tpr, signal_efficiency, side="left"))
    if i >= len(tpr):
        i = len(tpr) - 1
    if tpr[i] <= signal_efficiency or i == 0:
        eps_b = float(fpr[i])
    else:
        t = (signal_efficiency - tpr[i - 1]) / (tpr[i] - tpr[i - 1])
        eps_b = float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    return math.inf if eps_b <= 0 else 1.0 / eps_b


def evaluate(labels, scores, weights=None) -> dict[str, float]:
    """All metrics of one classifier: auc, accuracy, rej30 (1/ε_B at ε_S=0.3), rej50."""
    y, s, w = _arrays(labels, scores, weights)
    out = {"auc": auc(y, s, w), "accuracy": accuracy(y, s, w)}
    for eff in SIGNAL_EFFICIENCIES:
        out[f"rej{round(eff * 100)}"] = background_rejection(y, s, w, eff)
    return out


def weighted_bce_with_logits(logits, labels, weights):
    """Σ w·BCE(logit, label) / Σ w over the last axis (torch; works under vmap)."""
    import torch.nn.functional as F

    per_event = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_event * weights).sum(-1) / weights.sum(-1).clamp_min(1e-30)


def binned(
    labels, scores, weights, values, edges: Sequence[float]
) -> list[dict[str, Any]]:
    """AUC and accuracy of the events in each bin [edges[i], edges[i+1]) of ``values``."""
    y, s, w = _arrays(labels, scores, weights)
    v = np.asarray(values, dtype=np.float64).ravel()
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (v >= lo) & (v < hi)
        out.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "n": int(sel.sum()),
                "auc": auc(y[sel], s[sel], w[sel]) if sel.any() else math.nan,
                "accuracy": accuracy(y[sel], s[sel], w[sel]) if sel.any() else math.nan,
            }
        )
    return out


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) over finite values."""
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(arr) == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(len(arr))}


def from_json(x: Any) -> float:
    """A JSON metric back to a float (None → nan)."""
    return math.nan if x is None else float(x)


# --------------------------------------------------------------------------- regression

RESOLUTIONS = ("pt", "mass", "dR", "dPsi")


def _regression_arrays(pred, target, weight, components: int | None = None):
    """pred and target as (n, K) float64 (a 1-D array is K = 1), weights as (n,) (None: 1)."""
    p = np.ascontiguousarray(pred, dtype=np.float64)
    t = np.ascontiguousarray(target, dtype=np.float64)
    p, t = (a[:, None] if a.ndim == 1 else a for a in (p, t))
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape (n, K), got {p.shape} and {t.shape}")
    if components is not None and p.shape[1] != components:
        raise ValueError(f"expected (n, {components}) arrays (E, px, py, pz), got {p.shape}")
    w = np.ones(len(p)) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    if len(w) != len(p):
        raise ValueError(f"pred and weight differ in length: {len(p)}, {len(w)}")
    return p, t, w


def regression_metrics(pred, target, weight=None) -> dict[str, float]:
    """Weighted errors of K outputs per event, r = pred − target, means Σ w·(…) / Σ w over events:

    ``mse_k`` = mean r_k², ``mae_k`` = mean |r_k|, ``bias_k`` = mean r_k for component k = 0 … K−1,
    and ``mse``, ``mae`` their averages over the K components. nan when the weights sum to 0.
    """
    p, t, w = _regression_arrays(pred, target, weight)
    total = w.sum()
    r = p - t

    def mean(a: np.ndarray) -> np.ndarray:
        return (w @ a) / total if total > 0 else np.full(a.shape[1], math.nan)

    mse, mae, bias = mean(r * r), mean(np.abs(r)), mean(r)
    out = {"mse": float(mse.mean()), "mae": float(mae.mean())}
    for k in range(r.shape[1]):
        out.update({f"mse_{k}": float(mse[k]), f"mae_{k}": float(mae[k]), f"bias_{k}": float(bias[k])})
    return out


def weighted_quantile(x, q, weight=None):
    """Quantile(s) ``q`` of ``x`` by the inverted CDF: the smallest x_(i) (x sorted) with
    Σ_{j ≤ i} w_(j) ≥ q·Σ w. Unweighted this is ``np.quantile(x, q, method="inverted_cdf")``, and an
    integer weight counts as that many copies of the event. Weights must be ≥ 0; events of weight
    0 are left out. nan when no event has weight or ``x`` holds NaN.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    qs = np.asarray(q, dtype=np.float64)
    if len(w) != len(x):
        raise ValueError(f"x and weight differ in length: {len(x)}, {len(w)}")
    if (w < 0).any():
        raise ValueError("weighted_quantile: weights must be >= 0")
    if ((qs < 0) | (qs > 1)).any():
        raise ValueError(f"quantiles must be in [0, 1], got {qs.tolist()}")
    x, w = x[w > 0], w[w > 0]
    if len(x) == 0 or np.isnan(x).any():
        out = np.full(qs.shape, math.nan)
    else:
        order = np.argsort(x, kind="stable")
        cumulative = np.cumsum(w[order])
        i = np.searchsorted(cumulative, qs * cumulative[-1], side="left")
        out = x[order][np.minimum(i, len(x) - 1)]
    return float(out) if out.ndim == 0 else out


def _resolution_quantities(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per event (float64): relative pT and mass errors (nan where the true value is 0), ΔR, ΔΨ."""
    p, t = torch.from_numpy(pred), torch.from_numpy(target)

    def relative(f) -> np.ndarray:
        true = f(t).numpy()
        safe = np.where(true > 0, true, 1.0)
        return np.where(true > 0, (f(p).numpy() - true) / safe, math.nan)

    return {
        "pt": relative(kin.pt),
        "mass": relative(kin.mass),
        "dR": kin.delta_r(p, t).numpy(),
        "dPsi": kin.angle(p, t).numpy(),
    }


def _resolutions(quantities: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
    """Half the 16–84 % range of the relative pT and mass errors; 68 % quantiles of ΔR and ΔΨ."""
    out = {}
    for name in RESOLUTIONS:
        x = quantities[name]
        ok = ~np.isnan(x)
        if name in ("pt", "mass"):
            lo, hi = weighted_quantile(x[ok], [0.16, 0.84], w[ok])
            out[name] = float(0.5 * (hi - lo))
        else:
            out[name] = weighted_quantile(x[ok], 0.68, w[ok])
    return out


def four_vector_resolutions(pred, target, weight=None) -> dict[str, float]:
    """PELICAN's resolutions of predicted four-momenta (n, 4) = (E, px, py, pz), in float64:

    - ``pt``: half the 16–84 % inter-quantile range of (pT_pred − pT_true) / pT_true;
    - ``mass``: the same for (m_pred − m_true) / m_true (m = √max(m², 0));
    - ``dR``: the 68 % quantile of ΔR = √(Δη² + Δφ²) between prediction and truth (φ wrapped);
    - ``dPsi``: the 68 % quantile of the 3-D angle between the predicted and true momenta.

    Quantiles are :func:`weighted_quantile`'s; events whose true pT (mass) is 0 are left out of
    ``pt`` (``mass``). nan when no event is left.
    """
    p, t, w = _regression_arrays(pred, target, weight, components=4)
    return _resolutions(_resolution_quantities(p, t), w)


def resolution_vs(pred, target, x, bins: int | Sequence[float] = 6, weight=None) -> dict[str, list]:
    """:func:`four_vector_resolutions` in bins of ``x`` (e.g. the true pT), for a "resolution vs x" plot.

    ``bins``: a number of quantile bins (edges at equal (weighted) shares of ``x``, from its
    minimum to its maximum) or increasing edges. Bins are [edges[i], edges[i+1]), the last one
    closed; events outside the edges are left out. Returns lists, one entry per bin: ``edges``
    (one more), ``centers`` (the weighted median of ``x`` in the bin), ``counts`` (events),
    and ``pt``, ``mass``, ``dR``, ``dPsi`` (nan for an empty bin).
    """
    p, t, w = _regression_arrays(pred, target, weight, components=4)
    v = np.asarray(x, dtype=np.float64).ravel()
    if len(v) != len(p):
        raise ValueError(f"pred and x differ in length: {len(p)}, {len(v)}")
    if isinstance(bins, (int, np.integer)):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        edges = np.unique(weighted_quantile(v, np.linspace(0, 1, bins + 1), w))
        edges = np.repeat(edges, 2) if len(edges) == 1 else edges
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or (np.diff(edges) <= 0).any():
            raise ValueError(f"bin edges must be at least two increasing numbers, got {edges.tolist()}")
    index = np.searchsorted(edges, v, side="right") - 1
    index[v == edges[-1]] = len(edges) - 2
    quantities = _resolution_quantities(p, t)
    out: dict[str, list] = {"edges": edges.tolist(), "centers": [], "counts": [], **{k: [] for k in RESOLUTIONS}}
    for b in range(len(edges) - 1):
        sel = index == b
        out["centers"].append(weighted_quantile(v[sel], 0.5, w[sel]))
        out["counts"].append(int(sel.sum()))
        for name, value in _resolutions({k: q[sel] for k, q in quantities.items()}, w[sel]).items():
            out[name].append(value)
    return out
