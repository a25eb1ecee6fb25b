"""Concatenation pooling, the three variants of the hybrid paper's Appendix C, and plain concat.

- ``weighted``:      x = [w·g, (1 − w)·s]           (concat after weighting)
- ``weight-input``:  x = [g, s, w]                  (unweighted, learned weight as an extra input)
- ``context-input``: x = [g, s, context]            (unweighted, the context itself as an input)
- ``plain``:         x = [g, s]
with w = softmax(MLP(context))₀ as in weighted-pT pooling.
"""

from typing import Literal

import torch
from pydantic import Field

from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Combiner, LayerSizes, Options
from symfw.core.nn import MLP


class Concat(Combiner):
    """Concatenate the two latents, optionally weighted or with the weight/context appended."""

    name = "concat"
    needs_context = True

    class Options(Options):
        mode: Literal["weighted", "weight-input", "context-input", "plain"] = "weighted"
        hidden: LayerSizes = Field(default_factory=lambda: [64, 64])
        batchnorm: bool = True

    def __init__(self, options, latent_dim, context_dim):
        super().__init__(options, latent_dim, context_dim)
        uses_weight = options.mode in ("weighted", "weight-input")
        self.mlp = MLP(context_dim, options.hidden, 2, batchnorm=options.batchnorm) if uses_weight else None
        extra = {"weighted": 0, "weight-input": 1, "context-input": context_dim, "plain": 0}[options.mode]
        self.out_features = 2 * latent_dim + extra

    def weight(self, context: torch.Tensor) -> torch.Tensor | None:
        """w(context), (B,); None for the modes that learn no weight."""
        if self.mlp is None:
            return None
        return torch.softmax(self.mlp(context), dim=-1)[:, 0]

    def forward(self, g, s, context):
        mode = self.options.mode
        if mode == "plain":
            return torch.cat([g, s], -1)
        if mode == "context-input":
            return torch.cat([g, s, context], -1)
        w = self.weight(context).unsqueeze(-1)
        if mode == "weighted":
            return torch.cat([w * g, (1 - w) * s], -1)
        return torch.cat([g, s, w], -1)


class Sum(Combiner):
    """x = g + s (no weighting, no context)."""

    name = "sum"

    def __init__(self, options, latent_dim, context_dim):
        super().__init__(options, latent_dim, context_dim)
        self.out_features = latent_dim

    def forward(self, g, s, context):
        return g + s


@hookimpl
def register_combiners(register):
    register(Concat)
    register(Sum)
