"""The plugin module named by the ``symfw`` entry point: one hook per component kind."""

import symfw

from .combiner import Gated
from .context import MaxAbsEta
from .group import BeamStabilizer
from .invariants import LightCone


@symfw.hookimpl
def register_groups(register):
    register(BeamStabilizer)


@symfw.hookimpl
def register_invariant_maps(register):
    register(LightCone)


@symfw.hookimpl
def register_contexts(register):
    register(MaxAbsEta)


@symfw.hookimpl
def register_combiners(register):
    register(Gated)
