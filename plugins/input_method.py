"""The input method (Bogatskiy, BOOST 2024): non-invariant information as plain extra inputs.

    scalars    ← [q(p_1), …, q(p_N)] for each chosen quantity q ∈ {E, px, py, pz, E-pz, pT, eta, phi, y, m2}
    components ← q(p_i) per particle, (B, N, Q)

The scalars go to the invariant subnet next to its invariant features (``Particles.scalars``;
a ``features`` encoder sees cat(invariant map, scalars)). The same values, per particle, go to
``Particles.components``: an encoder on particles that reads them (``pelican``) puts the
pairwise products q(p_i)·q(p_j) next to the Minkowski products d_ij, as PELICAN's input method
does for each stabiliser (E for SO(3), pz for SO⁺(1,2), E and pz for SO(2)_z). With the default E and pz this is
the same information the `beam` spurions give a Lorentz-invariant network (p·e± = E ∓ pz), fed
in directly instead of through a symmetric architecture; the two models then differ only in
their input layer. Padded particles contribute zeros.

Options for jets: ``leading = k`` keeps the quantities of the first k particles only (the k
hardest constituents, as the minkowski map's ``leading``; the other particles' components are
zero); ``log`` maps each value q to sgn(q) log(1 + |q|/GeV), as the minkowski map's ``log`` does
for products (PELICAN compresses its pair products itself: leave ``log`` off there).

The model then keeps only the Lorentz transformations that leave every chosen quantity
unchanged (``InputMethod(...).keeps``, from the tables ``AXES`` and ``KEEPS``): E is fixed by
rotations, pz by the transformations fixing the z axis (K_x, K_y, J_z), so E and pz together
leave SO(2)_z, as the beam spurions do; E − pz = p·e₊ alone leaves SE(2), as the one spurion
e₊ (`beam-plus`) does.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from symfw.core import kinematics as k
from symfw.core.groups import LORENTZ_NAMES, intersect, span, stabiliser
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import InputTransform, Options, Particles, SymmetryGroup

QUANTITIES = {
    "E": lambda p: p[..., 0],
    "px": lambda p: p[..., 1],
    "py": lambda p: p[..., 2],
    "pz": lambda p: p[..., 3],
    "E-pz": lambda p: p[..., 0] - p[..., 3],
    "pT": k.pt,
    "eta": k.eta,
    "phi": k.phi,
    "y": k.rapidity,
    "m2": k.mass2,
}

#: a quantity that is a Minkowski product q(p) = p·a with a fixed four-vector a -> a: it is kept
#: exactly by a's stabiliser (E = p·t, px = −p·e_x, …, E − pz = p·e₊ with the light-like e₊ = (1, 0, 0, 1))
AXES: dict[str, tuple[float, float, float, float]] = {
    "E": (1.0, 0.0, 0.0, 0.0),
    "px": (0.0, 1.0, 0.0, 0.0),
    "py": (0.0, 0.0, 1.0, 0.0),
    "pz": (0.0, 0.0, 0.0, 1.0),
    "E-pz": (1.0, 0.0, 0.0, 1.0),
}

#: the other quantities -> the Lorentz generators that leave them unchanged (pT and φ: z-boosts;
#: η and y only rotations about z; m² everything)
KEEPS: dict[str, tuple[str, ...]] = {
    "pT": ("Kz", "Jz"),
    "eta": ("Jz",),
    "phi": ("Kz",),
    "y": ("Jz",),
    "m2": LORENTZ_NAMES,
}


def kept_by(quantity: str) -> SymmetryGroup:
    """The subgroup leaving ``quantity`` of every particle unchanged."""
    return stabiliser([AXES[quantity]]) if quantity in AXES else span(KEEPS[quantity])


class InputMethod(InputTransform):
    """Per-particle non-invariant quantities (default E, pz) as extra inputs: scalars, and components for PELICAN."""

    name = "input"

    class Options(Options):
        quantities: list[Literal["E", "px", "py", "pz", "E-pz", "pT", "eta", "phi", "y", "m2"]] = Field(
            default_factory=lambda: ["E", "pz"], description="Per-particle quantities to append, in order."
        )

        leading: int = Field(0, ge=0, description="Only the first k particles' quantities (0: all); jets are pT-ordered.")
        log: bool = Field(False, description="sgn(q) log(1 + |q|) of each quantity.")

        @field_validator("quantities")
        @classmethod
        def _distinct(cls, v: list[str]) -> list[str]:
            if not v:
                raise ValueError("choose at least one quantity")
            if len(set(v)) != len(v):
                raise ValueError("each quantity may appear once")
            return v

    @property
    def keeps(self) -> SymmetryGroup:
        """The subgroup fixing every chosen quantity (E, pz: ``so2-z``; E − pz: ``se2``)."""
        return intersect([kept_by(q) for q in self.options.quantities])

    def __call__(self, particles: Particles) -> Particles:
        p4, mask = particles.p4, particles.mask.to(particles.p4.dtype)
        n = p4.shape[1]
        if self.options.leading:
            p4, mask = p4[:, : self.options.leading], mask[:, : self.options.leading]
        values = torch.stack([QUANTITIES[q](p4) for q in self.options.quantities], -1) * mask.unsqueeze(-1)
        if self.options.log:
            values = torch.sign(values) * torch.log1p(values.abs())
        # per particle, zero beyond the leading k: (B, N, Q)
        per_particle = torch.nn.functional.pad(values, (0, 0, 0, n - values.shape[1]))
        return particles.replace(
            scalars=torch.cat([particles.scalars, values.flatten(1)], -1),  # particle-major: E_1, pz_1, E_2, …
            components=torch.cat([particles.components, per_particle.to(particles.components.dtype)], -1),
        )


@hookimpl
def register_input_transforms(register):
    register(InputMethod)
