"""Lorentz invariants: the Minkowski products d_ij = p_i·p_j of all particle pairs.

Features are the upper triangle (i ≤ j) of d: the squared norms p_i² on the diagonal and
the inner products p_i·p_j off it, N(N+1)/2 numbers per event; pairs with a padded particle
are zero. Computed in float64 (cancellation in E_iE_j − p⃗_i·p⃗_j) and returned in the
input dtype.

Options for jets (many constituents, products spanning orders of magnitude):

- ``log``: each feature is sgn(d) log(1 + |d|/GeV²); still exactly invariant.
- ``leading = k`` (default 0: all): only the pairs among the first k particles (jets are pT-ordered), k(k+1)/2
  features instead of N(N+1)/2 — 136 for k = 16 against 8,256 for all 128 constituents.
- ``system``: append the invariants of the summed four-momentum J = Σ_i p_i over *all* real
  particles: J² (the jet mass squared) and p_i·J for each of the first k particles.
- ``references = r``: the last r entries are reference vectors (spurions appended by the
  ``spurions`` transform: 2 for ``beam``, 1 for ``time`` or ``beam-axis``). They are kept next to
  the first k particles (their products with those particles and with each other), they are not
  part of J, and with ``system`` their products with J are appended (J·s: e.g. E_J ∓ pz_J).

The ordering by pT is not Lorentz invariant, but every feature is a function of invariants of
the event's particles taken in the order they are given, so the map is exactly invariant under
any transformation applied to all particles (the ordering of the input is kept).
"""

import torch
from pydantic import Field

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
        leading: int = Field(0, ge=0, description="only the pairs among the first k particles (0: all)")
        system: bool = Field(False, description="append J² and p_i·J, J the sum of all particles")
        references: int = Field(0, ge=0, description="the last r entries are spurions: kept, not summed into J")

    def __call__(self, p4, mask):
        work = p4.to(torch.float64) if self.options.float64 else p4
        m = mask.to(work.dtype)
        work = work * m[..., None]
        r = self.options.references
        if r >= p4.shape[1]:
            raise ValueError(f"minkowski: references = {r} leaves no particle among {p4.shape[1]} entries")
        particles, refs = work[:, : p4.shape[1] - r], work[:, p4.shape[1] - r :]
        k = min(self.options.leading or particles.shape[1], particles.shape[1])
        lead = torch.cat([particles[:, :k], refs], 1)
        d = kinematics.pairwise_mdot(lead)
        i, j = torch.triu_indices(k + r, k + r, device=p4.device)
        parts = [d[:, i, j]]
        if self.options.system:
            total = particles.sum(1, keepdim=True)
            parts += [kinematics.mdot(total, total), kinematics.mdot(lead, total)]
        feats = torch.cat(parts, dim=1)
        if self.options.log:
            feats = torch.sign(feats) * torch.log1p(feats.abs())
        return feats.to(p4.dtype)


@hookimpl
def register_invariant_maps(register):
    register(Minkowski)
