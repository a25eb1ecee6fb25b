"""Weighted-pT pooling (hybrid paper, Eq. 1):  x = w·g + (1 − w)·s,  w = softmax(MLP(context))₀.

g is the general subnet's latent, s the invariant subnet's; w is the learned share of the
general subnet, a function of the symmetry-breaking context (e.g. leading-muon pT).
"""

import torch
from pydantic import Field

from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Combiner, LayerSizes, Options
from symfw.core.nn import MLP


class WeightedPt(Combiner):
    """x = w·g + (1−w)·s with w = softmax(MLP(context))[0] (the paper's weighted average pooling)."""

    name = "weighted-pt"
    needs_context = True

    class Options(Options):
        hidden: LayerSizes = Field(default_factory=lambda: [64, 64])
        batchnorm: bool = True

    def __init__(self, options, latent_dim, context_dim):
        super().__init__(options, latent_dim, context_dim)
        self.mlp = MLP(context_dim, options.hidden, 2, batchnorm=options.batchnorm)
        self.out_features = latent_dim

    def weight(self, context: torch.Tensor) -> torch.Tensor:
        """w(context), the weight of the general subnet, (B,)."""
        return torch.softmax(self.mlp(context), dim=-1)[:, 0]

    def forward(self, g, s, context):
        w = self.weight(context).unsqueeze(-1)
        return w * g + (1 - w) * s


@hookimpl
def register_combiners(register):
    register(WeightedPt)
