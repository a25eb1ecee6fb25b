"""The Lorentz group SO⁺(1,3) and its named subgroups, acting on (E, px, py, pz).

Each group is spanned by boost generators K_i and rotation generators J_i; random elements
(:func:`symfw.core.groups.random_elements`) are exp(φ n̂·J) exp(y m̂·K) with |y| ≤ max_rapidity
and |φ| ≤ max_angle (options). The subgroups are the ones symfw's components keep: SO(3) the
stabiliser of the time direction, SO⁺(1,2) of the beam axis, SE(2) of one light-like beam
direction, SO(2)_z of both beam directions.
"""

import torch

from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import MatrixLieGroup, lorentz_generator


class Lorentz(MatrixLieGroup):
    """Proper orthochronous Lorentz group: boosts K_x, K_y, K_z and rotations J_x, J_y, J_z."""

    name = "lorentz"
    boosts = ("Kx", "Ky", "Kz")
    rotations = ("Jx", "Jy", "Jz")


class SO3(MatrixLieGroup):
    """Spatial rotations SO(3): J_x, J_y, J_z."""

    name = "so3"
    rotations = ("Jx", "Jy", "Jz")


class SO2z(MatrixLieGroup):
    """Azimuthal rotations about the beam axis: J_z."""

    name = "so2-z"
    rotations = ("Jz",)


class SO12z(MatrixLieGroup):
    """SO⁺(1,2) fixing the beam axis (0, 0, 0, 1): transverse boosts K_x, K_y and J_z."""

    name = "so12-z"
    boosts = ("Kx", "Ky")
    rotations = ("Jz",)


class SE2(MatrixLieGroup):
    """SE(2) ≅ ISO(2), the little group of the light-like beam direction n = (1, 0, 0, 1):
    J_z and the two null rotations N_x = K_x − J_y, N_y = K_y + J_x (each with N n = 0).

    It keeps p·n = E − pz (the light-cone component p⁻) of every particle. Random elements are
    exp(φ J_z) exp(y m̂·N) with |y| ≤ max_rapidity: N is nilpotent (N³ = 0), so "rapidity" is the
    size of the null rotation, not a boost's rapidity.
    """

    name = "se2"
    generator_names = ("Nx", "Ny", "Jz")

    def generators(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        g = {n: lorentz_generator(n, dtype=dtype, device=device) for n in ("Kx", "Ky", "Jx", "Jy", "Jz")}
        return torch.stack([g["Kx"] - g["Jy"], g["Ky"] + g["Jx"], g["Jz"]])


class BoostZ(MatrixLieGroup):
    """Longitudinal boosts along the beam axis: K_z."""

    name = "boost-z"
    boosts = ("Kz",)


class Longitudinal(MatrixLieGroup):
    """z-boosts × azimuthal rotations (K_z, J_z): the symmetry a pT-dependent detector keeps."""

    name = "longitudinal"
    boosts = ("Kz",)
    rotations = ("Jz",)


class Trivial(MatrixLieGroup):
    """The trivial group: no generators, every sampled element is the identity."""

    name = "trivial"


@hookimpl
def register_groups(register):
    for group in (Lorentz, SO3, SO2z, SO12z, SE2, BoostZ, Longitudinal, Trivial):
        register(group)
