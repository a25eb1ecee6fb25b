"""Invariants of the longitudinal group (z-boosts × azimuthal rotations).

Per particle: pT_i and the squared mass m_i²; per pair i < j: the rapidity difference
y_i − y_j and the azimuthal difference Δφ_ij as (cos Δφ, sin Δφ) (smooth across ±π). All
are unchanged by boosts along z and rotations about z, but not by transverse boosts.
"""

import torch

from symfw.core import kinematics as k
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import InvariantMap


class LongitudinalInvariants(InvariantMap):
    """pT_i, m_i², Δy_ij, cos Δφ_ij, sin Δφ_ij: invariants of z-boosts × azimuthal rotations."""

    name = "longitudinal"
    group = "longitudinal"

    def __call__(self, p4, mask):
        x = p4.to(torch.float64)
        m = mask.to(torch.float64)
        pt, m2, phi = k.pt(x) * m, k.mass2(x) * m, k.phi(x)
        # y = asinh(pz / mT): no E − pz cancellation for forward particles
        y = torch.asinh(x[..., 3] / torch.sqrt(pt**2 + m2.clamp_min(0)).clamp_min(1e-12))
        i, j = torch.triu_indices(p4.shape[1], p4.shape[1], offset=1, device=p4.device)
        pair = m[:, i] * m[:, j]
        dphi = phi[:, i] - phi[:, j]
        feats = [pt, m2, (y[:, i] - y[:, j]) * pair, torch.cos(dphi) * pair, torch.sin(dphi) * pair]
        return torch.cat(feats, -1).to(p4.dtype)


@hookimpl
def register_invariant_maps(register):
    register(LongitudinalInvariants)
