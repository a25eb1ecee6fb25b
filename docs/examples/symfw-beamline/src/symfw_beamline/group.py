"""The little group of the beam direction n = (1, 0, 0, 1): J_z, K_x − J_y, K_y + J_x.

Each generator T satisfies T·n = 0, so exp(θT)·n = n. Random elements are
Λ = exp(a (K_x − J_y) + b (K_y + J_x) + φ J_z) with a, b uniform in ±max_null and φ in ±max_angle.
"""

import math

import torch

from symfw.core.interfaces import Options, SymmetryGroup, lorentz_generator


class BeamStabilizer(SymmetryGroup):
    """Lorentz transformations fixing the beam's light-like direction (1, 0, 0, 1): ISO(2)."""

    name = "beam-stabilizer"
    generator_names = ("Jz", "Nx", "Ny")

    class Options(Options):
        max_null: float = 1.0
        max_angle: float = math.pi

    def generators(self, dtype=torch.float64, device=None):
        K = {a: lorentz_generator(f"K{a}", dtype, device) for a in "xy"}
        J = {a: lorentz_generator(f"J{a}", dtype, device) for a in "xyz"}
        return torch.stack([J["z"], K["x"] - J["y"], K["y"] + J["x"]])

    def sample(self, n, generator=None, *, dtype=torch.float64, device=None, rng=None):
        gens = self.generators(dtype, device)
        scale = torch.tensor([self.options.max_angle, self.options.max_null, self.options.max_null], dtype=dtype)
        coef = (2 * torch.rand(n, 3, dtype=dtype, generator=rng) - 1) * scale
        if generator is not None:
            keep = torch.zeros(3, dtype=dtype)
            keep[self.generator_index(generator)] = 1
            coef = coef * keep
        algebra = torch.einsum("na,aij->nij", coef.to(device), gens)
        return torch.linalg.matrix_exp(algebra)
