"""The Lorentz group SO⁺(1,3) and its named subgroups, acting on (E, px, py, pz).

Each group is spanned by boost generators K_i and rotation generators J_i; random elements
(:func:`symfw.core.groups.random_elements`) are exp(φ n̂·J) exp(y m̂·K) with |y| ≤ max_rapidity
and |φ| ≤ max_angle (options). The subgroups are the ones symfw's components keep: SO(3) the
stabiliser of the time direction, SO⁺(1,2) of the beam axis, SO(2)_z of both beam directions.
"""

from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import MatrixLieGroup


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
    for group in (Lorentz, SO3, SO2z, SO12z, BoostZ, Longitudinal, Trivial):
        register(group)
