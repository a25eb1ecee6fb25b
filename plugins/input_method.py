"""The input method (Bogatskiy, BOOST 2024): non-invariant information as plain extra scalars.

    scalars ← [q(p_1), …, q(p_N)] for each chosen quantity q ∈ {E, px, py, pz, pT, eta, phi, y, m2}

The scalars go to the invariant subnet next to its invariant features (``Particles.scalars``;
a ``features`` encoder sees cat(invariant map, scalars)). With the default E and pz this is
the same information the `beam` spurions give a Lorentz-invariant network (p·e± = E ∓ pz), fed
in directly instead of through a symmetric architecture; the two models then differ only in
their input layer. Padded particles contribute zeros.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from symfw.core import kinematics as k
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import InputTransform, Options, Particles

QUANTITIES = {
    "E": lambda p: p[..., 0],
    "px": lambda p: p[..., 1],
    "py": lambda p: p[..., 2],
    "pz": lambda p: p[..., 3],
    "pT": k.pt,
    "eta": k.eta,
    "phi": k.phi,
    "y": k.rapidity,
    "m2": k.mass2,
}


class InputMethod(InputTransform):
    """Per-particle non-invariant quantities (default E, pz) as extra scalars for the invariant subnet."""

    name = "input"

    class Options(Options):
        quantities: list[Literal["E", "px", "py", "pz", "pT", "eta", "phi", "y", "m2"]] = Field(
            default_factory=lambda: ["E", "pz"], description="Per-particle quantities to append, in order."
        )

        @field_validator("quantities")
        @classmethod
        def _distinct(cls, v: list[str]) -> list[str]:
            if not v:
                raise ValueError("choose at least one quantity")
            if len(set(v)) != len(v):
                raise ValueError("each quantity may appear once")
            return v

    def __call__(self, particles: Particles) -> Particles:
        p4, mask = particles.p4, particles.mask.to(particles.p4.dtype)
        # (B, N, Q) → (B, N·Q), particle-major: E_1, pz_1, E_2, pz_2, …
        values = torch.stack([QUANTITIES[q](p4) for q in self.options.quantities], -1) * mask.unsqueeze(-1)
        return particles.replace(scalars=torch.cat([particles.scalars, values.flatten(1)], -1))


@hookimpl
def register_input_transforms(register):
    register(InputMethod)
