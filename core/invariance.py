"""Checking invariance: ``assert_invariant(fn, group, p4)`` compares fn(Λ·x) with fn(x).

Shipped in the package (not only in tests) so that plugin authors check their own maps and
models with the same helper symfw uses. Tolerances depend on the dtype of the inputs. The
elements Λ are :func:`symfw.core.groups.random_elements` of the group (its default ranges),
acting by :func:`symfw.core.groups.act` (only real particles move).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import InvarianceError
from .groups import act, random_elements
from .interfaces import SymmetryGroup

#: default relative tolerance per dtype (relative to the largest |output| in the batch)
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def invariance_deviation(
    fn: Callable[..., torch.Tensor],
    group: SymmetryGroup,
    p4: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    generator: str | None = None,
    elements: torch.Tensor | None = None,
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """max |fn(Λx) − fn(x)| per event divided by the largest |fn(x)| of the batch.

    One random element per event is drawn from ``group`` (along ``generator`` only, if
    given) unless ``elements`` (B, 4, 4) are passed. ``fn`` is called as ``fn(p4, mask)``
    when a mask is given, else ``fn(p4)``.
    """
    if elements is None:
        along = None if generator is None else [generator]
        elements = random_elements(group, p4.shape[0], generators=along, device=p4.device, rng=rng)
    moved = act(elements, p4, mask)
    call = (lambda x: fn(x, mask)) if mask is not None else fn
    with torch.no_grad():
        ref, out = call(p4), call(moved)
    scale = ref.abs().max().clamp_min(torch.finfo(ref.dtype).tiny)
    diff = (out - ref).abs().reshape(ref.shape[0], -1).amax(1) if ref.dim() > 0 else (out - ref).abs()
    return diff / scale


def assert_invariant(
    fn: Callable[..., torch.Tensor],
    group: SymmetryGroup,
    p4: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    generator: str | None = None,
    elements: torch.Tensor | None = None,
    rtol: float | None = None,
    rng: torch.Generator | None = None,
) -> float:
    """Raise :class:`InvarianceError` unless fn(Λ·x) ≈ fn(x) for random Λ in ``group``.

    The tolerance is relative to the largest |fn(x)| in the batch: ``TOLERANCES[dtype]``
    unless ``rtol`` is given. Returns the worst relative deviation found.
    """
    rtol = TOLERANCES.get(p4.dtype, 1e-4) if rtol is None else rtol
    dev = invariance_deviation(fn, group, p4, mask, generator=generator, elements=elements, rng=rng)
    worst = float(dev.max())
    if not worst <= rtol:
        event = int(dev.argmax())
        raise InvarianceError(
            f"not invariant under {group.name}"
            + (f" ({generator})" if generator else "")
            + f": relative deviation {worst:.3g} > {rtol:.1g} (event {event}, {p4.dtype})"
        )
    return worst


def assert_not_invariant(fn, group, p4, mask=None, *, generator=None, rtol=None, rng=None) -> float:
    """The opposite check: some event's output must move by more than the tolerance."""
    rtol = TOLERANCES.get(p4.dtype, 1e-4) if rtol is None else rtol
    worst = float(invariance_deviation(fn, group, p4, mask, generator=generator, rng=rng).max())
    if worst <= rtol:
        raise InvarianceError(f"unexpectedly invariant under {group.name}: deviation {worst:.3g} <= {rtol:.1g}")
    return worst
