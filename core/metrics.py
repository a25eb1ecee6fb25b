"""Classifier metrics with event weights: AUC, accuracy, background rejection.

AUC and the ROC curve come from scikit-learn (``roc_auc_score`` / ``roc_curve`` with
``sample_weight``). Scores are logits; the accuracy cut is logit 0 (probability 0.5).
Background rejection at signal efficiency ε_S is 1/ε_B, with ε_B read off the ROC curve at
TPR = ε_S: the smallest false-positive rate of a ROC point with TPR = ε_S, or the linear
interpolation between the two ROC points around it.

Metrics that are undefined (one class only, ε_B = 0) are ``nan``/``inf`` in memory and
``None`` in JSON (see :func:`jsonable`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

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


def jsonable(obj: Any) -> Any:
    """Replace nan/inf by None and NumPy scalars by Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def from_json(x: Any) -> float:
    """A JSON metric back to a float (None → nan)."""
    return math.nan if x is None else float(x)
