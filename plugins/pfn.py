"""Particle Flow Network (Komiske et al. 2019):  latent = F( Σ_i Φ(p_i) ), sum over real particles.

Φ is a per-particle MLP with masked BatchNorm; F is optional (empty by default: the model's
head plays F's role, as in the hybrid paper).
"""

import torch
from pydantic import Field

from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Encoder, LayerSizes, Options
from symfw.core.nn import MLP, ParticleMLP


class PFN(Encoder):
    """Per-particle Φ (hidden sizes ``phi``), masked sum, optional F (hidden sizes ``f``)."""

    name = "pfn"
    consumes = "particles"

    class Options(Options):
        phi: LayerSizes = Field(default_factory=lambda: [128, 128])
        f: LayerSizes = Field(default_factory=list)
        batchnorm: bool = True

    def __init__(self, options, in_features, latent_dim):
        super().__init__(options, in_features, latent_dim)
        self.phi = ParticleMLP(in_features, options.phi, latent_dim, batchnorm=options.batchnorm)
        self.f = MLP(latent_dim, options.f, latent_dim, batchnorm=options.batchnorm) if options.f else None

    def forward(self, particles):
        x = torch.cat([particles.p4, particles.channels.to(particles.p4.dtype)], -1)
        pooled = self.phi(x, particles.mask).sum(1)
        return self.f(pooled) if self.f is not None else pooled


@hookimpl
def register_encoders(register):
    register(PFN)
