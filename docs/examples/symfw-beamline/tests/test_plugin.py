"""The example's own tests, written with symfw's plugin test kit."""

import torch

from symfw.testing import (
    assert_invariant,
    assert_not_invariant,
    check_combiner,
    check_context,
    check_group,
    check_invariant_map,
    random_events,
)
from symfw_beamline.combiner import Gated
from symfw_beamline.context import MaxAbsEta
from symfw_beamline.group import BeamStabilizer
from symfw_beamline.invariants import LightCone


def test_group_is_a_lorentz_subgroup_that_fixes_the_beam():
    check_group(BeamStabilizer)
    lam = BeamStabilizer().sample(100)
    beam = torch.tensor([1.0, 0, 0, 1], dtype=torch.float64)
    torch.testing.assert_close(lam @ beam, beam.expand(100, 4))


def test_lightcone_invariants():
    check_invariant_map(LightCone, BeamStabilizer())


def test_lightcone_is_not_invariant_under_z_boosts():
    from symfw.core.registry import get_registry

    boost_z = get_registry().get("group", "boost-z")()
    p4 = random_events(50, 2)
    assert_not_invariant(LightCone(), boost_z, p4, torch.ones(50, 2, dtype=torch.bool))


def test_context_and_combiner():
    check_context(MaxAbsEta)
    check_combiner(Gated, context_dim=1)
    p4 = random_events(20, 2)
    assert_invariant(MaxAbsEta(), BeamStabilizer(), p4, torch.ones(20, 2, dtype=torch.bool), generator="Jz")
