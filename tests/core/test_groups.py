"""Groups: metric preservation, exp of generators, and agreement with scikit-hep `vector`."""

import math

import numpy as np
import pytest
import torch
import vector
from conftest import random_events

import symfw
from symfw.core.kinematics import metric

GROUPS = ["lorentz", "so3", "so2-z", "boost-z", "longitudinal", "trivial"]


def group(name, **options):
    cls = symfw.get_registry().get("group", name)
    return cls(cls.Options(**options))


@pytest.mark.parametrize("name", GROUPS)
def test_sampled_elements_preserve_the_metric(name):
    g = group(name, max_rapidity=3.0)
    lam = g.sample(500, rng=torch.Generator().manual_seed(1))
    eta = metric()
    err = (lam.transpose(1, 2) @ eta @ lam - eta).abs().amax()
    assert err < 1e-9 * math.cosh(3.0) ** 2
    assert torch.linalg.det(lam).sub(1).abs().amax() < 1e-8  # proper
    assert (lam[:, 0, 0] >= 1 - 1e-12).all()  # orthochronous


@pytest.mark.parametrize("name", GROUPS)
def test_generators_are_in_the_lorentz_algebra(name):
    g = group(name)
    gens = g.generators()
    assert gens.shape == (len(g.generator_names), 4, 4)
    eta = metric()
    # T^T η + η T = 0 is the condition for exp(θT) to preserve η
    if len(gens):
        assert (gens.transpose(1, 2) @ eta + eta @ gens).abs().amax() == 0


def test_trivial_group_samples_identity():
    lam = group("trivial").sample(3)
    assert torch.equal(lam, torch.eye(4, dtype=torch.float64).expand(3, 4, 4))


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_exp_of_boost_generator_matches_the_analytic_boost(axis):
    g = group("lorentz", max_rapidity=3.0)
    lam = g.sample(200, generator=f"K{axis}", rng=torch.Generator().manual_seed(2))
    i = {"x": 1, "y": 2, "z": 3}[axis]
    y = torch.asinh(lam[:, 0, i])
    assert y.abs().max() <= 3.0 + 1e-12 and y.abs().max() > 1.0
    expected = torch.eye(4, dtype=torch.float64).repeat(200, 1, 1)
    expected[:, 0, 0] = expected[:, i, i] = torch.cosh(y)
    expected[:, 0, i] = expected[:, i, 0] = torch.sinh(y)
    torch.testing.assert_close(lam, expected, rtol=1e-12, atol=1e-12)


def test_exp_of_rotation_generator_is_right_handed():
    g = group("so2-z")
    lam = g.sample(50, generator="Jz", rng=torch.Generator().manual_seed(3))
    angle = torch.atan2(lam[:, 2, 1], lam[:, 1, 1])
    x = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    rotated = lam @ x
    torch.testing.assert_close(rotated[:, 1], torch.cos(angle))
    torch.testing.assert_close(rotated[:, 2], torch.sin(angle))


def test_unknown_generator_is_a_clear_error():
    with pytest.raises(symfw.UsageError, match="no generator 'Kq'; known: Kx, Ky, Kz, Jx, Jy, Jz"):
        group("lorentz").sample(2, generator="Kq")


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_boosts_agree_with_scikit_hep_vector(axis):
    p4 = random_events(300, 1, mass=0.105)[:, 0]
    g = group("lorentz", max_rapidity=3.0)
    lam = g.sample(300, generator=f"K{axis}", rng=torch.Generator().manual_seed(4))
    ours = (lam @ p4.unsqueeze(-1)).squeeze(-1).numpy()
    i = {"x": 1, "y": 2, "z": 3}[axis]
    beta = np.tanh(np.arcsinh(lam[:, 0, i].numpy()))
    v = vector.array({"E": p4[:, 0].numpy(), "px": p4[:, 1].numpy(), "py": p4[:, 2].numpy(), "pz": p4[:, 3].numpy()})
    boosted = getattr(v, f"boost{axis.upper()}")(beta=beta)
    theirs = np.stack([boosted.E, boosted.px, boosted.py, boosted.pz], -1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-9)


def test_act_respects_the_mask():
    p4 = random_events(8, 3)
    mask = torch.tensor([[True, True, False]] * 8)
    p4 = p4 * mask.unsqueeze(-1)
    g = group("lorentz")
    out = g.act(g.sample(8), p4, mask)
    assert torch.equal(out[:, 2], torch.zeros(8, 4, dtype=torch.float64))
    assert not torch.allclose(out[:, 0], p4[:, 0])
