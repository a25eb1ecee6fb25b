"""Model assembly: a spec becomes a :class:`SymfwModel`.

    four-vectors → [input transforms] → general subnet (on particles)
                                      → invariant subnet (on an invariant map, + input-method scalars)
               → combiner(g, s, context(four-vectors)) → head MLP → one logit

The baselines are the same assembly with one subnet (no combiner). Shapes the components
produce are found with a dry run on a dummy event, so plugins need not declare them.
"""

from __future__ import annotations

import torch
from torch import nn

from .interfaces import Encoder, Particles
from .nn import MLP, hidden_neurons, n_parameters, share_statistics
from .registry import Registry, get_registry
from .spec import Spec, Subnet


def _options(cls, ref):
    return cls.Options.model_validate(ref.options)


def _dummy_event(n_particles: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Two light-like events used to discover feature widths."""
    g = torch.Generator().manual_seed(0)
    p3 = torch.randn(2, n_particles, 3, generator=g, dtype=dtype) * 10
    p4 = torch.cat([p3.norm(dim=-1, keepdim=True), p3], -1)
    return p4, torch.ones(2, n_particles, dtype=torch.bool)


class SubnetModule(nn.Module):
    """One subnet: an encoder, fed either particles or invariant features."""

    def __init__(self, subnet: Subnet, registry: Registry, particles: Particles, latent_dim: int):
        super().__init__()
        enc_cls = registry.get("encoder", subnet.encoder.name)
        self.invariants = None
        if subnet.invariants is not None:
            inv_cls = registry.get("invariants", subnet.invariants.name)
            self.invariants = inv_cls(_options(inv_cls, subnet.invariants))
        self.consumes = enc_cls.consumes
        in_features = self._features(particles).shape[-1] if self.consumes == "features" else (
            4 + particles.channels.shape[-1]
        )
        self.encoder: Encoder = enc_cls(_options(enc_cls, subnet.encoder), in_features, latent_dim)

    def _features(self, particles: Particles) -> torch.Tensor:
        if self.invariants is not None:
            feats = self.invariants(particles.p4, particles.mask)
            return torch.cat([feats, particles.scalars.to(feats.dtype)], -1)
        # a features encoder without an invariant map sees the flattened particles
        flat = torch.cat([particles.p4, particles.channels], -1) * particles.mask.unsqueeze(-1)
        return flat.flatten(1)

    def forward(self, particles: Particles) -> torch.Tensor:
        if self.consumes == "features":
            return self.encoder(self._features(particles))
        return self.encoder(particles)


class SymfwModel(nn.Module):
    """A model assembled from a :class:`Spec`. ``forward(p4, mask=None) → (B,) logits``."""

    def __init__(self, spec: Spec, registry: Registry | None = None):
        super().__init__()
        registry = registry or get_registry()
        self.spec = spec
        group_cls = registry.get("group", spec.group.name)
        self.group = group_cls(_options(group_cls, spec.group))
        self.transforms = [registry.get("inputs", r.name)(_options(registry.get("inputs", r.name), r)) for r in spec.inputs]
        self.context = None
        if spec.context is not None:
            ctx_cls = registry.get("context", spec.context.name)
            self.context = ctx_cls(_options(ctx_cls, spec.context))

        p4, mask = _dummy_event(spec.n_particles)
        particles = self.transform_inputs(p4, mask)
        L = spec.latent_dim
        self.general = SubnetModule(spec.general, registry, particles, L) if spec.general else None
        self.invariant = SubnetModule(spec.invariant, registry, particles, L) if spec.invariant else None
        self.combiner = None
        width = L
        if spec.combiner is not None and self.general is not None and self.invariant is not None:
            comb_cls = registry.get("combiner", spec.combiner.name)
            ctx_dim = self.context(p4, mask).shape[-1] if self.context is not None else 0
            self.combiner = comb_cls(_options(comb_cls, spec.combiner), latent_dim=L, context_dim=ctx_dim)
            width = self.combiner.out_features
        self.head = MLP(width, spec.head.hidden, 1, batchnorm=spec.head.batchnorm)

    # -- pieces ------------------------------------------------------------------------
    def transform_inputs(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> Particles:
        particles = Particles.from_p4(p4, mask)
        for t in self.transforms:
            particles = t(particles)
        return particles

    def latent(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled latent vector the head sees."""
        if mask is None:
            mask = torch.ones(p4.shape[:2], dtype=torch.bool, device=p4.device)
        particles = self.transform_inputs(p4, mask)
        g = self.general(particles) if self.general is not None else None
        s = self.invariant(particles) if self.invariant is not None else None
        if g is None or s is None:
            return g if g is not None else s
        ctx = self.context(p4, mask).to(g.dtype) if self.context is not None else None
        return self.combiner(g, s, ctx)

    def forward(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.latent(p4, mask)).squeeze(-1)

    def general_weight(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The learned weight of the general subnet per event, if the combiner has one."""
        if self.combiner is None or self.context is None:
            return None
        if mask is None:
            mask = torch.ones(p4.shape[:2], dtype=torch.bool, device=p4.device)
        return self.combiner.weight(self.context(p4, mask).to(p4.dtype))

    # -- summary -----------------------------------------------------------------------
    def parts(self) -> dict[str, nn.Module | None]:
        return {
            "general": self.general,
            "invariant": self.invariant,
            "combiner": self.combiner,
            "head": self.head,
        }

    def parameter_counts(self) -> dict[str, int]:
        counts = {k: n_parameters(m) for k, m in self.parts().items() if m is not None}
        counts["total"] = n_parameters(self)
        return counts

    def hidden_neuron_counts(self) -> dict[str, int]:
        counts = {k: hidden_neurons(m) for k, m in self.parts().items() if m is not None}
        counts["total"] = hidden_neurons(self)
        return counts


def build_model(spec: Spec, registry: Registry | None = None) -> SymfwModel:
    """Assemble the model a spec describes (float32, training mode).

    Plain ``nn.BatchNorm1d`` layers of plugins become symfw's subclass of it (same parameters and
    outputs) that can share its batch statistics with penalty passes (:mod:`symfw.core.nn`).
    """
    return share_statistics(SymfwModel(spec, registry))
