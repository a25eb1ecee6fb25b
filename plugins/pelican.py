"""A small PELICAN-style encoder (Bogatskiy et al. 2022): permutation-equivariant layers on d_ij.

    x⁰_ij = [ slog(d_ij), slog(c_a(p_i) c_a(p_j)) for each a, ℓ_i, ℓ_j, δ_ij ],     d_ij = p_i·p_j (Minkowski)
    slog(x) = sgn(x) log(1 + |x|)
    xˡ⁺¹_ij = ReLU( W · A(xˡ)_ij ),     A = the 2→2 aggregations below, masked means over real entries
    latent = W_out · [ mean_ij x_ij, mean_i x_ii ]                (2→0 readout)

A(x)_ij stacks x_ij, x_ji, the row and column means of i and of j, the diagonal entries x_ii and
x_jj, the mean of the diagonal and the mean of all entries: each is equivariant under permuting
the particles, so the latent is permutation invariant. ℓ are the label channels (spurion
one-hots): particles and spurions enter together, told apart only by their labels. The input
is d_ij and the labels alone, so without spurions the encoder is exactly Lorentz invariant;
with spurions it is invariant under the subgroup fixing them (the encoder declares
``keeps = "lorentz"``; the spurion transform restricts it). d_ij is computed in float64.

c_a are the input method's per-particle components (``Particles.components``, e.g. E and pz):
PELICAN's input method for a stabiliser H puts the products of the H-invariant components next
to d_ij (E for SO(3), pz for SO⁺(1,2), E and pz for SO(2)_z) — the same information the
stabiliser's spurions give through p·s. The encoder is then invariant under the Lorentz
transformations fixing the components; the input transform declares that subgroup. Option
``products = "all"`` takes every c_a(p_i) c_b(p_j) instead of the matching ones (K² channels).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from symfw.core import kinematics
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Encoder, Options, Particles

N_AGGREGATIONS = 10


def pair_means(x: torch.Tensor, node: torch.Tensor, columns: bool = True) -> tuple[torch.Tensor | None, ...]:
    """The masked means of x (B, N, N, F), **zero at padded pairs**, over the real particles:
    row (B, N, F) = mean_k x_ik, column (B, N, F) = mean_k x_kj (None unless ``columns``), the
    diagonal x_ii (B, N, F), the mean of the diagonal (B, F) and of all entries (B, F). With x
    zero at padded pairs a masked sum is a plain sum, and each mean divides by the number n of
    real particles (n² for all entries): no pass multiplies x by the mask."""
    n = node.sum(1).clamp_min(1.0)  # (B, 1): real particles
    diag = torch.diagonal(x, dim1=1, dim2=2).movedim(-1, 1)
    row = x.sum(2) / n[:, :, None]
    col = x.sum(1) / n[:, :, None] if columns else None
    return row, col, diag, diag.sum(1) / n, row.sum(1) / n  # the mean of all = the mean of the row means


def equivariant_linear(x: torch.Tensor, node: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear`` applied to the 2→2 aggregations A(x) of x (B, N, N, F, zero at padded pairs),
    masked: (B, N, N, H).

    A(x)_ij stacks x_ij, x_ji, mean_k x_ik, mean_k x_kj, mean_k x_jk, mean_k x_ki, x_ii, x_jj,
    the mean of the diagonal and the mean of all entries (masked means over real particles).
    The Linear's weight is split into one (H, F) block per aggregation, and each block is
    applied at the aggregation's own rank — (B, N, N) for x and xᵀ, (B, N) for the row, column
    and diagonal terms, (B,) for the means — before broadcasting. The result is that of the
    Linear on the concatenated (B, N, N, 10·F) tensor, which is never built: memory stays at a
    few (B, N, N, max(F, H)) tensors, as PELICAN needs for jets of 128 particles, and the terms
    of lower rank are summed at their rank and added to the pair terms in one pass.
    """
    w = linear.weight.split(x.shape[-1], dim=1)  # N_AGGREGATIONS blocks of (H, F)
    pair = node[:, :, None, :] * node[:, None, :, :]  # (B, N, N, 1)
    row, col, diag, trace, full = pair_means(x, node)
    by_i = row @ w[2].T + col @ w[5].T + diag @ w[6].T  # terms that depend on i only
    by_j = col @ w[3].T + row @ w[4].T + diag @ w[7].T + (trace @ w[8].T + full @ w[9].T + linear.bias)[:, None]
    out = x @ w[0].T  # in place from here: one (B, N, N, H) buffer
    out.add_((x @ w[1].T).transpose(1, 2)).add_(by_i[:, :, None] + by_j[:, None, :])
    return out.mul_(pair)


class EquivariantLayers(nn.Module):
    """2→2 layers: Linear on the aggregations, then ReLU (``hidden_sizes`` counts the neurons)."""

    def __init__(self, in_features: int, hidden: list[int]):
        super().__init__()
        self.hidden_sizes = list(hidden)
        widths = [in_features, *hidden]
        self.linears = nn.ModuleList(nn.Linear(N_AGGREGATIONS * a, b) for a, b in zip(widths, widths[1:]))
        # for matched initialisation: forward's x holds the first Linear's features, its weight is
        # one block of them per aggregation
        self.blockwise_inputs = {"linears.0": N_AGGREGATIONS}

    def forward(self, x: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        x = x * (node[:, :, None, :] * node[:, None, :, :])  # each layer's output stays zero at padded pairs
        for linear in self.linears:
            x = torch.relu(equivariant_linear(x, node, linear))
        return x


class Pelican(Encoder):
    """PELICAN-style: equivariant 2→2 layers on pairwise Minkowski products d_ij (+ spurion labels, input-method products)."""

    name = "pelican"
    consumes = "particles"
    keeps = "lorentz"  # a function of the d_ij, the labels and the components: invariant in all its inputs
    reads_components = True

    class Options(Options):
        hidden: list[int] = Field(default_factory=lambda: [32, 32], description="Widths of the 2→2 layers.")
        float64: bool = Field(True, description="Compute d_ij and the component products in double precision.")
        products: Literal["matching", "all"] = Field(
            "matching", description="Input-method pair channels: c_a(p_i) c_a(p_j) per component (PELICAN's), or every c_a(p_i) c_b(p_j)."
        )

        @field_validator("hidden")
        @classmethod
        def _positive(cls, v: list[int]) -> list[int]:
            if not v or any(x < 1 for x in v):
                raise ValueError("need at least one layer, sizes >= 1")
            return v

    def __init__(self, options, in_features, latent_dim, components: int = 0):
        super().__init__(options, in_features, latent_dim)
        n_labels = in_features - 4
        self.components = components
        n_products = components * components if options.products == "all" else components
        self.layers = EquivariantLayers(1 + n_products + 2 * n_labels + 1, options.hidden)
        self.readout = nn.Linear(2 * options.hidden[-1], latent_dim)

    def component_products(self, particles: Particles) -> torch.Tensor:
        """(B, N, N, K or K²) products c_a(p_i) c_b(p_j) of the input method's components (before slog)."""
        c = particles.components
        c = c.to(torch.float64) if self.options.float64 else c
        if c.shape[-1] != self.components:
            raise ValueError(f"pelican was built for {self.components} input-method components, got {c.shape[-1]}")
        if self.options.products == "all":
            return (c[:, :, None, :, None] * c[:, None, :, None, :]).flatten(-2)
        return c[:, :, None, :] * c[:, None, :, :]

    def pair_features(self, particles: Particles) -> torch.Tensor:
        p4 = particles.p4
        work = p4.to(torch.float64) if self.options.float64 else p4
        pairs = torch.cat([kinematics.pairwise_mdot(work)[..., None], self.component_products(particles).to(work.dtype)], -1)
        pairs = (torch.sign(pairs) * torch.log1p(pairs.abs())).to(self.readout.weight.dtype)
        labels = particles.channels.to(pairs.dtype)
        n = pairs.shape[1]
        eye = torch.eye(n, dtype=pairs.dtype, device=pairs.device).expand(pairs.shape[0], n, n)
        return torch.cat(
            [pairs, labels[:, :, None, :].expand(-1, -1, n, -1), labels[:, None, :, :].expand(-1, n, -1, -1), eye[..., None]],
            -1,
        )

    def forward(self, particles: Particles) -> torch.Tensor:
        node = particles.mask.unsqueeze(-1).to(self.readout.weight.dtype)  # (B, N, 1)
        x = self.layers(self.pair_features(particles), node)
        _, _, _, trace, full = pair_means(x, node, columns=False)  # the 2→0 readout needs no column means
        return self.readout(torch.cat([full, trace], -1))


@hookimpl
def register_encoders(register):
    register(Pelican)
