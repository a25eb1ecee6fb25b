"""SEAL's group penalty Γ_G (Hebbar et al., "SEAL: a Symmetry EncourAging Loss"):

    Γ_G = Σ_b w_b ‖f(Λ_b x_b) − f(x_b)‖² / Σ_b w_b,   Λ_b = exp(φ n̂·J) exp(y m̂·K) per event b

f is the model's logit (or its probability σ(logit)); w are the sample weights. Λ_b is drawn
from the spec's group: the compact generators J (rotations, Tᵀ = −T) and the others K
(boosts) of the chosen subset are combined along a direction n̂, m̂ uniform on the unit sphere
of their span ("uniform") or along one of them picked at random ("axis"); |y| and |φ| are
uniform in the ``rapidity`` and ``angle`` ranges (default [0, 1] and [0, π], as the built-in
groups' ``sample()``), or the boost velocity |β| = tanh|y| uniform in a ``beta`` range. Any
group with ``generators()`` works, a third-party one included.

Only real particles move: padded entries are passed through unchanged. Spurions are appended
inside the model, after Λ has acted, so they are never transformed. f(x) is the training
pass's output when the trainer passes it (``batch.logits``); otherwise f(x) and f(Λx) are
evaluated in one call on the concatenated batch (one set of batch-norm statistics for both).
The penalty only calls ``fn(p4, mask)``; it works under ``torch.func.vmap`` when the caller
allows random draws (``randomness="different"`` or ``"same"``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator

from symfw.core.errors import UsageError
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Batch, Options, Penalty, SymmetryGroup

Range = tuple[float, float]


# --------------------------------------------------------------------------- shared by the SEAL penalties


class SealOptions(Options):
    """Options both SEAL penalties share."""

    on: Literal["logit", "probability"] = "logit"
    generators: list[str] = Field(
        default_factory=list, description="Names of the group's generators to use (empty: all of them)."
    )
    weighted: bool = Field(True, description="Average over events with the sample weights.")
    relative: bool = Field(
        False,
        description="Divide by the batch variance of the output, so that shrinking the output's scale "
        "cannot lower the penalty (a symfw option, not in the SEAL paper).",
    )
    event_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Evaluate the penalty on the first ⌈fraction·B⌉ events of each batch (batches are shuffled "
        "every epoch: a random subset, an unbiased estimate of the mean for less compute).",
    )


def select_generators(group: SymmetryGroup, names: list[str], dtype, device) -> tuple[list[str], torch.Tensor]:
    """The chosen generator names (empty: all) and their (G, 4, 4) matrices; unknown names are a UsageError."""
    names = list(names) or list(group.generator_names)
    if not names:
        raise UsageError(f"group '{group.name}' has no generators to penalise along")
    gens = group.generators(dtype=dtype, device=device)
    index = [group.generator_index(n) for n in names]  # raises UsageError listing the known ones
    return list(names), gens[index]


def check_generators(group: SymmetryGroup, names: list[str]) -> None:
    select_generators(group, names, torch.float64, None)


def on_output(logits: torch.Tensor, on: str) -> torch.Tensor:
    return torch.sigmoid(logits) if on == "probability" else logits


SPREAD_FLOOR = 1e-4  # added to the output variance of a ``relative`` penalty: a constant output stays finite


def first_events(batch: Batch, fraction: float) -> Batch:
    """The first ⌈fraction·B⌉ events of ``batch`` (all of them for fraction 1)."""
    n = batch.p4.shape[0]
    k = max(1, math.ceil(fraction * n))
    if k >= n:
        return batch
    return Batch(batch.p4[:k], batch.mask[:k], batch.label[:k], batch.weight[:k],
                 None if batch.logits is None else batch.logits[..., :k])


def seal_mean(per_event: torch.Tensor, out: torch.Tensor, batch: Batch, options: SealOptions) -> torch.Tensor:
    """The penalty from its per-event terms: weighted mean, divided by the output's weighted
    batch variance (+ ``SPREAD_FLOOR``) when ``options.relative``; ``out`` is f(x), (..., B)."""
    weight = batch.weight if options.weighted else None
    if options.relative:
        w = torch.ones_like(out) if weight is None else weight.to(out.dtype).expand_as(out)
        mean = (w * out).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)
        var = (w * (out - mean) ** 2).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)
        per_event = per_event / (var + SPREAD_FLOOR)
    return event_mean(per_event, weight)


def event_mean(per_event: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Weighted mean over the last (event) axis; leading axes (ensemble members) are summed."""
    if weight is None:
        value = per_event.mean(-1)
    else:
        w = weight.to(per_event.dtype)
        value = (per_event * w).sum(-1) / w.sum().clamp_min(torch.finfo(per_event.dtype).tiny)
    return value.sum()


def move_real(elements: torch.Tensor, p4: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Λ_b acting on the real particles of event b; padded entries unchanged."""
    moved = torch.einsum("bij,bnj->bni", elements.to(p4.dtype), p4)
    return torch.where(mask.unsqueeze(-1), moved, p4)


def check_range(v: Range) -> Range:
    """A [low, high] range of a group parameter: 0 <= low <= high < inf."""
    if not (0 <= v[0] <= v[1] and math.isfinite(v[1])):
        raise ValueError("must be [low, high] with 0 <= low <= high < inf")
    return v


def is_compact(generator: torch.Tensor) -> bool:
    """Rotation-like (antisymmetric in the (E, px, py, pz) basis) rather than boost-like."""
    return bool(torch.allclose(generator, -generator.T))


# --------------------------------------------------------------------------- Γ_G


class SealGroup(Penalty):
    """SEAL Γ_G: mean ‖f(Λx) − f(x)‖² over events, one random group element Λ per event."""

    name = "seal-group"

    class Options(SealOptions):
        direction: Literal["uniform", "axis"] = Field(
            "uniform", description="uniform: random direction in the span of the generators; axis: one generator at random."
        )
        rapidity: Range = Field((0.0, 1.0), description="Range of |rapidity| for boost-like generators.")
        beta: Range = Field(
            (0.0, 0.0),
            description="Range of the boost velocity |β| = tanh|rapidity|, drawn uniformly in β; replaces rapidity "
            "unless [0, 0] (the default: unused).",
        )
        angle: Range = Field((0.0, math.pi), description="Range of |angle| (radians) for rotation-like generators.")

        @field_validator("rapidity", "angle")
        @classmethod
        def _range(cls, v: Range) -> Range:
            return check_range(v)

        @field_validator("beta")
        @classmethod
        def _beta(cls, v: Range) -> Range:
            if not (0 <= v[0] <= v[1] < 1):
                raise ValueError("must be [low, high] with 0 <= low <= high < 1")
            return v

    def __init__(self, options: "SealGroup.Options", group: SymmetryGroup):
        super().__init__(options, group)
        _, gens = select_generators(group, options.generators, torch.float64, None)
        self._compact = [is_compact(g) for g in gens]

    def sample(self, n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """(n, 4, 4) random elements exp(φ n̂·J) exp(y m̂·K) on ``device``."""
        _, gens = select_generators(self.group, self.options.generators, dtype, device)
        rotations = [g for g, c in zip(gens, self._compact) if c]
        boosts = [g for g, c in zip(gens, self._compact) if not c]
        velocity = self.options.beta[1] > 0
        boost_range = self.options.beta if velocity else self.options.rapidity
        parts = [
            self._algebra(basis, bounds, n, dtype, device, velocity=v)
            for basis, bounds, v in ((rotations, self.options.angle, False), (boosts, boost_range, velocity))
            if basis
        ]
        if not parts:
            return torch.eye(4, dtype=dtype, device=device).expand(n, 4, 4)
        elements = torch.linalg.matrix_exp(torch.cat(parts)).unflatten(0, (len(parts), n))
        return elements[0] @ elements[1] if len(parts) == 2 else elements[0]

    def _algebra(self, gens: list[torch.Tensor], bounds: Range, n: int, dtype, device, velocity=False) -> torch.Tensor:
        """(n, 4, 4) algebra elements: a direction in the span of ``gens`` times a size uniform in
        ``bounds`` (with ``velocity``, uniform in β and the size is the rapidity atanh β)."""
        basis = torch.stack(gens)
        if self.options.direction == "uniform":
            direction = torch.randn(n, len(gens), dtype=dtype, device=device)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-30)
        else:
            pick = torch.randint(len(gens), (n,), device=device)
            sign = torch.randint(0, 2, (n, 1), device=device).to(dtype) * 2 - 1
            direction = torch.nn.functional.one_hot(pick, len(gens)).to(dtype) * sign
        low, high = bounds
        size = low + (high - low) * torch.rand(n, 1, dtype=dtype, device=device)
        if velocity:
            size = torch.atanh(size)
        return torch.einsum("na,aij->nij", direction * size, basis)

    def __call__(self, fn, batch: Batch) -> torch.Tensor:
        batch = first_events(batch, self.options.event_fraction)
        p4, mask = batch.p4, batch.mask
        n = p4.shape[0]
        elements = self.sample(n, dtype=torch.float64, device=p4.device)
        moved = move_real(elements, p4.to(torch.float64), mask).to(p4.dtype)
        if batch.logits is None:
            out = fn(torch.cat([p4, moved]), torch.cat([mask, mask]))
            ref, new = out[..., :n], out[..., n:]
        else:  # the training pass's f(x): only f(Λx) is left to compute
            ref, new = batch.logits, fn(moved, mask)
        ref, new = on_output(ref, self.options.on), on_output(new, self.options.on)
        return seal_mean((new - ref).pow(2), ref, batch, self.options)


@hookimpl
def register_penalties(register):
    register(SealGroup)
