"""Groups: metric preservation, exp of generators, and agreement with scikit-hep `vector`."""

import math

import numpy as np
import pytest
import torch
import vector
from conftest import random_events

import symfw
from symfw.core.kinematics import metric

GROUPS = ["lorentz", "so3", "so2-z", "so12-z", "se2", "boost-z", "longitudinal", "trivial"]


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


# --------------------------------------------------------------------------- symfw.core.groups: one distribution

from symfw.core.groups import act, random_elements, tangents  # noqa: E402
from symfw.plugins.lorentz_groups import Lorentz  # noqa: E402


def boost_rapidity(lam):
    """|y| of Λ = R·B: a rotation keeps the time row, so Λ₀₀ = cosh y."""
    return torch.acosh(lam[:, 0, 0].clamp_min(1.0))


def quartiles(x):
    return x.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype))


def test_random_elements_follow_the_documented_ranges():
    rng = torch.Generator().manual_seed(0)
    y = boost_rapidity(random_elements("lorentz", 4000, rapidity=(0.3, 0.8), rng=rng))
    assert y.min() >= 0.3 - 1e-9 and y.max() <= 0.8 + 1e-9
    torch.testing.assert_close(quartiles(y), torch.tensor([0.425, 0.55, 0.675], dtype=torch.float64), atol=0.02, rtol=0)
    # |β| = tanh|y| uniform in a β range instead
    beta = torch.tanh(boost_rapidity(random_elements("lorentz", 4000, beta=(0.2, 0.9), rng=rng)))
    torch.testing.assert_close(quartiles(beta), torch.tensor([0.375, 0.55, 0.725], dtype=torch.float64), atol=0.02, rtol=0)
    # rotations only: the angle of R from its trace, uniform in the angle range
    rot = random_elements("lorentz", 4000, generators=["Jx", "Jy", "Jz"], angle=(0.5, 1.0), rng=rng)
    phi = torch.acos(((rot[:, 1:, 1:].diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    torch.testing.assert_close(quartiles(phi), torch.tensor([0.625, 0.75, 0.875], dtype=torch.float64), atol=0.02, rtol=0)
    assert (rot[:, 0, 0] == 1).all()


def test_default_ranges_are_the_groups_options():
    rng = torch.Generator().manual_seed(1)
    y = boost_rapidity(random_elements(group("lorentz", max_rapidity=2.5), 3000, rng=rng))
    assert 2.4 < y.max() <= 2.5 + 1e-9
    assert boost_rapidity(random_elements("lorentz", 3000, rng=rng)).max() <= 1 + 1e-9


def test_boost_directions_are_uniform_on_the_sphere():
    lam = random_elements("lorentz", 20000, generators=["Kx", "Ky", "Kz"], rapidity=(1.0, 1.0),
                          rng=torch.Generator().manual_seed(2))
    n = lam[:, 0, 1:] / math.sinh(1.0)  # the boost's direction
    torch.testing.assert_close(n.norm(dim=1), torch.ones(20000, dtype=torch.float64))
    torch.testing.assert_close(n.mean(0), torch.zeros(3, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(n.T @ n / 20000, torch.eye(3, dtype=torch.float64) / 3, atol=0.01, rtol=0)


def test_a_fixed_size_along_one_generator_is_plus_or_minus_theta():
    lam = random_elements("lorentz", 200, generators=["Kz"], rapidity=(0.7, 0.7), rng=torch.Generator().manual_seed(3))
    y = torch.atanh(lam[:, 0, 3] / lam[:, 0, 0])
    torch.testing.assert_close(y.abs(), torch.full((200,), 0.7, dtype=torch.float64))
    assert 60 < int((y > 0).sum()) < 140


def test_random_elements_by_name_seed_dtype_device_and_axis():
    a = random_elements("so2-z", 16, rng=torch.Generator().manual_seed(4))
    b = random_elements(group("so2-z"), 16, rng=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    c = random_elements("lorentz", 8)
    torch.manual_seed(5)
    assert torch.equal(c, random_elements("lorentz", 8))  # rng=None: torch's global generator
    f32 = random_elements("lorentz", 8, dtype=torch.float32, device="cpu", rng=torch.Generator().manual_seed(6))
    assert f32.dtype == torch.float32 and f32.device.type == "cpu"
    axis = random_elements("lorentz", 64, generators=["Kx", "Ky", "Kz"], direction="axis", rng=torch.Generator().manual_seed(7))
    assert ((axis[:, 0, 1:].abs() > 1e-12).sum(1) == 1).all()  # one axis each
    assert torch.equal(random_elements("trivial", 3), torch.eye(4, dtype=torch.float64).repeat(3, 1, 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rapidity=(1.0, 0.5)), "a range must be \\[low, high\\] with 0 <= low <= high < inf"),
        (dict(beta=(0.5, 1.0)), "< 1"),
        (dict(rapidity=(0, 1), beta=(0, 0.5)), "a rapidity range or a beta range, not both"),
        (dict(generators=["Kq"]), "group 'lorentz' has no generator 'Kq'"),
    ],
)
def test_bad_requests_are_one_line_usage_errors(kwargs, message):
    with pytest.raises(symfw.UsageError, match=message):
        random_elements("lorentz", 2, **kwargs)
    with pytest.raises(symfw.UsageError, match="unknown group 'lorenz'; known: .*lorentz"):
        random_elements("lorenz", 2)


def test_act_moves_only_real_particles_in_float64():
    p4 = random_events(6, 3, dtype=torch.float32)
    mask = torch.tensor([[True, True, False]] * 6)
    p4[:, 2] = 77.0  # junk in the padded slot
    lam = random_elements("lorentz", 6, rapidity=(2.0, 3.0), rng=torch.Generator().manual_seed(8))
    out = act(lam, p4, mask)
    assert out.dtype == torch.float32 and torch.equal(out[:, 2], p4[:, 2])
    exact = torch.einsum("bij,bnj->bni", lam, p4.double())
    torch.testing.assert_close(out[:, :2], exact[:, :2].float())  # rounded once, from float64
    torch.testing.assert_close(act(lam[0], p4), act(lam[:1].expand(6, 4, 4), p4))  # one element for all


def test_tangents_are_the_derivative_of_the_action():
    p4 = random_events(5, 2)
    mask = torch.tensor([[True, False]] * 5)
    gens = Lorentz().generators()
    t = tangents(gens, p4, mask)
    eps = 1e-6
    for a, g in enumerate(gens):
        plus, minus = act(torch.linalg.matrix_exp(eps * g), p4), act(torch.linalg.matrix_exp(-eps * g), p4)
        torch.testing.assert_close(t[a, :, 0], ((plus - minus) / (2 * eps))[:, 0], rtol=1e-6, atol=1e-6)
    assert (t[:, :, 1] == 0).all()


def test_every_caller_draws_from_random_elements():
    from symfw.core.diagnostics import invariance_curves
    from symfw.core.invariance import invariance_deviation
    from symfw.plugins.seal_group import SealGroup
    from symfw.plugins.seal_infinitesimal import SealInfinitesimal

    lorentz, n = Lorentz(), 12
    # Γ_G and Γ_δ's orbit points: torch's global generator, their own ranges
    torch.manual_seed(9)
    sealed = SealGroup(SealGroup.Options(rapidity=(0.2, 0.4), generators=["Kx", "Jz"]), lorentz).sample(n)
    torch.manual_seed(9)
    assert torch.equal(sealed, random_elements(lorentz, n, generators=["Kx", "Jz"], rapidity=(0.2, 0.4)))
    from symfw.core.interfaces import Batch

    p4, mask = random_events(n, 2), torch.ones(n, 2, dtype=torch.bool)
    b = Batch(p4, mask, torch.zeros(n), torch.ones(n))
    torch.manual_seed(10)
    points = SealInfinitesimal(SealInfinitesimal.Options(orbit_rapidity=(0.0, 0.5)), lorentz).points(b)
    torch.manual_seed(10)
    assert torch.equal(points, act(random_elements(lorentz, n, rapidity=(0.0, 0.5)), p4, mask))
    # a group's sample() and the invariance checker: the group's default ranges
    assert torch.equal(lorentz.sample(n, rng=torch.Generator().manual_seed(11)),
                       random_elements(lorentz, n, rng=torch.Generator().manual_seed(11)))
    seen = []
    invariance_deviation(lambda x, m: seen.append(x) or x[..., 0].sum(-1), lorentz, p4, mask, generator="Ky",
                         rng=torch.Generator().manual_seed(12))
    expected = act(random_elements(lorentz, n, generators=["Ky"], rng=torch.Generator().manual_seed(12)), p4, mask)
    assert torch.equal(seen[1], expected)
    # the diagnostics: exp(±θT) is random_elements with the range [θ, θ], row after row
    seen.clear()
    invariance_curves([lambda x, m: seen.append(x) or x[..., 0].sum(-1)], lorentz, p4, mask, parameters=[0.7],
                      generators=["Kx", "Jz"], seed=13)
    rng = torch.Generator().manual_seed(13)
    for moved, along in zip(seen[1:], [("Kx",), ("Jz",)]):
        elements = random_elements(lorentz, n, generators=along, rapidity=(0.7, 0.7), angle=(0.7, 0.7), rng=rng)
        assert torch.equal(moved, act(elements, p4, mask))


@pytest.mark.parametrize("name, fixed", [("so12-z", (0.0, 0, 0, 1)), ("so3", (1.0, 0, 0, 0)), ("so2-z", (1.0, 0, 0, 1)),
                                         ("se2", (1.0, 0, 0, 1))])
def test_stabiliser_groups_fix_their_vector(name, fixed):
    v = torch.tensor(fixed, dtype=torch.float64)
    lam = random_elements(name, 100, rapidity=(0.5, 2.0), rng=torch.Generator().manual_seed(14))
    torch.testing.assert_close(lam @ v, v.expand(100, 4), rtol=0, atol=1e-12)
    assert (lam - torch.eye(4, dtype=torch.float64)).abs().amax() > 0.1


# --------------------------------------------------------------------------- kept symmetries: intersections


from symfw.core.groups import Subgroup, intersect, span  # noqa: E402
from symfw.core.interfaces import SymmetryGroup, lorentz_generator  # noqa: E402


@pytest.mark.parametrize(
    "groups, expected",
    [
        (["lorentz", "longitudinal"], "longitudinal"),
        (["so3", "so12-z"], "so2-z"),  # rotations ∩ what fixes the z axis
        (["longitudinal", "so3"], "so2-z"),
        (["boost-z", "so3"], "trivial"),
        (["lorentz"], "lorentz"),
        (["so12-z", "longitudinal"], "so2-z"),
    ],
)
def test_intersections_are_named_registered_groups(groups, expected):
    assert intersect(groups).name == expected


def test_intersect_keeps_the_given_instance_and_span_names_its_algebra():
    mine = group("lorentz", max_rapidity=3.0)
    assert intersect([mine, "lorentz"]) is mine  # the spec's own options survive
    assert span(["Jz"]).name == "so2-z" and span([]).name == "trivial"
    assert span(["Jz", "Kx", "Ky"]).name == "so12-z"  # order does not matter
    with pytest.raises(symfw.UsageError, match="unknown Lorentz generator 'Kw'"):
        span(["Kw"])
    with pytest.raises(symfw.UsageError, match="unknown group 'nope'"):
        intersect(["nope", "lorentz"])


def test_an_unregistered_intersection_is_a_subgroup_fixing_its_vector():
    # what leaves px unchanged: the stabiliser of the x axis, SO⁺(1,2) of (t, y, z)
    sub = span(["Ky", "Kz", "Jx"])
    assert isinstance(sub, Subgroup) and sub.name == "subgroup(Ky, Kz, Jx)"
    assert sub.generator_names == ("Ky", "Kz", "Jx")
    x = torch.tensor([0.0, 1, 0, 0], dtype=torch.float64)
    lam = random_elements(sub, 50, rng=torch.Generator().manual_seed(15))
    torch.testing.assert_close(lam @ x, x.expand(50, 4), rtol=0, atol=1e-12)
    assert intersect([sub, "lorentz"]).name == sub.name


class NullRotations(SymmetryGroup):
    """A third-party group: the little group of the beam direction (1, 0, 0, 1)."""

    name = "null-rotations"
    generator_names = ("Jz", "Nx", "Ny")

    def generators(self, dtype=torch.float64, device=None):
        k = {a: lorentz_generator(f"K{a}", dtype, device) for a in "xy"}
        j = {a: lorentz_generator(f"J{a}", dtype, device) for a in "xyz"}
        return torch.stack([j["z"], k["x"] - j["y"], k["y"] + j["x"]])


def test_intersections_work_for_any_generators():
    little = NullRotations()
    assert intersect([little, "so3"]).name == "so2-z"  # only J_z is a rotation among them
    assert intersect([little, "lorentz"]) is little
    assert intersect([little, "so12-z"]).name == "so2-z"  # N_x, N_y involve J_y, J_x


@pytest.mark.parametrize("vectors, expected", [
    ([(1.0, 0, 0, 0)], "so3"), ([(0.0, 0, 0, 1)], "so12-z"), ([(1.0, 0, 0, 1)], "se2"), ([(3.0, 0, 0, 3)], "se2"), ([(1.0, 0, 0, -1)], "subgroup(T1, T2, T3)"),
    ([(1.0, 0, 0, 1), (1.0, 0, 0, -1)], "so2-z"), ([], "lorentz"), ([(1.0, 0, 0, 0), (0, 1.0, 0, 0), (0, 0, 1.0, 0)], "trivial"),
    ([(0, 1.0, 0, 0)], "subgroup(Ky, Kz, Jx)"),
])
def test_the_stabiliser_of_four_vectors(vectors, expected):
    from symfw.core.groups import stabiliser

    group = stabiliser(vectors)
    assert group.name == expected
    v = torch.tensor(vectors, dtype=torch.float64).reshape(-1, 4)
    for generator in group.generators():  # every generator fixes every vector ...
        assert (v @ generator.T).abs().max() < 1e-12 if len(v) else True
    # ... and it has all of them: the dimension is 6 minus the rank of the map T -> (T v_k)
    lorentz = torch.stack([lorentz_generator(n) for n in ("Kx", "Ky", "Kz", "Jx", "Jy", "Jz")])
    rank = int(torch.linalg.matrix_rank(torch.einsum("aij,kj->kia", lorentz, v).reshape(-1, 6))) if len(v) else 0
    assert len(group.generator_names) == 6 - rank


def test_se2_is_the_little_group_of_the_light_like_beam():
    """N_x, N_y, J_z close into an algebra ([J_z, N_x] = N_y, [J_z, N_y] = −N_x, [N_x, N_y] = 0),
    the null rotations are nilpotent, and the elements keep E − pz of every particle."""
    from symfw.plugins.lorentz_groups import SE2

    nx, ny, jz = SE2().generators()
    def bracket(a, b):
        return a @ b - b @ a
    torch.testing.assert_close(bracket(jz, nx), ny)
    torch.testing.assert_close(bracket(jz, ny), -nx)
    torch.testing.assert_close(bracket(nx, ny), torch.zeros(4, 4, dtype=torch.float64))
    assert torch.equal(nx @ nx @ nx, torch.zeros(4, 4, dtype=torch.float64))
    lam = random_elements("se2", 50, rapidity=(0.5, 2.0), rng=torch.Generator().manual_seed(3))
    p4 = torch.randn(50, 7, 4, dtype=torch.float64)
    moved = act(lam, p4)
    torch.testing.assert_close(moved[..., 0] - moved[..., 3], p4[..., 0] - p4[..., 3])
    assert (moved - p4).abs().amax() > 0.1
