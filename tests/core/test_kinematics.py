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
