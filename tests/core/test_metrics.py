"""Metrics against scikit-learn and against brute-force threshold scans."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from symfw.core import metrics as M


def random_scores(seed, n=500, weighted=True, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + 0.8 * y
    if ties:
        s = np.round(s, 1)
    w = rng.uniform(0.1, 2.0, n) if weighted else np.ones(n)
    return y, s, w


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn_with_weights(seed, ties):
    y, s, w = random_scores(seed, ties=ties)
    assert M.auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_weights_change_the_auc():
    y, s, _ = random_scores(0)
    w = np.where((s > 0) & (y == 0), 10.0, 1.0)  # upweight hard background
    assert M.auc(y, s, w) < M.auc(y, s) - 0.01


@pytest.mark.parametrize("seed", range(3))
def test_accuracy_matches_sklearn(seed):
    y, s, w = random_scores(seed)
    expected = accuracy_score(y, (s > 0).astype(int), sample_weight=w)
    assert M.accuracy(y, s, w) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eff", [0.3, 0.5])
def test_background_rejection_matches_a_threshold_scan(seed, eff):
    # unweighted, distinct scores, 100 signal events: eff·100 signal events pass the threshold
    rng = np.random.default_rng(seed)
    sig, bkg = rng.normal(1.0, 1.0, 100), rng.normal(0.0, 1.0, 400)
    y = np.r_[np.ones(100), np.zeros(400)]
    s = np.r_[sig, bkg]
    threshold = np.sort(sig)[::-1][round(eff * 100) - 1]  # the k-th highest signal score
    eps_b = (bkg >= threshold).mean()
    assert M.background_rejection(y, s, None, eff) == pytest.approx(1 / eps_b, rel=1e-12)


def test_background_rejection_interpolates_between_roc_points():
    # 2 signal events: tpr jumps 0 → 0.5 → 1; ε_S = 0.3 lies on the segment to the first point
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # ROC: (0,0) → (0, 0.5) → (1/3, 0.5) → (1/3, 1) ...; at tpr 0.3 the smallest fpr is 0
    assert M.background_rejection(y, s, None, 0.3) == math.inf
    # at tpr 0.75: halfway between (1/3, 0.5) and (1/3, 1) → fpr 1/3
    assert M.background_rejection(y, s, None, 0.75) == pytest.approx(3.0)


def test_evaluate_and_undefined_metrics():
    y, s, w = random_scores(1)
    out = M.evaluate(y, s, w)
    assert set(out) == set(M.METRICS)
    assert out["rej30"] >= out["rej50"] > 1
    one_class = M.evaluate(np.ones(10), np.arange(10.0))
    assert math.isnan(one_class["auc"]) and math.isnan(one_class["rej30"])
    assert M.jsonable(one_class)["auc"] is None


def test_weighted_bce_matches_sklearn_log_loss():
    y, s, w = random_scores(2)
    loss = M.weighted_bce_with_logits(torch.tensor(s), torch.tensor(y, dtype=torch.float64), torch.tensor(w))
    expected = log_loss(y, 1 / (1 + np.exp(-s)), sample_weight=w)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_binned_metrics_use_only_the_events_in_each_bin():
    y, s, w = random_scores(3, n=2000)
    v = np.random.default_rng(0).uniform(0, 100, len(y))
    bins = M.binned(y, s, w, v, [0, 50, 100])
    assert [b["n"] for b in bins] == [int((v < 50).sum()), int((v >= 50).sum())]
    low = v < 50
    assert bins[0]["auc"] == pytest.approx(roc_auc_score(y[low], s[low], sample_weight=w[low]))
    assert bins[1]["accuracy"] == pytest.approx(M.accuracy(y[~low], s[~low], w[~low]))


def test_mean_std_ignores_missing_values():
    assert M.mean_std([1.0, 3.0, None, float("nan")]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert M.mean_std([0.5])["std"] == 0.0
