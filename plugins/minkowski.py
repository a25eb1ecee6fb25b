"""Lorentz invariants: the Minkowski products d_ij = p_i·p_j of all particle pairs.

Features are the upper triangle (i ≤ j) of d: the squared norms p_i² on the diagonal and
the inner products p_i·p_j off it, N(N+1)/2 numbers per event; pairs with a padded particle
are zero. Computed in float64 (cancellation in E_iE_j − p⃗_i·p⃗_j) and returned in the
input dtype. With ``log``, each feature is sgn(d) log(1 + |d|/GeV²) (jets: products span
many orders of magnitude); still exactly invariant.
"""

import torch

from symfw.core import kinematics
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import InvariantMap, Options


class Minkowski(InvariantMap):
    """Minkowski norms p_i² and inner products p_i·p_j (the hybrid paper's invariants)."""

    name = "minkowski"
    group = "lorentz"

    class Options(Options):
        float64: bool = True
        log: bool = False

    def __call__(self, p4, mask):
        work = p4.to(torch.float64) if self.options.float64 else p4
        m = mask.to(work.dtype)
        d = kinematics.pairwise_mdot(work) * m[:, :, None] * m[:, None, :]
        if self.options.log:
            d = torch.sign(d) * torch.log1p(d.abs())
        i, j = torch.triu_indices(p4.shape[1], p4.shape[1], device=p4.device)
        return d[:, i, j].to(p4.dtype)


@hookimpl
def register_invariant_maps(register):
    register(Minkowski)
