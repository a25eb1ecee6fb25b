"""Invariant maps are invariant under their group, in float64 and float32, and not beyond it."""

import pytest
import torch
from conftest import random_events

import symfw
from symfw.core.errors import InvarianceError
from symfw.core.invariance import assert_invariant, assert_not_invariant


def make(kind, name, **options):
    cls = symfw.get_registry().get(kind, name)
    return cls(cls.Options(**options))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_minkowski_is_lorentz_invariant_under_1000_boosts(dtype):
    p4 = random_events(1000, 2, dtype=dtype, mass=0.105)
    mask = torch.ones(1000, 2, dtype=torch.bool)
    lorentz = make("group", "lorentz", max_rapidity=3.0)
    worst = assert_invariant(make("invariants", "minkowski"), lorentz, p4, mask,
                             rng=torch.Generator().manual_seed(0))
    assert worst <= (1e-9 if dtype == torch.float64 else 1e-4)


def test_minkowski_features_are_the_pair_products():
    p4 = random_events(4, 3)
    feats = make("invariants", "minkowski")(p4, torch.ones(4, 3, dtype=torch.bool))
    assert feats.shape == (4, 6)
    m01 = p4[:, 0, 0] * p4[:, 1, 0] - (p4[:, 0, 1:] * p4[:, 1, 1:]).sum(-1)
    torch.testing.assert_close(feats[:, 1], m01)


def test_minkowski_zeroes_padded_pairs():
    p4 = random_events(4, 3)
    mask = torch.tensor([[True, True, False]] * 4)
    feats = make("invariants", "minkowski")(p4, mask)
    # upper triangle order: 00 01 02 11 12 22
    assert torch.all(feats[:, [2, 4, 5]] == 0) and torch.all(feats[:, 1] != 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_longitudinal_map_is_invariant_under_its_subgroup(dtype):
    p4 = random_events(1000, 3, dtype=dtype, mass=0.105)
    mask = torch.ones(1000, 3, dtype=torch.bool)
    # float32 inputs boosted by y = 3 lose m² to rounding (E² grows by e^6), so float32 uses y ≤ 1
    y_max = 3.0 if dtype == torch.float64 else 1.0
    assert_invariant(make("invariants", "longitudinal"), make("group", "longitudinal", max_rapidity=y_max),
                     p4, mask, rng=torch.Generator().manual_seed(1))


def test_longitudinal_map_is_not_invariant_under_transverse_boosts():
    p4 = random_events(200, 2, mass=0.105)
    mask = torch.ones(200, 2, dtype=torch.bool)
    fn = make("invariants", "longitudinal")
    lorentz = make("group", "lorentz", max_rapidity=1.0)
    for gen in ("Kx", "Ky"):
        assert assert_not_invariant(fn, lorentz, p4, mask, generator=gen) > 1e-2
    with pytest.raises(InvarianceError, match="not invariant under lorentz"):
        assert_invariant(fn, lorentz, p4, mask)


@pytest.mark.parametrize("name", ["leading-pt", "system-pt", "particle-pt"])
def test_contexts_are_invariant_under_azimuthal_rotations_and_z_boosts_only_for_pt(name):
    p4 = random_events(100, 2)
    mask = torch.ones(100, 2, dtype=torch.bool)
    ctx = make("context", name)
    assert_invariant(ctx, make("group", "longitudinal"), p4, mask)
    assert_not_invariant(ctx, make("group", "lorentz"), p4, mask, generator="Kx")


def test_leading_pt_is_the_maximum_over_real_particles():
    p4 = torch.tensor([[[50.0, 30, 40, 0], [100.0, 0, 100, 0]]])
    out = make("context", "leading-pt")(p4, torch.tensor([[True, False]]))
    assert out.tolist() == [[50.0]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_minkowski_leading_and_system_are_lorentz_invariant(dtype):
    p4 = random_events(500, 6, dtype=dtype, mass=0.105)
    mask = torch.ones(500, 6, dtype=torch.bool)
    mask[:, 5] = False
    lorentz = make("group", "lorentz", max_rapidity=1.0)
    fn = make("invariants", "minkowski", leading=3, system=True)
    worst = assert_invariant(fn, lorentz, p4, mask, rng=torch.Generator().manual_seed(2))
    assert worst <= (1e-9 if dtype == torch.float64 else 1e-3)


def test_minkowski_leading_and_system_features():
    p4 = random_events(4, 5)
    mask = torch.tensor([[True] * 4 + [False]] * 4)
    feats = make("invariants", "minkowski", leading=2, system=True)(p4, mask)
    # 00 01 11, then J², then p_0·J, p_1·J — J summed over the 4 real particles only
    assert feats.shape == (4, 3 + 1 + 2)
    total = p4[:, :4].sum(1)
    mdot = lambda a, b: a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)  # noqa: E731
    torch.testing.assert_close(feats[:, 3], mdot(total, total))
    torch.testing.assert_close(feats[:, 5], mdot(p4[:, 1], total))
    torch.testing.assert_close(feats[:, 1], mdot(p4[:, 0], p4[:, 1]))


def test_minkowski_leading_beyond_n_uses_all_particles():
    p4 = random_events(3, 3)
    mask = torch.ones(3, 3, dtype=torch.bool)
    full = make("invariants", "minkowski")(p4, mask)
    torch.testing.assert_close(make("invariants", "minkowski", leading=10)(p4, mask), full)


def test_minkowski_references_are_kept_beyond_the_leading_particles_and_not_summed_into_j():
    p4 = random_events(4, 5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    feats = make("invariants", "minkowski", leading=2, system=True, references=2)(p4, mask)
    # entries: p0 p1 (leading of the 3 particles) then s3 s4; 4·5/2 products, J², then p0·J p1·J s3·J s4·J
    assert feats.shape == (4, 10 + 1 + 4)
    mdot = lambda a, b: a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)  # noqa: E731
    total = p4[:, :3].sum(1)
    torch.testing.assert_close(feats[:, 10], mdot(total, total))
    torch.testing.assert_close(feats[:, 14], mdot(p4[:, 4], total))
    torch.testing.assert_close(feats[:, 2], mdot(p4[:, 0], p4[:, 3]))  # p0·s3 (upper triangle: 00 01 02 …)


def test_minkowski_with_spurion_references_keeps_only_the_spurions_stabiliser():
    from symfw.core.interfaces import Particles

    p4 = random_events(300, 4, mass=0.105)
    mask = torch.ones(300, 4, dtype=torch.bool)
    spurions = symfw.get_registry().get("inputs", "spurions")
    append = spurions(spurions.Options(set=["beam"]))
    fn_map = make("invariants", "minkowski", leading=2, system=True, references=2)

    def fn(p, m):
        parts = append(Particles.from_p4(p, m))
        return fn_map(parts.p4, parts.mask)

    so2 = make("group", "so2-z")
    assert_invariant(fn, so2, p4, mask, rng=torch.Generator().manual_seed(3))
    lorentz = make("group", "lorentz", max_rapidity=1.0)
    assert assert_not_invariant(fn, lorentz, p4, mask, generator="Kz") > 1e-3
