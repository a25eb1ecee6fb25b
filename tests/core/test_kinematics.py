"""Kinematics against scikit-hep `vector` (an independent implementation), with hypothesis."""

import numpy as np
import torch
import vector
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from symfw.core import kinematics as k

finite = st.floats(-500, 500, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(px=finite, py=finite, pz=finite, m=st.floats(0, 100))
def test_quantities_match_vector(px, py, pz, m):
    e = float(np.sqrt(px * px + py * py + pz * pz + m * m))
    assume(e > 1e-3)  # physical scale: energies above 1 MeV
    ours = torch.tensor([e, px, py, pz], dtype=torch.float64)
    v = vector.obj(E=e, px=px, py=py, pz=pz)
    assert np.isclose(float(k.pt(ours)), v.pt, rtol=1e-12, atol=1e-12)
    assert np.isclose(float(k.mass2(ours)), v.tau2, rtol=1e-9, atol=1e-9 * e * e + 1e-12)
    if v.pt > 1e-6:
        assert np.isclose(float(k.phi(ours)), v.phi, atol=1e-12)
        assert np.isclose(float(k.eta(ours)), v.eta, rtol=1e-9, atol=1e-9)
    if e - abs(pz) > 1e-6 * e:
        assert np.isclose(float(k.rapidity(ours)), v.rapidity, rtol=1e-9, atol=1e-8)


def test_pairwise_mdot_matches_vector_dot():
    g = torch.Generator().manual_seed(0)
    p3 = torch.randn(50, 3, 3, generator=g, dtype=torch.float64) * 30
    p4 = torch.cat([p3.norm(dim=-1, keepdim=True) + 1, p3], -1)
    d = k.pairwise_mdot(p4).numpy()
    v = vector.array({"E": p4[..., 0].numpy(), "px": p4[..., 1].numpy(), "py": p4[..., 2].numpy(), "pz": p4[..., 3].numpy()})
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(d[:, i, j], v[:, i].dot(v[:, j]), rtol=1e-12)


def test_from_pt_eta_phi_m_roundtrip():
    pt = np.array([10.0, 45.0]); eta = np.array([0.3, -2.0]); phi = np.array([1.0, -3.0])
    p4 = k.from_pt_eta_phi_m(pt, eta, phi, np.array([0.0, 0.105]))
    v = vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": np.array([0.0, 0.105])})
    np.testing.assert_allclose(p4, np.stack([v.E, v.px, v.py, v.pz], -1), rtol=1e-12)


def as_vector(p4):
    return vector.array({"E": p4[..., 0], "px": p4[..., 1], "py": p4[..., 2], "pz": p4[..., 3]})


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(finite, finite, finite), b=st.tuples(finite, finite, finite))
def test_delta_phi_delta_r_and_angle_match_vector(a, b):
    ours = [torch.tensor([float(np.linalg.norm(p)) + 1.0, *p], dtype=torch.float64) for p in (a, b)]
    va, vb = (vector.obj(E=float(o[0]), px=float(o[1]), py=float(o[2]), pz=float(o[3])) for o in ours)
    norms = [float(np.linalg.norm(p)) for p in (a, b)]
    assume(min(norms) > 1e-3)
    assert np.isclose(float(k.angle(*ours)), va.deltaangle(vb), atol=1e-7)  # vector: arccos, less exact
    assume(min(va.pt, vb.pt) > 1e-6)
    dphi = float(k.delta_phi(*ours))
    assert -np.pi <= dphi < np.pi
    assert np.isclose(np.cos(dphi), np.cos(va.deltaphi(vb)), atol=1e-12)
    assert np.isclose(abs(dphi), abs(va.deltaphi(vb)), atol=1e-9)  # ±π: either sign
    assert np.isclose(float(k.delta_r(*ours)), va.deltaR(vb), rtol=1e-9, atol=1e-9)


def test_angle_is_exact_at_zero_and_pi_and_delta_phi_wraps():
    rng = np.random.default_rng(4)
    p3 = rng.normal(0, 40, (1000, 3))
    p4 = torch.tensor(np.concatenate([np.linalg.norm(p3, axis=-1, keepdims=True), p3], -1))
    assert (k.angle(p4, p4) == 0).all()
    assert k.angle(p4, 3 * p4).max() < 1e-15  # arccos(cos) would give ~1e-8 here
    flipped = p4 * torch.tensor([1.0, -1, -1, -1], dtype=torch.float64)
    assert torch.allclose(k.angle(p4, flipped), torch.full((1000,), np.pi, dtype=torch.float64), atol=1e-12)
    # φ = 3.1 and φ = −3.1 are 2π − 6.2 apart, not 6.2
    near = k.from_pt_eta_phi_m(torch.tensor([10.0, 10.0]), torch.tensor([0.5, 0.5]), torch.tensor([3.1, -3.1]))
    d = k.delta_phi(near[0], near[1])
    assert torch.isclose(d, torch.tensor(6.2 - 2 * np.pi, dtype=d.dtype), atol=1e-6)
    assert torch.isclose(k.delta_r(near[0], near[1]), d.abs(), atol=1e-6)
    va = as_vector(p4.numpy())
    np.testing.assert_allclose(k.delta_r(p4, p4.roll(1, 0)).numpy(), va.deltaR(va[np.roll(np.arange(1000), 1)]), rtol=1e-10)
