"""Spurions (Bogatskiy, BOOST 2024; PELICAN): fixed reference four-vectors appended to every event.

    p_1, …, p_N  →  p_1, …, p_N, s_1, …, s_k      with a one-hot label channel per entry

A Lorentz-invariant network of (p, s) is, as a function of p alone, invariant exactly under the
subgroup that fixes every spurion (its stabiliser), and may use everything else. The sets:

| set                | spurions                               | unbroken subgroup (generators)          |
|--------------------|----------------------------------------|-----------------------------------------|
| `beam`             | e± = (1, 0, 0, ±1)                     | SO(2) about z (J_z)                     |
| `beam-plus`        | e₊ = (1, 0, 0, 1), one beam direction  | SE(2): J_z, N_x = K_x − J_y, N_y = K_y + J_x |
| `time`             | t = (1, 0, 0, 0)                       | SO(3) rotations (J_x, J_y, J_z)         |
| `beam-axis`        | z = (0, 0, 0, 1)                       | SO⁺(1, 2): K_x, K_y, J_z                |
| any two of them    |                                        | SO(2) about z (J_z)                     |

(e₊ and e₋ together fix t = (e₊ + e₋)/2 and z = (e₊ − e₋)/2, so `beam` breaks the z-boosts too.)
No set of vector spurions leaves the longitudinal group (K_z, J_z) unbroken: K_z fixes only
vectors in the (x, y) plane and J_z only vectors in the (t, z) plane.

The transform declares that subgroup (``Spurions(...).keeps``, solved from the vectors by
:func:`symfw.core.groups.stabiliser`: ``so2-z``, ``se2``, ``so3``, ``so12-z``), so an assembled
model names its residual group (``SymfwModel.residual_group``).

Labels: channel 0 is "particle" (1 for real particles, 0 for padding), then one channel per
spurion; input-method components of earlier transforms are zero for the spurions. Spurions are appended inside the model, so a group action applied to the model's
input (augmentation, SEAL penalties) never transforms them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from symfw.core.groups import stabiliser
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import InputTransform, Options, Particles, SymmetryGroup

#: set name -> (label, four-vector (E, px, py, pz)) of each spurion it appends
SPURIONS: dict[str, tuple[tuple[str, tuple[float, float, float, float]], ...]] = {
    "beam": (("beam+", (1.0, 0.0, 0.0, 1.0)), ("beam-", (1.0, 0.0, 0.0, -1.0))),
    "beam-plus": (("beam+", (1.0, 0.0, 0.0, 1.0)),),
    "time": (("time", (1.0, 0.0, 0.0, 0.0)),),
    "beam-axis": (("beam-axis", (0.0, 0.0, 0.0, 1.0)),),
}


class Spurions(InputTransform):
    """Appends fixed spurion four-vectors (beam e±, time, beam axis) with one-hot label channels."""

    name = "spurions"

    class Options(Options):
        set: list[Literal["beam", "beam-plus", "time", "beam-axis"]] = Field(
            default_factory=lambda: ["beam"], description="Spurion sets to append, in order."
        )

        @field_validator("set")
        @classmethod
        def _distinct(cls, v: list[str]) -> list[str]:
            if not v:
                raise ValueError("choose at least one spurion set")
            if len(set(v)) != len(v):
                raise ValueError("each spurion set may appear once")
            if {"beam", "beam-plus"} <= set(v):
                raise ValueError("'beam' already holds e+ = (1, 0, 0, 1): choose 'beam' or 'beam-plus'")
            return v

    @property
    def keeps(self) -> SymmetryGroup:
        """The stabiliser of the spurions (:func:`~symfw.core.groups.stabiliser`), a registered group."""
        return stabiliser(self.vectors())

    @property
    def labels(self) -> list[str]:
        """Names of the label channels: "particle", then one per spurion."""
        return ["particle"] + [label for s in self.options.set for label, _ in SPURIONS[s]]

    def vectors(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(k, 4) spurion four-vectors."""
        rows = [vec for s in self.options.set for _, vec in SPURIONS[s]]
        return torch.tensor(rows, dtype=dtype, device=device)

    def __call__(self, particles: Particles) -> Particles:
        p4, mask, channels, components = particles.p4, particles.mask, particles.channels, particles.components
        b, n, _ = p4.shape
        spur = self.vectors(p4.dtype, p4.device)
        k = spur.shape[0]
        is_particle = mask.unsqueeze(-1).to(p4.dtype)
        particle_labels = torch.cat([channels, is_particle, p4.new_zeros(b, n, k)], -1)
        spurion_labels = torch.cat([p4.new_zeros(k, channels.shape[-1] + 1), torch.eye(k, dtype=p4.dtype, device=p4.device)], -1)
        return particles.replace(
            p4=torch.cat([p4, spur.expand(b, k, 4)], 1),
            mask=torch.cat([mask, mask.new_ones(b, k)], 1),
            channels=torch.cat([particle_labels, spurion_labels.expand(b, k, -1)], 1),
            components=torch.cat([components, components.new_zeros(b, k, components.shape[-1])], 1),
        )


@hookimpl
def register_input_transforms(register):
    register(Spurions)
