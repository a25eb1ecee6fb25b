"""Regression metrics: errors per component, the weighted quantile, PELICAN's four-vector resolutions."""

import json
import math

import numpy as np
import pytest
import vector
from scipy import stats

from symfw.core import kinematics as k
from symfw.core import metrics as M

SIGMA68 = stats.norm.ppf(0.84)  # half the 16–84 % range of N(0, 1), and the 68 % quantile of |N(0, 1)|


def four_vectors(n, seed=0, mass=(0.0, 100.0)):
    """Random timelike (E, px, py, pz), GeV: |p⃗| up to a few hundred, masses uniform in ``mass``."""
    rng = np.random.default_rng(seed)
    p3 = rng.normal(0, 60, (n, 3))
    m = rng.uniform(*mass, n)
    return np.concatenate([np.sqrt((p3**2).sum(-1) + m * m)[:, None], p3], -1)


def as_vector(p4):
    return vector.array({"E": p4[:, 0], "px": p4[:, 1], "py": p4[:, 2], "pz": p4[:, 3]})


def scaled(p4, transverse=1.0, longitudinal=1.0, energy=1.0):
    """(E, px, py, pz) with E, (px, py), pz multiplied by per-event factors."""
    f = np.stack(np.broadcast_arrays(energy, transverse, transverse, longitudinal), -1)
    return p4 * f


# --------------------------------------------------------------------------- errors per component


def test_regression_metrics_by_hand():
    pred = np.array([[1.0, 10.0], [3.0, 10.0], [2.0, 16.0]])
    target = np.array([[0.0, 12.0], [3.0, 10.0], [4.0, 10.0]])  # r = [[1, −2], [0, 0], [−2, 6]]
    out = M.regression_metrics(pred, target)
    assert out["mse_0"] == pytest.approx(5 / 3) and out["mse_1"] == pytest.approx(40 / 3)
    assert out["mae_0"] == pytest.approx(1.0) and out["mae_1"] == pytest.approx(8 / 3)
    assert out["bias_0"] == pytest.approx(-1 / 3) and out["bias_1"] == pytest.approx(4 / 3)
    assert out["mse"] == pytest.approx(45 / 6) and out["mae"] == pytest.approx(11 / 6)
    w = M.regression_metrics(pred, target, weight=[1.0, 0.0, 3.0])  # the second event does not count
    assert w["bias_0"] == pytest.approx((1 - 6) / 4) and w["mse_1"] == pytest.approx((4 + 108) / 4)
    assert sorted(out) == ["bias_0", "bias_1", "mae", "mae_0", "mae_1", "mse", "mse_0", "mse_1"]
    assert all(type(v) is float for v in out.values()) and json.dumps(out)


def test_regression_metrics_one_column_zero_weight_and_bad_shapes():
    out = M.regression_metrics(np.array([1.0, 2.0]), np.array([[0.0], [0.0]]))
    assert out == {"mse": 2.5, "mae": 1.5, "mse_0": 2.5, "mae_0": 1.5, "bias_0": 1.5}
    assert all(math.isnan(v) for v in M.regression_metrics([1.0, 2.0], [0.0, 0.0], [0.0, 0.0]).values())
    with pytest.raises(ValueError, match=r"same shape \(n, K\), got \(3, 4\) and \(3, 3\)"):
        M.regression_metrics(np.zeros((3, 4)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="pred and weight differ in length: 3, 2"):
        M.regression_metrics(np.zeros((3, 4)), np.zeros((3, 4)), [1.0, 1.0])


def test_regression_metrics_weighted_equal_duplicated():
    rng = np.random.default_rng(1)
    target = rng.normal(0, 10, (300, 4))
    pred = target + rng.normal(0.5, 2, (300, 4))
    counts = rng.integers(0, 4, 300)
    weighted = M.regression_metrics(pred, target, counts.astype(float))
    repeated = M.regression_metrics(np.repeat(pred, counts, 0), np.repeat(target, counts, 0))
    assert weighted == pytest.approx(repeated, rel=1e-12)
    assert weighted["bias_2"] == pytest.approx(0.5, abs=0.3)


# --------------------------------------------------------------------------- weighted quantile


@pytest.mark.parametrize("n, ties", [(1, False), (7, False), (10, True), (1000, False), (1001, True)])
def test_unweighted_quantile_is_numpys_inverted_cdf(n, ties):
    x = np.random.default_rng(n).normal(size=n)
    x = np.round(x, 1) if ties else x
    q = np.unique(np.concatenate([np.linspace(0, 1, 101), np.arange(n + 1) / n, [0.16, 0.68, 0.84]]))
    np.testing.assert_array_equal(M.weighted_quantile(x, q), np.quantile(x, q, method="inverted_cdf"))
    assert M.weighted_quantile(x, 0.5) == np.quantile(x, 0.5, method="inverted_cdf")
    assert isinstance(M.weighted_quantile(x, 0.5), float)


def test_weighted_quantile_counts_an_integer_weight_as_copies_and_drops_zero_weights():
    rng = np.random.default_rng(2)
    x = rng.normal(size=500)
    counts = rng.integers(0, 5, 500)
    q = np.linspace(0, 1, 201)
    expected = np.quantile(np.repeat(x, counts), q, method="inverted_cdf")
    np.testing.assert_array_equal(M.weighted_quantile(x, q, counts.astype(float)), expected)
    # a zero-weight event is never a quantile, not even the minimum
    assert M.weighted_quantile([-100.0, 1.0, 2.0], 0.0, [0.0, 1.0, 1.0]) == 1.0


@pytest.mark.skipif(tuple(int(v) for v in np.__version__.split(".")[:2]) < (2, 0), reason="numpy < 2 has no weights")
def test_weighted_quantile_matches_numpys_weighted_inverted_cdf():
    rng = np.random.default_rng(3)
    x, w = rng.exponential(size=2000), rng.uniform(0.1, 3, 2000)
    q = np.linspace(0, 1, 51)
    np.testing.assert_array_equal(M.weighted_quantile(x, q, w), np.quantile(x, q, method="inverted_cdf", weights=w))


def test_weighted_quantile_edge_cases():
    assert math.isnan(M.weighted_quantile([], 0.5)) and math.isnan(M.weighted_quantile([1.0], 0.5, [0.0]))
    assert math.isnan(M.weighted_quantile([1.0, np.nan], 0.1))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        M.weighted_quantile([1.0, 2.0], 0.5, [1.0, -1.0])
    with pytest.raises(ValueError, match=r"quantiles must be in \[0, 1\]"):
        M.weighted_quantile([1.0, 2.0], 68)


# --------------------------------------------------------------------------- four-vector resolutions


def test_per_event_quantities_match_vector():
    true = four_vectors(5000, seed=4, mass=(1.0, 100.0))
    pred = four_vectors(5000, seed=5, mass=(0.0, 100.0))
    pred[:10, 1:] *= 1e-3  # nearly at rest: large η differences, small pT
    q = M._resolution_quantities(pred, true)
    vt, vp = as_vector(true), as_vector(pred)
    np.testing.assert_allclose(q["pt"], vp.pt / vt.pt - 1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q["mass"], vp.mass / vt.mass - 1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(q["dR"], vp.deltaR(vt), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q["dPsi"], vp.deltaangle(vt), atol=1e-7)  # vector uses arccos


def test_perfect_predictions_have_zero_resolution():
    true = four_vectors(2000, seed=6)
    assert M.four_vector_resolutions(true, true) == {"pt": 0.0, "mass": 0.0, "dR": 0.0, "dPsi": 0.0}
    assert M.regression_metrics(true, true)["mse"] == 0.0


def test_gaussian_pt_smearing_gives_its_width():
    true = four_vectors(200_000, seed=7, mass=(50.0, 100.0))
    rng = np.random.default_rng(8)
    pred = scaled(true, transverse=1 + 0.05 * rng.standard_normal(len(true)))
    res = M.four_vector_resolutions(pred, true)
    assert res["pt"] == pytest.approx(0.05 * SIGMA68, rel=0.02)
    assert res["pt"] == pytest.approx(0.05, rel=0.02)
    assert res["mass"] > 0.005 and res["dR"] > 0.005  # E kept and pz kept: mass and η move too


def test_scaling_a_four_vector_moves_pt_and_mass_but_no_angle():
    true = four_vectors(200_000, seed=9, mass=(50.0, 100.0))
    f = 1 + 0.03 * np.random.default_rng(10).standard_normal(len(true))
    res = M.four_vector_resolutions(true * f[:, None], true)
    assert res["pt"] == pytest.approx(0.03 * SIGMA68, rel=0.02)
    assert res["mass"] == pytest.approx(res["pt"], rel=1e-9)  # m and pT scale by the same factor
    assert res["dR"] < 1e-12 and res["dPsi"] < 1e-12


def test_a_rotation_is_seen_by_the_angles_only():
    true = four_vectors(20_000, seed=11, mass=(50.0, 100.0))
    p = true[:, 1:]
    axis = np.cross(p, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)  # ⊥ p⃗: the angle turned is the 3-D angle
    alpha = 0.01
    turned = p * np.cos(alpha) + np.cross(axis, p) * np.sin(alpha)  # Rodrigues, axis·p⃗ = 0
    res = M.four_vector_resolutions(np.concatenate([true[:, :1], turned], 1), true)
    assert res["dPsi"] == pytest.approx(alpha, rel=1e-9)
    assert res["mass"] < 1e-9 and res["dR"] > 0.005


def test_azimuth_smearing_gives_dr_and_wraps_at_pi():
    rng = np.random.default_rng(12)
    n = 200_000
    pt, eta = rng.uniform(20, 100, n), rng.normal(0, 1.5, n)
    phi = np.where(rng.random(n) < 0.5, np.pi - 0.01, -np.pi + 0.01)  # the smearing often crosses ±π
    dphi = 0.02 * rng.standard_normal(n)
    true = k.from_pt_eta_phi_m(pt, eta, phi, np.full(n, 10.0))
    pred = k.from_pt_eta_phi_m(pt, eta, phi + dphi, np.full(n, 10.0))
    res = M.four_vector_resolutions(pred, true)
    assert res["dR"] == pytest.approx(0.02 * SIGMA68, rel=0.02)
    assert res["pt"] < 1e-12 and res["mass"] < 1e-9


def test_events_with_zero_true_pt_or_mass_are_left_out_of_those_resolutions():
    true = four_vectors(1000, seed=13, mass=(10.0, 100.0))
    pred = true * 1.1
    true[:5, 1:3] = 0.0  # along the beam: no pT
    res = M.four_vector_resolutions(pred, true)
    assert res["pt"] == pytest.approx(0.0, abs=1e-12)  # every left event has ΔpT/pT = 0.1 exactly
    along_z = true.copy()
    along_z[:, 1:3], along_z[:, 0] = 0.0, np.abs(along_z[:, 3])  # massless along the beam: m = pT = 0
    res = M.four_vector_resolutions(pred, along_z)
    assert math.isnan(res["pt"]) and math.isnan(res["mass"]) and res["dPsi"] > 0
    with pytest.raises(ValueError, match=r"expected \(n, 4\) arrays"):
        M.four_vector_resolutions(np.zeros((3, 3)), np.zeros((3, 3)))


def test_resolutions_weighted_equal_duplicated():
    true = four_vectors(3000, seed=14, mass=(50.0, 100.0))
    rng = np.random.default_rng(15)
    pred = scaled(true, transverse=1 + 0.05 * rng.standard_normal(3000), longitudinal=1 + 0.1 * rng.standard_normal(3000))
    counts = rng.integers(0, 4, 3000)
    x = np.hypot(true[:, 1], true[:, 2])
    weighted = M.four_vector_resolutions(pred, true, counts.astype(float))
    repeated = M.four_vector_resolutions(np.repeat(pred, counts, 0), np.repeat(true, counts, 0))
    assert weighted == repeated
    assert weighted != M.four_vector_resolutions(pred, true)  # the weights matter
    curve_w = M.resolution_vs(pred, true, x, bins=5, weight=counts.astype(float))
    curve_r = M.resolution_vs(np.repeat(pred, counts, 0), np.repeat(true, counts, 0), np.repeat(x, counts), bins=5)
    assert {k: v for k, v in curve_w.items() if k != "counts"} == {k: v for k, v in curve_r.items() if k != "counts"}


# --------------------------------------------------------------------------- resolution vs a variable


def test_resolution_vs_pt_in_quantile_bins():
    true = four_vectors(120_000, seed=16, mass=(50.0, 100.0))
    pt = np.hypot(true[:, 1], true[:, 2])
    rng = np.random.default_rng(17)
    sigma = 0.002 * pt  # worse at high pT
    pred = scaled(true, transverse=1 + sigma * rng.standard_normal(len(true)))
    curve = M.resolution_vs(pred, true, pt, bins=6)
    assert sorted(curve) == ["centers", "counts", "dPsi", "dR", "edges", "mass", "pt"]
    assert len(curve["edges"]) == 7 and all(len(curve[k]) == 6 for k in ("centers", "counts", *M.RESOLUTIONS))
    assert curve["edges"][0] == pt.min() and curve["edges"][-1] == pt.max()
    assert sum(curve["counts"]) == len(pt) and max(curve["counts"]) - min(curve["counts"]) <= 2
    assert all(lo < c < hi for lo, c, hi in zip(curve["edges"][:-1], curve["centers"], curve["edges"][1:]))
    assert np.all(np.diff(curve["pt"]) > 0)
    for b in range(6):
        sel = (pt >= curve["edges"][b]) & ((pt < curve["edges"][b + 1]) if b < 5 else True)
        assert curve["pt"][b] == M.four_vector_resolutions(pred[sel], true[sel])["pt"]
        assert curve["centers"][b] == np.quantile(pt[sel], 0.5, method="inverted_cdf")
    json.dumps(M.jsonable(curve))


def test_resolution_vs_with_edges_leaves_out_events_outside_and_empty_bins_are_nan():
    true = four_vectors(1000, seed=18, mass=(50.0, 100.0))
    pt = np.hypot(true[:, 1], true[:, 2])
    curve = M.resolution_vs(true * 1.05, true, pt, bins=[20.0, 50.0, 80.0, 1e6, 2e6])
    assert curve["counts"] == [int(((pt >= 20) & (pt < 50)).sum()), int(((pt >= 50) & (pt < 80)).sum()),
                               int((pt >= 80).sum()), 0]
    assert curve["pt"][0] == pytest.approx(0.0, abs=1e-12) and math.isnan(curve["pt"][3])
    assert math.isnan(curve["centers"][3]) and M.jsonable(curve)["pt"][3] is None
    with pytest.raises(ValueError, match="bin edges must be at least two increasing numbers"):
        M.resolution_vs(true, true, pt, bins=[50.0, 20.0])
    with pytest.raises(ValueError, match="pred and x differ in length: 1000, 999"):
        M.resolution_vs(true, true, pt[:-1])
