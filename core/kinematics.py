"""Four-vector kinematics on tensors of shape (..., 4) ordered (E, px, py, pz), metric diag(+1, -1, -1, -1).

Functions work for torch tensors; quantities where cancellation bites (Minkowski products,
masses) accept ``dtype=torch.float64`` to compute in double precision.
"""

from __future__ import annotations

import torch

METRIC = (1.0, -1.0, -1.0, -1.0)


def metric(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The Minkowski metric η = diag(+1, −1, −1, −1) as a (4, 4) tensor."""
    return torch.diag(torch.tensor(METRIC, dtype=dtype, device=device))


def mdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minkowski inner product a·b = a⁰b⁰ − a⃗·b⃗ over the last axis."""
    return a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)


def pairwise_mdot(p4: torch.Tensor) -> torch.Tensor:
    """d_ij = p_i·p_j for p4 of shape (B, N, 4): returns (B, N, N)."""
    eta = torch.tensor(METRIC, dtype=p4.dtype, device=p4.device)
    return torch.einsum("bid,bjd->bij", p4 * eta, p4)


def mass2(p4: torch.Tensor) -> torch.Tensor:
    """Squared invariant mass m² = p·p."""
    return mdot(p4, p4)


def mass(p4: torch.Tensor) -> torch.Tensor:
    """Invariant mass, sqrt(max(m², 0))."""
    return mass2(p4).clamp_min(0).sqrt()


def pt(p4: torch.Tensor) -> torch.Tensor:
    """Transverse momentum sqrt(px² + py²)."""
    return torch.hypot(p4[..., 1], p4[..., 2])


def phi(p4: torch.Tensor) -> torch.Tensor:
    """Azimuth atan2(py, px) in (−π, π]."""
    return torch.atan2(p4[..., 2], p4[..., 1])


def rapidity(p4: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rapidity y = ½ ln((E + pz)/(E − pz)), clamped away from the light cone along z."""
    e, pz = p4[..., 0], p4[..., 3]
    return 0.5 * (torch.log((e + pz).clamp_min(eps)) - torch.log((e - pz).clamp_min(eps)))


def eta(p4: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pseudorapidity η = asinh(pz / pT)."""
    return torch.asinh(p4[..., 3] / pt(p4).clamp_min(eps))


def from_pt_eta_phi_m(pt_, eta_, phi_, m=None):
    """Build (E, px, py, pz) from (pT, η, φ, m); works for torch tensors and NumPy arrays."""
    lib = torch if isinstance(pt_, torch.Tensor) else __import__("numpy")
    px = pt_ * lib.cos(phi_)
    py = pt_ * lib.sin(phi_)
    pz = pt_ * lib.sinh(eta_)
    p2 = px * px + py * py + pz * pz
    e = lib.sqrt(p2 + (0 if m is None else m * m))
    return lib.stack([e, px, py, pz], -1)


def delta_phi(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Azimuthal difference φ(a) − φ(b) wrapped to [−π, π)."""
    return torch.remainder(phi(a) - phi(b) + torch.pi, 2 * torch.pi) - torch.pi


def delta_r(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ΔR = √(Δη² + Δφ²) in pseudorapidity and azimuth (φ wrapped)."""
    return torch.hypot(eta(a) - eta(b), delta_phi(a, b))


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3-D opening angle in [0, π] between the momenta a⃗ and b⃗, atan2(|a⃗ × b⃗|, a⃗·b⃗): exact near 0 and π."""
    (ax, ay, az), (bx, by, bz) = a[..., 1:].unbind(-1), b[..., 1:].unbind(-1)
    # component-wise, this is exactly 0 for a⃗ = b⃗ (torch.linalg.cross gives ~1e-17 there)
    cross = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], -1)
    return torch.atan2(cross.norm(dim=-1), ax * bx + ay * by + az * bz)
