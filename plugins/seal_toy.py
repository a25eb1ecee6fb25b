"""The SEAL paper's toy regression (Hebbar et al., Fig. 1): learn a Lorentz-invariant function of
four-vectors from data boosted by increasing amounts, the symmetry exact or broken by a spurion.

Per event, ``particles`` four-vectors in a base frame, boosted along z by the rapidity η (``boost``)::

    p⃗_i ~ N(0, σ²)³,   m_i ~ U(m_lo, m_hi),   E_i = √(m_i² + |p⃗_i|²),   p_i → exp(η K_z) p_i

and the regression target (one column), with P = Σ_i p_i and the spurion s = (0, 0, 0, ε)::

    y = P·P + (s·P)²                  (Minkowski products, metric (+, −, −, −))

ε = 0 (``spurion``): y is exactly Lorentz invariant. ε > 0: only the little group of s — K_x, K_y,
J_z, SO(1,2)_z — leaves y unchanged, and the breaking term (s·P)² = ε² P_z² grows like e^{2η}
with the boost. The base-frame draws depend on the seed alone, so one seed gives the same targets
at every boost when ε = 0 (only the inputs move). y is computed in float64 from the float32
four-vectors stored, so it is exactly the function of the inputs a model is given.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, model_validator

from symfw.core.data import EventData
from symfw.core.groups import act, resolve_group
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import DatasetSource, Options
from symfw.core.kinematics import mdot

MAX_BOOST = 10.0  # beyond, float32 four-vectors (E ≈ p_z ≈ e^η) cannot carry P·P = (E − p_z)(E + p_z) − p_T²


class SealToyOptions(Options):
    """Options of the ``seal-toy`` generator (energies in arbitrary units, GeV by convention)."""

    n_events: int = Field(10_000, ge=3, description="events when none is asked for")
    particles: int = Field(2, ge=1, le=16, description="four-vectors per event")
    boost: float = Field(0.0, ge=0, le=MAX_BOOST, description="rapidity η of the boost along z applied to every event")
    spurion: float = Field(0.0, ge=0, allow_inf_nan=False,
                           description="ε of the spurion s = (0, 0, 0, ε) in y = P·P + (s·P)² (0: exact symmetry)")
    momentum_width: float = Field(1.0, gt=0, allow_inf_nan=False, description="σ of each base-frame momentum component")
    mass_range: tuple[float, float] = Field((0.5, 1.5), description="m_lo, m_hi of the particles' masses")

    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.mass_range
        if not (0 <= lo < hi < np.inf):
            raise ValueError(f"mass_range must be 0 <= low < high (finite), got {self.mass_range}")
        return self


def boost_z(rapidity: float) -> torch.Tensor:
    """exp(η K_z), the boost along z, from the Lorentz group's own generator (float64)."""
    group = resolve_group("lorentz")
    return torch.linalg.matrix_exp(rapidity * group.generators()[group.generator_index("Kz")])


def target(p4: torch.Tensor, mask: torch.Tensor, spurion: float) -> torch.Tensor:
    """y = P·P + (s·P)² per event, P the sum of the real particles, s = (0, 0, 0, ε); float64."""
    total = (p4.to(torch.float64) * mask.unsqueeze(-1)).sum(-2)
    s = torch.tensor([0.0, 0.0, 0.0, spurion], dtype=torch.float64, device=p4.device)
    return mdot(total, total) + mdot(total, s.expand_as(total)) ** 2


class SealToy(DatasetSource):
    """SEAL Fig. 1: y = P·P + (s·P)² of boosted four-vectors; exact (ε = 0) or broken by s = (0, 0, 0, ε)."""

    name = "seal-toy"
    Options = SealToyOptions

    def generate(self, n_events, seed, progress=None):
        o = self.options
        n = o.n_events if n_events is None else int(n_events)
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        p3 = rng.normal(0.0, o.momentum_width, (n, o.particles, 3))
        m = rng.uniform(*o.mass_range, (n, o.particles))
        base = np.concatenate([np.sqrt(m**2 + (p3**2).sum(-1))[..., None], p3], -1)
        p4 = act(boost_z(o.boost), torch.from_numpy(base)).numpy().astype(np.float32)
        mask = np.ones((n, o.particles), bool)
        y = target(torch.from_numpy(p4), torch.from_numpy(mask), o.spurion).numpy()
        if progress is not None:
            progress(n, n)
        meta = {"source": "seal-toy", "seed": int(seed), "particles": o.particles, "boost": o.boost,
                "spurion": o.spurion, "momentum_width": o.momentum_width,
                "mass_range": f"{o.mass_range[0]:g}-{o.mass_range[1]:g}"}
        return EventData(p4=p4, label=np.zeros(n, np.int64), mask=mask, weight=np.ones(n), target=y[:, None],
                         meta=meta)


@hookimpl
def register_datasets(register):
    register(SealToy)
