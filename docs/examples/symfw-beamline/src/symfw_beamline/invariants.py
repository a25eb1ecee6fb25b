"""Invariants of the beam stabilizer: n·p_i = E_i − p_z,i per particle, and p_i·p_j for i ≤ j."""

import torch

from symfw.core import kinematics
from symfw.core.interfaces import InvariantMap


class LightCone(InvariantMap):
    """Light-cone momenta E_i − p_z,i and Minkowski products p_i·p_j (beam-stabilizer invariants)."""

    name = "lightcone"
    group = "beam-stabilizer"

    def __call__(self, p4, mask):
        x = p4.to(torch.float64)
        m = mask.to(torch.float64)
        minus = (x[..., 0] - x[..., 3]) * m
        d = kinematics.pairwise_mdot(x) * m[:, :, None] * m[:, None, :]
        i, j = torch.triu_indices(p4.shape[1], p4.shape[1])
        return torch.cat([minus, d[:, i, j]], -1).to(p4.dtype)
