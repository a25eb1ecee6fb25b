"""SEAL's group penalty Γ_G (Hebbar et al., "SEAL: a Symmetry EncourAging Loss"):

    Γ_G = Σ_b w_b ‖f(Λ_b x_b) − f(x_b)‖² / Σ_b w_b,   Λ_b = exp(φ n̂·J) exp(y m̂·K) per event b

f is the model's logit (or its probability σ(logit)); w are the sample weights. Λ_b is drawn
from the spec's group by :func:`symfw.core.groups.random_elements`, the one distribution symfw
uses: the compact generators J (rotations, Tᵀ = −T) and the others K (boosts) of the chosen
subset are combined along a direction n̂, m̂ uniform on the unit sphere of their span
("uniform") or along one of them picked at random ("axis"); |y| and |φ| are uniform in the
``rapidity`` and ``angle`` ranges (default [0, 1] and [0, π]), or the boost velocity
|β| = tanh|y| uniform in a ``beta`` range. Any group with ``generators()`` works, a
third-party one included.

Only real particles move (:func:`symfw.core.groups.act`): padded entries pass unchanged. Spurions are appended
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
from symfw.core.groups import Range, act, check_range, chosen_generators, random_elements
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Batch, Options, Penalty, SymmetryGroup


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
    """The chosen generator names (empty: all) and their (G, 4, 4) matrices; unknown names, or a
    group without generators, are a UsageError."""
    if not (names or group.generator_names):
        raise UsageError(f"group '{group.name}' has no generators to penalise along")
    return chosen_generators(group, names, dtype, device)


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
            return check_range(v, upper=1.0)

    def __init__(self, options: "SealGroup.Options", group: SymmetryGroup):
        super().__init__(options, group)
        check_generators(group, options.generators)

    def sample(self, n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """(n, 4, 4) random elements exp(φ n̂·J) exp(y m̂·K) on ``device``, from torch's global RNG."""
        o = self.options
        velocity = o.beta[1] > 0
        return random_elements(
            self.group, n, generators=o.generators, direction=o.direction, angle=o.angle,
            rapidity=None if velocity else o.rapidity, beta=o.beta if velocity else None, dtype=dtype, device=device,
        )

    def __call__(self, fn, batch: Batch) -> torch.Tensor:
        batch = first_events(batch, self.options.event_fraction)
        p4, mask = batch.p4, batch.mask
        n = p4.shape[0]
        moved = act(self.sample(n, dtype=torch.float64, device=p4.device), p4, mask)
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
