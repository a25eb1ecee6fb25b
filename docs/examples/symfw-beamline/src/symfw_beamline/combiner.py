"""Gated pooling: x = z ⊙ g + (1 − z) ⊙ s with a per-dimension gate z = σ(MLP(context)) ∈ (0, 1)^L.

Unlike weighted-pT pooling's single weight, each latent dimension learns its own share of the
general subnet.
"""

import torch
from pydantic import Field

from symfw.core.interfaces import Combiner, Options
from symfw.core.nn import MLP


class Gated(Combiner):
    """x = z⊙g + (1−z)⊙s, z = sigmoid(MLP(context)) per latent dimension."""

    name = "gated"
    needs_context = True

    class Options(Options):
        hidden: list[int] = Field(default_factory=lambda: [32])

    def __init__(self, options, latent_dim, context_dim):
        super().__init__(options, latent_dim, context_dim)
        self.gate = MLP(context_dim, options.hidden, latent_dim)
        self.out_features = latent_dim

    def weight(self, context):
        """Mean gate over latent dimensions: the overall share of the general subnet, (B,)."""
        return torch.sigmoid(self.gate(context)).mean(-1)

    def forward(self, g, s, context):
        z = torch.sigmoid(self.gate(context))
        return z * g + (1 - z) * s
