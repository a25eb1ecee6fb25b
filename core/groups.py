"""Group actions in one place: a random element of a group, and moving particles by it.

Everything in symfw that needs "a random element of this group" or "act on these particles"
calls this module — a group's own ``sample()``/``act()``, both SEAL penalties, the invariance
checker and the diagnostics — so there is one distribution of random elements::

    random_elements(group, n, *, generators=None, direction="uniform", rapidity=None, beta=None,
                    angle=None, dtype=torch.float64, device=None, rng=None)   → (n, 4, 4)
    act(elements, p4, mask=None)      → p4 with the real particles moved, padded entries unchanged
    tangents(algebra, p4, mask=None)  → T·x, the infinitesimal action (zero for padded entries)

``group`` is a :class:`~symfw.core.interfaces.SymmetryGroup` or the name of a registered one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from .errors import UsageError
from .interfaces import SymmetryGroup

if TYPE_CHECKING:
    from .registry import Registry

Range = tuple[float, float]


# --------------------------------------------------------------------------- resolving and checking


def resolve_group(group: SymmetryGroup | str, registry: Registry | None = None) -> SymmetryGroup:
    """A group instance: ``group`` itself, or the registered group of that name with default options."""
    if not isinstance(group, str):
        return group
    from .registry import get_registry

    cls = (registry or get_registry()).get("group", group)  # unknown: one line listing the known ones
    return cls()


def check_range(bounds: Range, upper: float = math.inf) -> Range:
    """A [low, high] range of a group parameter: 0 <= low <= high < upper (ValueError otherwise,
    so that it serves as the body of a pydantic validator)."""
    low, high = bounds
    limit = "inf" if upper == math.inf else f"{upper:g}"
    if not (0 <= low <= high < upper and math.isfinite(high)):
        raise ValueError(f"must be [low, high] with 0 <= low <= high < {limit}")
    return bounds


def is_compact(generator: torch.Tensor) -> bool:
    """Rotation-like (antisymmetric in the (E, px, py, pz) basis) rather than boost-like."""
    return bool(torch.allclose(generator, -generator.T))


def chosen_generators(
    group: SymmetryGroup, names: Sequence[str] | None = None, dtype=torch.float64, device=None
) -> tuple[list[str], torch.Tensor]:
    """The generator names (``None`` or empty: all of the group's) and their (G, 4, 4) matrices.
    An unknown name is a :class:`UsageError` listing the known ones."""
    names = list(names or group.generator_names)
    index = [group.generator_index(n) for n in names]
    return names, group.generators(dtype=dtype, device=device)[index]


# --------------------------------------------------------------------------- random elements


def random_elements(
    group: SymmetryGroup | str,
    n: int,
    *,
    generators: Sequence[str] | None = None,
    direction: Literal["uniform", "axis"] = "uniform",
    rapidity: Range | None = None,
    beta: Range | None = None,
    angle: Range | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """(n, 4, 4) random elements of ``group``, one per event:  Λ = exp(φ n̂·J) · exp(y m̂·K).

    The chosen generators (``generators``: names; default all of the group's) are split into
    rotation-like ones J (antisymmetric matrices) and the others K (boost-like). With
    ``direction="uniform"`` the unit vectors n̂ and m̂ are uniform on the unit sphere of the
    coefficients of J and of K (normalised Gaussians); with ``"axis"`` each picks one generator
    at random, with a random sign. The sizes are uniform in ranges [low, high]:

    - |φ| in ``angle`` (radians),
    - |y| in ``rapidity``, or — with ``beta`` instead — the velocity |β| = tanh|y| uniform in
      ``beta`` (< 1) and y = atanh β.

    Unset ranges are the group's :meth:`~symfw.core.interfaces.SymmetryGroup.default_ranges`
    ([0, max_rapidity] and [0, max_angle] from a built-in group's options: [0, 1] and [0, π]).
    Along one generator T (``generators=["Kz"]``) the element is exp(θT) with |θ| uniform in its
    range and a random sign; a fixed θ is the range [θ, θ]. A group without generators gives
    the identity.

    Random numbers come from ``rng`` (a ``torch.Generator`` on any device), or from torch's
    global generator when ``rng`` is None — then they follow ``torch.manual_seed`` and differ
    per member under ``torch.func.vmap(..., randomness="different")``. The draws are made in
    this order: the rotation part (direction, then size), then the boost part.
    """
    group = resolve_group(group)
    if rapidity is not None and beta is not None:
        raise UsageError("random_elements: give a rapidity range or a beta range, not both")
    defaults = group.default_ranges()
    try:
        angle = check_range(angle if angle is not None else defaults["angle"])
        if beta is not None:
            boost_range, velocity = check_range(beta, upper=1.0), True
        else:
            boost_range, velocity = check_range(rapidity if rapidity is not None else defaults["rapidity"]), False
    except ValueError as exc:
        raise UsageError(f"random_elements: a range {exc}") from None
    device = torch.device(device) if device is not None else torch.device("cpu")
    names, gens = chosen_generators(group, generators)
    compact = [is_compact(g) for g in gens]  # on the float64 CPU matrices: no device round trip
    gens = gens.to(dtype=dtype, device=device)
    rotations = [g for g, c in zip(gens, compact) if c]
    boosts = [g for g, c in zip(gens, compact) if not c]
    draw = _Draws(dtype, device, rng)
    parts = [
        _algebra(basis, bounds, n, direction, draw, velocity=v)
        for basis, bounds, v in ((rotations, angle, False), (boosts, boost_range, velocity))
        if basis
    ]
    if not parts:
        return torch.eye(4, dtype=dtype, device=device).repeat(n, 1, 1)
    elements = torch.linalg.matrix_exp(torch.cat(parts)).unflatten(0, (len(parts), n))
    return elements[0] @ elements[1] if len(parts) == 2 else elements[0]


class _Draws:
    """Random tensors in ``dtype`` on ``device``, drawn with ``rng`` (on its own device) or torch's global RNG."""

    def __init__(self, dtype, device, rng):
        self.dtype, self.device, self.rng = dtype, device, rng
        self.where = rng.device if rng is not None else device

    def normal(self, *shape):
        return torch.randn(*shape, dtype=self.dtype, device=self.where, generator=self.rng).to(self.device)

    def uniform(self, *shape):
        return torch.rand(*shape, dtype=self.dtype, device=self.where, generator=self.rng).to(self.device)

    def integers(self, low, high, shape):
        return torch.randint(low, high, shape, device=self.where, generator=self.rng).to(self.device)


def _algebra(gens: list[torch.Tensor], bounds: Range, n: int, direction: str, draw: _Draws, velocity: bool) -> torch.Tensor:
    """(n, 4, 4) algebra elements: a direction in the span of ``gens`` times a size uniform in
    ``bounds`` (with ``velocity``, uniform in β and the size is the rapidity atanh β)."""
    basis = torch.stack(gens)
    if direction == "uniform":
        coef = draw.normal(n, len(gens))
        coef = coef / coef.norm(dim=1, keepdim=True).clamp_min(1e-30)
    else:
        pick = draw.integers(0, len(gens), (n,))
        sign = draw.integers(0, 2, (n, 1)).to(draw.dtype) * 2 - 1
        coef = torch.nn.functional.one_hot(pick, len(gens)).to(draw.dtype) * sign
    low, high = bounds
    size = low + (high - low) * draw.uniform(n, 1)
    if velocity:
        size = torch.atanh(size)
    return torch.einsum("na,aij->nij", coef * size, basis)


# --------------------------------------------------------------------------- acting on particles


def act(elements: torch.Tensor, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Λ·p for every particle: ``elements`` (B, 4, 4) one per event, or one (4, 4) for all.

    Computed in float64 and returned in p4's dtype. Only real particles move (``mask`` True);
    padded entries pass unchanged. Spurions are appended inside the model, so acting on a
    model's input never moves them.
    """
    work = p4.to(torch.float64)
    elements = elements.to(dtype=torch.float64, device=p4.device)
    if elements.dim() == 2:
        moved = torch.einsum("ij,bnj->bni", elements, work)
    else:
        moved = torch.einsum("bij,bnj->bni", elements, work)
    if mask is not None:
        moved = torch.where(mask.unsqueeze(-1), moved, work)
    return moved.to(p4.dtype)


def tangents(generators: torch.Tensor, p4: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(G, B, N, 4) tangent vectors T_a·p of every particle along each of the (G, 4, 4) generators:
    d/dθ exp(θT_a)·p at θ = 0, in p4's dtype; zero for padded entries."""
    out = torch.einsum("aij,bnj->abni", generators.to(dtype=p4.dtype, device=p4.device), p4)
    if mask is not None:
        out = out * mask[None, :, :, None].to(p4.dtype)
    return out


__all__ = [
    "Range",
    "act",
    "check_range",
    "chosen_generators",
    "is_compact",
    "random_elements",
    "resolve_group",
    "tangents",
]
