"""Jet-frame preprocessing (plugins/jet_inputs.py) and subnet-level input transforms."""

import numpy as np
import pytest
import torch
import vector

import symfw
from symfw.core.groups import act, random_elements
from symfw.core.interfaces import Particles
from symfw.plugins.jet_inputs import FEATURES, JetFrame


def jets(n=16, n_particles=40, seed=0):
    """Collimated sprays: constituents near a random axis, pT-ordered, the last ones padded."""
    g = torch.Generator().manual_seed(seed)
    eta0 = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3 - 1.5
    phi0 = torch.rand(n, 1, generator=g, dtype=torch.float64) * 6.2 - 3.1
    eta = eta0 + 0.2 * torch.randn(n, n_particles, generator=g, dtype=torch.float64)
    phi = phi0 + 0.2 * torch.randn(n, n_particles, generator=g, dtype=torch.float64)
    pt = torch.sort(torch.rand(n, n_particles, generator=g, dtype=torch.float64) * 100 + 0.5, dim=1, descending=True).values
    p4 = torch.stack([pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)], -1)
    mask = torch.arange(n_particles)[None] < torch.randint(10, n_particles, (n, 1), generator=g)
    return p4 * mask[..., None], mask


def features(p4, mask, **options):
    out = JetFrame(JetFrame.Options(**options))(Particles.from_p4(p4, mask))
    return out, dict(zip(FEATURES, out.channels.unbind(-1)))


def test_the_features_match_scikit_hep_vector():
    p4, mask = jets()
    _, f = features(p4, mask, rotate=False)
    jet = (p4 * mask[..., None]).sum(1)
    for b in range(3):
        J = vector.obj(E=float(jet[b, 0]), px=float(jet[b, 1]), py=float(jet[b, 2]), pz=float(jet[b, 3]))
        for i in np.flatnonzero(mask[b].numpy())[:5]:
            c = vector.obj(E=float(p4[b, i, 0]), px=float(p4[b, i, 1]), py=float(p4[b, i, 2]), pz=float(p4[b, i, 3]))
            assert float(f["deta"][b, i]) == pytest.approx(c.eta - J.eta, abs=1e-9)
            assert float(f["dphi"][b, i]) == pytest.approx(c.deltaphi(J), abs=1e-9)
            assert float(f["dr"][b, i]) == pytest.approx(np.hypot(c.eta - J.eta, c.deltaphi(J)), abs=1e-9)
            assert float(f["log_pt_frac"][b, i]) == pytest.approx(np.log(c.pt / J.pt), abs=1e-9)
            assert float(f["log_e"][b, i]) == pytest.approx(np.log(c.E), abs=1e-9)
    padded = ~mask
    assert all(float(v[padded].abs().max()) == 0 for v in f.values())


def test_rotation_aligns_the_principal_axis_and_keeps_distances():
    p4, mask = jets()
    _, plain = features(p4, mask, rotate=False)
    _, rot = features(p4, mask, rotate=True)
    w = torch.hypot(p4[..., 1], p4[..., 2]) * mask
    cxy = (w * rot["deta"] * rot["dphi"]).sum(1)
    assert float(cxy.abs().max()) < 1e-8  # no correlation left between the rotated axes
    cxx, cyy = (w * rot["deta"] ** 2).sum(1), (w * rot["dphi"] ** 2).sum(1)
    assert bool((cxx >= cyy - 1e-9).all())  # the long axis is Δη
    torch.testing.assert_close(rot["dr"], plain["dr"])


def test_features_do_not_change_when_the_jet_is_rotated_about_the_beam():
    p4, mask = jets()
    rz = random_elements("so2-z", p4.shape[0], rng=torch.Generator().manual_seed(3))
    _, before = features(p4, mask)
    _, after = features(act(rz, p4, mask), mask)
    for name in FEATURES:
        torch.testing.assert_close(after[name], before[name], rtol=1e-9, atol=1e-9)


def test_scaled_four_vectors_sum_to_the_unit_energy_jet():
    p4, mask = jets()
    out, _ = features(p4, mask)
    total = out.p4.sum(1)
    torch.testing.assert_close(total[:, 0], torch.ones(p4.shape[0], dtype=torch.float64))


def test_a_subnet_level_transform_leaves_the_other_subnet_the_plain_four_vectors():
    model = symfw.build_model(symfw.load_spec("hybrid-jets")).double().eval()
    p4, mask = jets(n=8, n_particles=128)
    boost = random_elements("lorentz", 8, rapidity=(0.5, 1.0), rng=torch.Generator().manual_seed(0))
    moved = act(boost, p4, mask)
    with torch.no_grad():
        inv, inv_moved = (model.invariant(model.transform_inputs(x, mask)) for x in (p4, moved))
        gen, gen_moved = (model.general(model.transform_inputs(x, mask)) for x in (p4, moved))
    torch.testing.assert_close(inv_moved, inv, rtol=1e-9, atol=1e-9)  # the invariant subnet stays invariant
    assert float((gen_moved - gen).abs().max()) > 1e-3  # the jet-frame PFN is not
    assert "general input transform jet-frame" in model.residual_reason


@pytest.mark.parametrize("rotate", [True, False])
def test_derivatives_through_padded_jets_are_finite(rotate):
    """SEAL's Γ_δ differentiates the model along a generator (a jvp): padded constituents must not
    turn it into NaN (√ and log at zero momentum)."""
    p4, mask = jets()
    tangent = torch.randn_like(p4) * mask[..., None]

    def channels(p):
        return JetFrame(JetFrame.Options(rotate=rotate))(Particles.from_p4(p, mask)).channels

    _, jvp = torch.func.jvp(channels, (p4,), (tangent,))
    grad = torch.autograd.functional.vjp(channels, p4, torch.ones_like(channels(p4)))[1]
    assert torch.isfinite(jvp).all() and torch.isfinite(grad).all()
    assert (jvp[~mask] == 0).all() and jvp[mask].abs().sum() > 0
