"""Model assembly: a spec becomes a :class:`SymfwModel`.

    four-vectors → [input transforms] → general subnet (on particles)
                                      → invariant subnet (on an invariant map, + input-method scalars)
               → combiner(g, s, context(four-vectors)) → head → the task's output

The head is an MLP of the task's width (one logit for ``binary``), or PELICAN's equivariant
four-vector head (:class:`FourVectorHead`).

The baselines are the same assembly with one subnet (no combiner). Shapes the components
produce are found with a dry run on a dummy event, so plugins need not declare them.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import SpecError, SymfwError
from .interfaces import Encoder, Particles, Task
from .kinematics import mdot
from .nn import MLP, ParticleMLP, hidden_neurons, n_parameters, share_statistics
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


def apply_transforms(transforms, particles: Particles) -> Particles:
    """``particles`` through ``transforms`` in order. A transform that appends particles without
    extending the (empty) ``components`` gets empty ones of the new size; with components, that
    is a :class:`SpecError` naming it (found by the assembly's dry run)."""
    for t in transforms:
        particles = t(particles)
        rows, n = particles.components.shape[1], particles.p4.shape[1]
        if rows != n:
            if particles.components.shape[-1]:
                raise SpecError(f"input transform '{t.name}' hands on {n} particles but {rows} rows of "
                                "Particles.components: it must extend the components for the particles it adds")
            particles = particles.replace(components=particles.p4.new_zeros(particles.p4.shape[0], n, 0))
    return particles


class SubnetModule(nn.Module):
    """One subnet: an encoder, fed either particles or invariant features."""

    def __init__(self, subnet: Subnet, registry: Registry, particles: Particles, latent_dim: int):
        super().__init__()
        self.transforms = [registry.get("inputs", r.name)(_options(registry.get("inputs", r.name), r))
                           for r in subnet.inputs]
        particles = self.transform(particles)
        enc_cls = registry.get("encoder", subnet.encoder.name)
        self.invariants = None
        if subnet.invariants is not None:
            inv_cls = registry.get("invariants", subnet.invariants.name)
            self.invariants = inv_cls(_options(inv_cls, subnet.invariants))
        self.consumes = enc_cls.consumes
        in_features = self._features(particles).shape[-1] if self.consumes == "features" else (
            4 + particles.channels.shape[-1]
        )
        extra = {"components": particles.components.shape[-1]} if self.consumes == "particles" and enc_cls.reads_components else {}
        self.encoder: Encoder = enc_cls(_options(enc_cls, subnet.encoder), in_features, latent_dim, **extra)

    def _features(self, particles: Particles) -> torch.Tensor:
        if self.invariants is not None:
            feats = self.invariants(particles.p4, particles.mask)
            return torch.cat([feats, particles.scalars.to(feats.dtype)], -1)
        # a features encoder without an invariant map sees the flattened particles
        flat = torch.cat([particles.p4, particles.channels], -1) * particles.mask.unsqueeze(-1)
        return flat.flatten(1)

    def transform(self, particles: Particles) -> Particles:
        """The subnet's own input transforms (after the model's)."""
        return apply_transforms(self.transforms, particles)

    def forward(self, particles: Particles) -> torch.Tensor:
        particles = self.transform(particles)
        if self.consumes == "features":
            return self.encoder(self._features(particles))
        return self.encoder(particles)


class FourVectorHead(nn.Module):
    """PELICAN's equivariant output: p_out = Σ_i w_i p_i over the real particles.

    Each weight w_i = 1 + MLP(latent ⊕ u_i) sees the event's latent and two invariants of the
    particle, u_i = (p_i·J / J², p_i² / J²) with J = Σ_j p_j (dimensionless; Σ_i p_i·J/J² = 1).
    With an invariant latent every w_i is invariant, so p_out transforms as a four-vector:
    p_out(Λx) = Λ p_out(x). At initialisation w_i ≈ 1 and p_out ≈ J, the plain sum.
    """

    def __init__(self, latent_dim: int, hidden: list[int], batchnorm: bool = True):
        super().__init__()
        self.weights = ParticleMLP(latent_dim + 2, hidden, 1, batchnorm=batchnorm)
        nn.init.zeros_(self.weights.out.weight)  # start from w_i = 1: the plain sum of the particles
        nn.init.zeros_(self.weights.out.bias)

    def forward(self, latent: torch.Tensor, p4: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(p4.dtype).unsqueeze(-1)
        p = p4 * m
        J = p.sum(1, keepdim=True)
        J2 = mdot(J, J).clamp_min(1e-6).unsqueeze(-1)
        u = torch.cat([mdot(p, J).unsqueeze(-1) / J2, mdot(p, p).unsqueeze(-1) / J2], -1)
        x = torch.cat([latent.unsqueeze(1).expand(-1, p.shape[1], -1).to(p.dtype), u], -1)
        w = 1 + self.weights(x, mask).squeeze(-1)
        return (w.unsqueeze(-1) * p).sum(1)


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
        task_cls = registry.get("task", spec.task.name)
        self.out_features = task_cls(_options(task_cls, spec.task)).out_features()
        if spec.head.kind == "four-vector":
            self.head: nn.Module = FourVectorHead(width, spec.head.hidden, batchnorm=spec.head.batchnorm)
        else:
            self.head = MLP(width, spec.head.hidden, self.out_features, batchnorm=spec.head.batchnorm)
            if task_cls.prepare is not Task.prepare:  # the task may rescale the output (regression)
                self.register_buffer("output_shift", torch.zeros(self.out_features))
                self.register_buffer("output_scale", torch.ones(self.out_features))

    # -- pieces ------------------------------------------------------------------------
    def transform_inputs(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> Particles:
        return apply_transforms(self.transforms, Particles.from_p4(p4, mask))

    def slots(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The particle slots the model sees: the first ``spec.n_particles`` (for jets, whose
        constituents are pT-ordered, the hardest ones; a view, nothing copied) and their mask
        (all real when None). Events with fewer slots are taken as they are."""
        n = self.spec.n_particles
        if p4.shape[1] > n:
            p4 = p4[:, :n]
            mask = mask[:, :n] if mask is not None else None
        if mask is None:
            mask = torch.ones(p4.shape[:2], dtype=torch.bool, device=p4.device)
        return p4, mask

    def latent(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled latent vector the head sees."""
        p4, mask = self.slots(p4, mask)
        particles = self.transform_inputs(p4, mask)
        g = self.general(particles) if self.general is not None else None
        s = self.invariant(particles) if self.invariant is not None else None
        if g is None or s is None:
            return g if g is not None else s
        ctx = self.context(p4, mask).to(g.dtype) if self.context is not None else None
        return self.combiner(g, s, ctx)

    def forward(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) for a one-output task, else (B, K)."""
        p4, mask = self.slots(p4, mask)
        latent = self.latent(p4, mask)
        if isinstance(self.head, FourVectorHead):
            return self.head(latent, p4, mask)
        out = self.head(latent)
        if hasattr(self, "output_scale"):
            out = out * self.output_scale + self.output_shift
        return out.squeeze(-1) if self.out_features == 1 else out

    @torch.no_grad()
    def set_output_affine(self, shift: torch.Tensor, scale: torch.Tensor) -> None:
        """Map the head's standardised output to physical units: out·scale + shift (regression)."""
        if hasattr(self, "output_scale"):
            self.output_shift.copy_(shift)
            self.output_scale.copy_(scale)

    def general_weight(self, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The learned weight of the general subnet per event, if the combiner has one."""
        if self.combiner is None or self.context is None:
            return None
        p4, mask = self.slots(p4, mask)
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

    # -- the symmetry it keeps -----------------------------------------------------------
    def kept_groups(self) -> list[tuple[str, object]]:
        """(part, the group it keeps by construction — a group or a registered group's name).

        The spec's group; each subnet: an invariant map's ``group`` (a ``features`` encoder sees
        nothing else), a ``particles`` encoder's ``keeps`` (undeclared: ``"trivial"`` — a PFN on
        raw four-vectors keeps nothing), ``"trivial"`` for a ``features`` encoder on the flattened
        four-vectors; the breaking context, when a combiner uses it (its ``keeps``, undeclared:
        ``"trivial"``); each input transform's ``keeps`` (the subgroup it leaves unbroken).
        """
        parts: list[tuple[str, object]] = [("the spec's group", self.group)]
        for slot, sub in (("general", self.general), ("invariant", self.invariant)):
            if sub is None:
                continue
            if sub.consumes == "particles":
                parts.append((f"{slot} subnet {sub.encoder.name}", getattr(sub.encoder, "keeps", "trivial")))
            elif sub.invariants is not None:
                parts.append((f"{slot} subnet {sub.invariants.name} → {sub.encoder.name}", sub.invariants.group))
            else:
                parts.append((f"{slot} subnet {sub.encoder.name} on four-vectors", "trivial"))
            parts += [(f"{slot} input transform {t.name}", t.keeps) for t in sub.transforms]
        if self.combiner is not None and self.context is not None:
            parts.append((f"context {self.context.name}", getattr(self.context, "keeps", "trivial")))
        parts += [(f"input transform {t.name}", t.keeps) for t in self.transforms]
        return parts

    @property
    def residual_group(self):
        """The :class:`~symfw.core.interfaces.SymmetryGroup` the model keeps by construction: the
        intersection of what its parts keep (:meth:`kept_groups`), named as a registered group
        (e.g. ``so2-z``) when one has that algebra. The output is invariant under it, or — with
        the four-vector head (:attr:`output_transforms`) — equivariant: f(Λx) = Λ·f(x)."""
        from .groups import intersect

        return intersect([group for _, group in self.kept_groups()])

    @property
    def output_transforms(self) -> str:
        """How the output transforms under :attr:`residual_group`: ``"invariant"``, or
        ``"four-vector"`` for PELICAN's equivariant head."""
        return "four-vector" if isinstance(self.head, FourVectorHead) else "invariant"

    @property
    def residual_reason(self) -> str:
        """One line saying why: ``so2-z = lorentz (the spec's group) ∩ lorentz (invariant subnet …) ∩ …``."""
        from .groups import resolve_group

        terms = " ∩ ".join(f"{resolve_group(group).name} ({part})" for part, group in self.kept_groups())
        output = "; the output is a four-vector: f(Λx) = Λ·f(x)" if self.output_transforms == "four-vector" else ""
        return f"{self.residual_group.name} = {terms}{output}"


def build_model(spec: Spec, registry: Registry | None = None, seed: int | None = None) -> SymfwModel:
    """Assemble the model a spec describes (float32, training mode).

    ``seed``: initialise it with ``torch.manual_seed(seed)`` without touching the caller's random
    state (how every ensemble member is built: the same seed gives the same weights anywhere).

    Plain ``nn.BatchNorm1d`` layers of plugins become symfw's subclass of it (same parameters and
    outputs) that can share its batch statistics with penalty passes (:mod:`symfw.core.nn`).
    A model too large for the memory available is refused before anything is allocated
    (:func:`symfw.core.limits.check_model`), and a component that fails to construct is a
    :class:`~symfw.core.errors.SpecError` naming it, not a traceback.
    """
    from .limits import check_model

    check_model(spec, registry)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(spec, registry)
    try:
        model = SymfwModel(spec, registry)
    except SymfwError:
        raise
    except Exception as exc:  # noqa: BLE001 - a component's constructor refused its options or sizes
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SpecError(f"spec '{spec.name}': the model cannot be built: {type(exc).__name__}: {detail}") from exc
    return share_statistics(model)
