"""The zmumu generator: physics of the truth, the detector smearing, reweighting, seeds, uniqueness."""

import hashlib

import numpy as np
import pytest
import torch
import vector
from scipy import integrate, stats

from symfw.core import kinematics as k
from symfw.core.data import make_split, resolve_data
from symfw.core.errors import DataError
from symfw.core.inspect import half_width, quantities, reweight_chi2
from symfw.plugins import zmumu as Z

N = 100_000


def generate(n=N, seed=11, **options):
    return Z.Zmumu(Z.ZmumuOptions(**options)).generate(n, seed)


@pytest.fixture(scope="module")
def events():
    return generate()


def pt(p4):
    return np.hypot(p4[..., 1], p4[..., 2])


def rel_shifts(data):
    """Each muon's measured pT over its true pT, minus one: (n, 2)."""
    return pt(data.p4) / pt(data.p4_true) - 1


# --------------------------------------------------------------------------- truth


def test_breit_wigner_sampler_follows_its_density():
    rng = np.random.default_rng(0)
    m = Z.breit_wigner_masses(rng, 200_000, 60, 120, 91.1876, 2.4952)
    edges = np.linspace(80, 100, 41)
    density = lambda x: 1 / ((x * x - 91.1876**2) ** 2 + (91.1876 * 2.4952) ** 2)  # noqa: E731
    total = integrate.quad(density, 60, 120, points=[91.1876], limit=200)[0]
    expected = np.array([integrate.quad(density, a, b)[0] for a, b in zip(edges[:-1], edges[1:])]) / total * len(m)
    observed, _ = np.histogram(m, edges)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, len(observed)) > 1e-3
    assert m.min() >= 60 and m.max() <= 120


def test_power_law_sampler_follows_m_to_the_minus_k():
    rng = np.random.default_rng(1)
    for power in (2.0, 4.0):
        m = Z.power_law_masses(rng, 50_000, 60, 120, power)
        e = 1 - power
        cdf = lambda x: (x**e - 60**e) / (120**e - 60**e)  # noqa: E731
        assert stats.kstest(m, cdf).pvalue > 1e-3


def test_cos_theta_star_follows_one_plus_cos2():
    c = Z.cos_theta_star(np.random.default_rng(2), 100_000)
    cdf = lambda x: (x + x**3 / 3 + 4 / 3) / (8 / 3)  # noqa: E731
    assert stats.kstest(c, cdf).pvalue > 1e-3
    assert np.abs(c).max() <= 1 + 1e-12


def test_boson_pt_has_a_few_gev_peak_and_a_tail_to_100_gev(events):
    boson = quantities(events.p4_true, events.mask)["dimuon-pt"]
    counts, edges = np.histogram(boson, np.arange(0, 30, 1.0))
    assert 2 <= edges[counts.argmax()] <= 6  # peak of a few GeV
    assert 0.01 < (boson > 50).mean() < 0.1  # a long tail …
    assert (boson > 100).sum() > 100  # … reaching beyond 100 GeV
    assert boson.min() > 0  # never at rest in the transverse plane (the reference code's flaw)


def test_decay_conserves_four_momentum_and_has_the_rest_frame_angle():
    rng = np.random.default_rng(3)
    n = 1000
    m, ptb, y = rng.uniform(60, 120, n), rng.exponential(20, n), rng.normal(0, 1.5, n)
    phi, cos_t, phi_star = rng.uniform(-np.pi, np.pi, n), rng.uniform(-1, 1, n), rng.uniform(0, 2 * np.pi, n)
    mu = Z.decay_to_lab(m, ptb, y, phi, cos_t, phi_star)
    total = torch.as_tensor(mu.sum(1))
    np.testing.assert_allclose(k.mass(total).numpy(), m, rtol=1e-10)
    np.testing.assert_allclose(k.pt(total).numpy(), ptb, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(k.rapidity(total).numpy(), y, atol=1e-9)
    np.testing.assert_allclose(k.mass2(torch.as_tensor(mu)).numpy(), 0, atol=1e-8)
    # boost the first muon back into the boson rest frame: its polar angle is θ*
    v = vector.array({"E": mu[:, 0, 0], "px": mu[:, 0, 1], "py": mu[:, 0, 2], "pz": mu[:, 0, 3]})
    boson = vector.array({"E": mu[..., 0].sum(1), "px": mu[..., 1].sum(1), "py": mu[..., 2].sum(1), "pz": mu[..., 3].sum(1)})
    rest = v.boost_beta3(-boson.to_beta3())
    np.testing.assert_allclose(rest.costheta, cos_t, atol=1e-9)


# --------------------------------------------------------------------------- events


def test_classes_balanced_and_interleaved(events):
    assert len(events) == N and events.label.sum() == N // 2
    assert 0.4 < events.label[: N // 10].mean() < 0.6  # not sorted by class
    imbalanced = generate(10_000, signal_fraction=0.3)
    assert imbalanced.label.sum() == 3000


def test_same_seed_same_events_other_seed_other_events():
    a, b, c = generate(5000, seed=4), generate(5000, seed=4), generate(5000, seed=5)
    np.testing.assert_array_equal(a.p4, b.p4)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.isin(a.p4[:, 0, 1], c.p4[:, 0, 1]).any()


def test_every_event_unique_and_splits_share_none(events):
    rows = events.p4.reshape(len(events), -1)
    assert len(np.unique(rows, axis=0)) == len(events)
    split = make_split(events.label, seed=0)
    parts = [set(map(bytes, rows[idx])) for idx in (split.train, split.val, split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])


def test_mass_matches_scikit_hep_vector(events):
    def vec(p):
        return vector.array({"E": p[:, 0], "px": p[:, 1], "py": p[:, 2], "pz": p[:, 3]})

    for p4 in (events.p4, events.p4_true):
        ours = quantities(p4, events.mask)["mass"]
        theirs = (vec(p4[:, 0]) + vec(p4[:, 1])).mass
        np.testing.assert_allclose(ours, theirs, rtol=1e-9)
        torch_mass = k.mass(torch.as_tensor(p4).sum(1)).numpy()
        np.testing.assert_allclose(torch_mass, theirs, rtol=1e-9)
    true_mass = quantities(events.p4_true, events.mask)["mass"]
    assert true_mass.min() > 60 - 1e-9 and true_mass.max() < 120 + 1e-9


def test_signal_peaks_at_the_z_and_background_falls(events):
    m = quantities(events.p4_true, events.mask)["mass"]
    sig = m[events.label == 1]
    assert abs(np.median(sig) - 91.19) < 0.15
    assert 1.6 < half_width(sig) < 2.6  # Γ_Z/2 · tan(0.34π) ≈ 2.3 GeV, truncated
    bkg, _ = np.histogram(m[events.label == 0], np.linspace(60, 120, 7))
    assert (np.diff(bkg) < 0).all()


# --------------------------------------------------------------------------- detector


def test_muons_massless_eta_phi_kept_leading_first_and_accepted(events):
    for p4 in (events.p4, events.p4_true):
        np.testing.assert_allclose(p4[..., 0], np.linalg.norm(p4[..., 1:], axis=-1), rtol=1e-12)
    np.testing.assert_allclose(np.arctan2(events.p4[..., 2], events.p4[..., 1]),
                               np.arctan2(events.p4_true[..., 2], events.p4_true[..., 1]), atol=1e-12)
    eta = np.arcsinh(events.p4[..., 3] / pt(events.p4))
    eta_true = np.arcsinh(events.p4_true[..., 3] / pt(events.p4_true))
    np.testing.assert_allclose(eta, eta_true, atol=1e-12)
    assert (pt(events.p4[:, 0]) >= pt(events.p4[:, 1])).all()
    assert (np.abs(eta) < 2.5).all() and (pt(events.p4) > 10).all()
    loose = generate(20_000, eta_max=None, pt_min=None)
    assert (np.abs(np.arcsinh(loose.p4[..., 3] / pt(loose.p4))) > 2.5).any()
    assert (pt(loose.p4) < 10).any()


def test_smearing_is_independent_per_muon():
    data = generate(N, eta_max=None, pt_min=None)
    shifts = rel_shifts(data)
    # which muon leads is decided by the smeared pT; label the two muons at random instead
    flip = np.random.default_rng(0).random(len(data)) < 0.5
    a, b = np.where(flip, shifts[:, 1], shifts[:, 0]), np.where(flip, shifts[:, 0], shifts[:, 1])
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(len(data))
    pulls = shifts / Z.resolution(pt(data.p4_true), 0.05, 0.002)
    assert abs(pulls.std() - 1) < 0.02 and abs(pulls.mean()) < 0.02


def test_smeared_mass_width_grows_with_pt_and_the_true_one_does_not(events):
    sig = events.label == 1
    q, q_true = quantities(events.p4[sig], events.mask[sig]), quantities(events.p4_true[sig], events.mask[sig])
    bottom, top = q["dimuon-pt"] < 20, q["dimuon-pt"] >= 50
    assert top.sum() > 1000
    assert half_width(q["mass"][top]) > 1.2 * half_width(q["mass"][bottom])
    assert half_width(q_true["mass"][top]) < 1.15 * half_width(q_true["mass"][bottom])


def test_constant_fraction_resolution_does_not_depend_on_pt():
    """σ = 0.10·pT scales each massless muon by its own factor: m_meas/m_true is pT-independent."""
    data = generate(N, resolution=0.10, resolution_slope=0.0)
    sig = data.label == 1
    q, q_true = quantities(data.p4[sig], data.mask[sig]), quantities(data.p4_true[sig], data.mask[sig])
    ratio = q["mass"] / q_true["mass"]
    bottom, top = q["dimuon-pt"] < 20, q["dimuon-pt"] >= 50
    assert abs(half_width(ratio[top]) / half_width(ratio[bottom]) - 1) < 0.08
    np.testing.assert_allclose(rel_shifts(data).std(), 0.10, rtol=0.05)


# --------------------------------------------------------------------------- reweighting


def chi2_ndf(data, variable, edges):
    chi2, ndf = reweight_chi2(data, variable, edges)
    return chi2, ndf


@pytest.mark.parametrize("mode", ["weights", "resample"])
@pytest.mark.parametrize("variable", ["leading-pt", "dimuon-pt"])
def test_reweighted_background_matches_signal(mode, variable):
    data = generate(60_000, seed=5, reweight=mode, reweight_variable=variable)
    # different bins from the 100 equal-population bins used to reweight
    edges = np.linspace(12, 90, 40) if variable == "leading-pt" else np.concatenate([np.linspace(0, 40, 33), [60, 100]])
    chi2, ndf = chi2_ndf(data, variable, edges)
    assert stats.chi2.sf(chi2, ndf) > 1e-3, (chi2, ndf)
    if mode == "resample":
        assert (data.weight == 1).all()
        assert len(np.unique(data.p4.reshape(len(data), -1), axis=0)) == len(data)
    else:
        assert data.weight[data.label == 1].tolist() == [1.0] * 30_000
        np.testing.assert_allclose(data.weight[data.label == 0].mean(), 1.0)


def test_without_reweighting_the_leading_pt_spectra_differ():
    data = generate(60_000, seed=5, reweight="none")
    assert (data.weight == 1).all()
    chi2, ndf = chi2_ndf(data, "leading-pt", np.linspace(12, 90, 40))
    assert chi2 / ndf > 10


# --------------------------------------------------------------------------- plumbing


def test_registered_and_resolved_with_options():
    data = resolve_data("zmumu", n_events=2000, seed=1, options={"resolution": 0.2, "resolution_slope": 0})
    assert len(data) == 2000 and data.meta["resolution"] == 0.2 and data.meta["source"] == "zmumu"
    np.testing.assert_allclose(rel_shifts(data).std(), 0.2, rtol=0.15)
    assert len(Z.Zmumu(Z.ZmumuOptions(n_events=3000)).generate(None, 0)) == 3000


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mass_window": [120, 60]}, "mass_window"),
        ({"reweight": "sometimes"}, "reweight"),
        ({"nope": 1}, "nope: unknown option"),
        ({"signal_fraction": 1.5}, "signal_fraction"),
    ],
)
def test_bad_options_are_data_errors(options, message):
    with pytest.raises(DataError, match=message):
        resolve_data("zmumu", n_events=100, options=options)


def test_progress_reports_every_event():
    seen = []
    Z.Zmumu().generate(150_000, 0, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (150_000, 150_000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 2


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# pinned before the regression target was added: the events themselves must not change
@pytest.mark.parametrize(
    "options, pinned",
    [
        ({}, "0809cbb6c3604461"),
        ({"reweight": "resample"}, "1a476deecebae649"),
        ({"reweight": "none", "resolution": 0.1, "resolution_slope": 0}, "9a2cecfe57315dfb"),
    ],
)
def test_events_are_pinned_for_a_seed(options, pinned):
    data = generate(5000, seed=3, **options)
    assert data.p4.dtype == data.p4_true.dtype == data.weight.dtype == np.float64 and data.label.dtype == np.int64
    assert digest(data.p4, data.label, data.p4_true, data.weight) == pinned


@pytest.mark.parametrize("options", [{}, {"reweight": "resample"}])
def test_target_is_the_true_dimuon_four_momentum(options):
    data = generate(5000, seed=3, **options)
    assert data.target.shape == (5000, 4) and data.target.dtype == np.float64 and data.target_dim == 4
    np.testing.assert_array_equal(data.target, data.p4_true[:, 0] + data.p4_true[:, 1])
    v = vector.array({k: data.target[:, i] for i, k in enumerate(("E", "px", "py", "pz"))})
    assert v.mass.min() > 60 - 1e-6 and v.mass.max() < 120 + 1e-6  # the true mass window
    measured = data.p4.sum(1)
    assert not np.allclose(measured, data.target)  # the target is unsmeared, p4 is not
    assert data.describe()["target_dim"] == 4
