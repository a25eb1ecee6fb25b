"""Symmetry-breaking contexts: the transverse momentum at which the detector breaks the symmetry."""

from symfw.core import kinematics as k
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import BreakingContext


def _masked_pt(p4, mask):
    return k.pt(p4) * mask.to(p4.dtype)


class LeadingPt(BreakingContext):
    """pT of the leading (highest-pT) particle, (B, 1) — the hybrid paper's context."""

    name = "leading-pt"
    variable_label = "leading-particle pT [GeV]"

    def __call__(self, p4, mask):
        return _masked_pt(p4, mask).amax(1, keepdim=True)


class SystemPt(BreakingContext):
    """pT of the summed four-vector of all particles, (B, 1)."""

    name = "system-pt"
    variable_label = "system pT [GeV]"

    def __call__(self, p4, mask):
        total = (p4 * mask.unsqueeze(-1).to(p4.dtype)).sum(1)
        return k.pt(total).unsqueeze(-1)


class ParticlePt(BreakingContext):
    """pT of every particle, (B, N), zero for padding."""

    name = "particle-pt"
    variable_label = "leading-particle pT [GeV]"

    def __call__(self, p4, mask):
        return _masked_pt(p4, mask)


@hookimpl
def register_contexts(register):
    for context in (LeadingPt, SystemPt, ParticlePt):
        register(context)
