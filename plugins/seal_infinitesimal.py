"""SEAL's infinitesimal penalty Γ_δ (Hebbar et al., "SEAL: a Symmetry EncourAging Loss"):

    Γ_δ = Σ_b w_b Σ_a (∂f/∂x · T_a x_b)² / Σ_b w_b      ("sum" over generators; "mean" divides by G)

for the Lie-algebra generators T_a of the spec's group (all of them, or the ``generators``
chosen). ∂f/∂x · T_a x is the derivative of the output along the orbit, d/dθ f(exp(θT_a) x) at
θ = 0, computed exactly by forward-mode differentiation (``torch.func.jvp``), never by finite
differences. Padded particles get a zero tangent; spurions are appended inside the model, so
they never move. Any group with ``generators()`` gets Γ_δ for free.

``estimator = "exact"`` evaluates the G directional derivatives with one jvp vmapped over the
G tangents (the whole batch moves along T_a, as in Γ_G with a common element exp(εT_a)).
``"random"`` uses one jvp along Σ_a ξ_ab T_a x_b with ξ_ab ~ N(0, 1) drawn per event: E[(Σ_a ξ_a D_a)²] = Σ_a D_a², an unbiased estimate of the
same penalty at the cost of a single directional derivative.

``random_signs`` (default on): event b moves along s_b T_a x_b with s_b = ±1 at random, and the
derivative is multiplied by s_b again. For a model whose events do not interact this changes
nothing (J(s·v)_b = s_b (Jv)_b). A model normalising with batch statistics (batch norm in training
mode) would otherwise see the whole batch move coherently — under a boost every energy grows —
and subtract most of the move with the batch mean; with random signs the batch mean barely moves.
The trainer's ``fn`` normalises with the statistics recorded on the clean batch
(:func:`symfw.core.nn.shared_batch_statistics`), which do not move at all; the signs matter when
a penalty is called with a model in plain training mode.

``orbit_rapidity = [0, y]`` takes the derivatives at Λx rather than x, with Λ drawn as Γ_G draws
it, by :func:`symfw.core.groups.random_elements` (|rapidity| in the range, rotations by any angle): the derivative is then small along the orbit out to
rapidity y, not only at the data, which bounds finite changes |f(exp(θT)x) − f(x)| ≤ ∫|∂_T f|.
A symfw option (SEAL's Γ_δ is the default, [0, 0]).

``relative = true`` divides by the batch variance of f(x) (the training pass's ``batch.logits``
when given), so that the penalty cannot be lowered by shrinking the output's scale.

``method = "double-vjp"`` obtains the same products J·v from two reverse-mode passes (the vjp of
the linear map u ↦ Jᵀu is v ↦ J·v): identical values, about twice as fast on the CPU, where
forward-mode AD pays a large per-operation overhead.
``method = "gradient"`` uses that the output of event b depends on event b alone (true of the
trainer's ``fn``, which normalises with recorded statistics, not of a model normalising with the
statistics of the batch it is given): one reverse pass gives ∂f_b/∂x_b for every event, and
D_ab = ∂f_b/∂x_b · T_a x_b for every generator at once — the exact estimator for the price of one
gradient.

The penalty only calls ``fn(p4, mask)`` and composes with ``torch.func.vmap``. A model whose
forward pass updates state in place (batch-norm running statistics in training mode) cannot be
traced by ``torch.func``; for it the same forward-mode derivative is taken with
``torch.autograd.forward_ad`` dual tensors, one pass per generator.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.autograd.forward_ad as fwAD
from pydantic import Field, field_validator

from symfw.core.groups import Range, act, check_range, random_elements, tangents
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Batch, Penalty, SymmetryGroup
from symfw.plugins.seal_group import SealOptions, check_generators, first_events, on_output, seal_mean, select_generators

_CAPTURED_MUTATION = "mutate a captured Tensor"


def _forward_mode(fn, p4: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """``torch.func.jvp`` vmapped over the G tangents: one primal pass, batched tangent passes."""
    if tangents.shape[0] == 1:
        return torch.func.jvp(fn, (p4,), (tangents[0],))[1].unsqueeze(0)
    return torch.func.vmap(lambda v: torch.func.jvp(fn, (p4,), (v,))[1], randomness="same")(tangents)


def _reverse_mode(fn, p4: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """The same J·v by two reverse passes: u ↦ Jᵀu is linear, and its own vjp maps v to J·v."""
    out, pullback = torch.func.vjp(fn, p4)
    _, pullback_t = torch.func.vjp(lambda u: pullback(u)[0], torch.zeros_like(out))
    if tangents.shape[0] == 1:
        return pullback_t(tangents[0])[0].unsqueeze(0)
    return torch.func.vmap(lambda v: pullback_t(v)[0], randomness="same")(tangents)


def _per_event_gradient(fn, p4: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """J·v for an ``fn`` whose events do not interact: the gradient of Σ_b f_b is, event by event,
    ∂f_b/∂x_b, and its dot product with each tangent is the directional derivative — one reverse
    pass serves every generator."""
    out, pullback = torch.func.vjp(fn, p4)
    grad = pullback(torch.ones_like(out))[0]
    return torch.einsum("...ni,a...ni->a...", grad, tangents)


_METHODS = {"jvp": _forward_mode, "double-vjp": _reverse_mode, "gradient": _per_event_gradient}


def directional_derivatives(fn, p4: torch.Tensor, tangents: torch.Tensor, method: str = "jvp") -> torch.Tensor:
    """(G, ...) derivatives d/dε fn(p4 + ε·tangents[a]) at ε = 0: the Jacobian-vector products J·v_a.

    ``method="jvp"``: forward mode, ``torch.func.jvp``; ``"double-vjp"``: the same products from
    two reverse passes (cheaper on the CPU for small layers); ``"gradient"``: one reverse pass, valid
    when ``fn``'s events do not interact (as the trainer's ``fn``, which normalises with recorded
    statistics). For an ``fn`` that mutates captured state, one ``torch.autograd.forward_ad``
    dual-tensor pass per tangent instead.
    """
    try:
        return _METHODS[method](fn, p4, tangents)
    except RuntimeError as exc:
        if _CAPTURED_MUTATION not in str(exc):
            raise
    derivs = []
    for tangent in tangents:
        with fwAD.dual_level():
            derivs.append(fwAD.unpack_dual(fn(fwAD.make_dual(p4, tangent))).tangent)
    return torch.stack(derivs)


class SealInfinitesimal(Penalty):
    """SEAL Γ_δ: squared derivative of the output along each generator T·x (jvp), summed or averaged."""

    name = "seal-infinitesimal"

    class Options(SealOptions):
        reduction: Literal["sum", "mean"] = Field("sum", description="Combine the generators' terms by sum or mean.")
        estimator: Literal["exact", "random"] = Field(
            "exact", description="exact: every generator; random: one random combination per event (unbiased)."
        )
        method: Literal["jvp", "double-vjp", "gradient"] = Field(
            "jvp",
            description="jvp: forward mode (torch.func.jvp); double-vjp: the same products by reverse mode; "
            "gradient: one input gradient dotted with every tangent (events must not interact, as in training).",
        )
        random_signs: bool = Field(
            True, description="Move each event along ±T_a (random sign): batch statistics cannot absorb the move."
        )
        orbit_rapidity: Range = Field(
            (0.0, 0.0),
            description="Take the derivatives at Λx instead of x, Λ a random element as Γ_G draws it with |rapidity| "
            "in this range (rotations: any angle); (0, 0): at the data, as SEAL's Γ_δ.",
        )

        @field_validator("orbit_rapidity")
        @classmethod
        def _orbit(cls, v: Range) -> Range:
            return check_range(v)

    def __init__(self, options: "SealInfinitesimal.Options", group: SymmetryGroup):
        super().__init__(options, group)
        check_generators(group, options.generators)

    def points(self, batch: Batch) -> torch.Tensor:
        """Where the derivatives are taken: the events, or (``orbit_rapidity``) random points of their orbits."""
        if self.options.orbit_rapidity[1] == 0:
            return batch.p4
        elements = random_elements(
            self.group, batch.p4.shape[0], generators=self.options.generators, rapidity=self.options.orbit_rapidity,
            angle=(0.0, math.pi), device=batch.p4.device,
        )
        return act(elements, batch.p4, batch.mask)

    def per_generator(self, fn, batch: Batch) -> tuple[list[str], torch.Tensor]:
        """(G, ..., B) directional derivatives ∂f/∂x · T_a x of the output, one row per generator."""
        p4, mask = self.points(batch), batch.mask
        names, gens = select_generators(self.group, self.options.generators, p4.dtype, p4.device)
        along = tangents(gens, p4, mask)
        if not self.options.random_signs:
            return names, directional_derivatives(self._output(fn, mask), p4, along, self.options.method)
        sign = torch.randint(0, 2, (p4.shape[0],), device=p4.device).to(p4.dtype) * 2 - 1
        derivs = directional_derivatives(self._output(fn, mask), p4, along * sign[:, None, None], self.options.method)
        return names, derivs * sign  # J(s·v)_b = s_b (Jv)_b for events that do not interact

    def _output(self, fn, mask):
        return lambda x: on_output(fn(x, mask), self.options.on)

    def __call__(self, fn, batch: Batch) -> torch.Tensor:
        batch = first_events(batch, self.options.event_fraction)
        if self.options.estimator == "exact":
            _, derivs = self.per_generator(fn, batch)
            squares = derivs.pow(2)
            per_event = squares.sum(0) if self.options.reduction == "sum" else squares.mean(0)
        else:
            p4, mask = self.points(batch), batch.mask
            _, gens = select_generators(self.group, self.options.generators, p4.dtype, p4.device)
            xi = torch.randn(p4.shape[0], gens.shape[0], dtype=p4.dtype, device=p4.device)
            tangent = torch.einsum("ba,abni->bni", xi, tangents(gens, p4, mask))
            derivs = directional_derivatives(self._output(fn, mask), p4, tangent[None], self.options.method)
            per_event = derivs[0].pow(2) / (gens.shape[0] if self.options.reduction == "mean" else 1)
        out = None
        if self.options.relative:
            out = on_output(batch.logits if batch.logits is not None else fn(batch.p4, batch.mask), self.options.on)
        return seal_mean(per_event, out, batch, self.options)


@hookimpl
def register_penalties(register):
    register(SealInfinitesimal)
