"""Jet preprocessing as an input transform: constituents in the jet's own frame.

For each real constituent i of a jet J = Σ_j p_j (pT-ordered, padded entries stay zero):

    Δη_i = η_i − η_J,   Δφ_i = φ_i − φ_J (wrapped to [−π, π)),   ΔR_i = √(Δη_i² + Δφ_i²)
    log pT_i,  log E_i  (GeV),   log(pT_i / pT_J),  log(E_i / E_J)

appended as channels, so an encoder on particles (a PFN) learns from dimensionless, O(1)
inputs instead of raw GeV four-vectors. ``rotate`` turns the (Δη, Δφ) plane so the
pT-weighted principal axis of the constituents points along Δη (the jet-image convention);
``scale_p4`` replaces the four-vectors by p_i / E_J. Meant as a subnet's own transform
(``[general] inputs = [{ name = "jet-frame" }]``), so an invariant subnet next to it still sees
the plain four-vectors. It keeps no symmetry (η, φ and E are frame quantities).
"""

import torch
from pydantic import Field

from symfw.core import kinematics as k
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import InputTransform, Options

FEATURES = ("deta", "dphi", "log_pt", "log_e", "log_pt_frac", "log_e_frac", "dr")


class JetFrame(InputTransform):
    """Jet-frame constituent features (Δη, Δφ, log pT, log E, log pT and E fractions, ΔR) as channels."""

    name = "jet-frame"
    keeps = "trivial"

    class Options(Options):
        rotate: bool = Field(True, description="Rotate (Δη, Δφ) so the pT-weighted principal axis lies along Δη.")
        scale_p4: bool = Field(True, description="Replace the four-vectors by p_i / E_J.")

    def __call__(self, particles):
        p4, mask = particles.p4, particles.mask
        m = mask.to(p4.dtype)
        work = (p4 * m.unsqueeze(-1)).to(torch.float64)
        jet = work.sum(1, keepdim=True)
        # padded entries get a fixed stand-in before the non-smooth functions (pT = √(px² + py²) at 0,
        # η, log): their features are zeroed below, and derivatives (SEAL's jvp) stay finite
        safe = torch.where(mask.unsqueeze(-1), work, work.new_tensor([1.0, 1.0, 0.0, 0.0]))
        pt, e = k.pt(safe).clamp_min(1e-6), safe[..., 0].clamp_min(1e-6)
        pt_j, e_j = k.pt(jet).clamp_min(1e-6), jet[..., 0].clamp_min(1e-6)
        deta = k.eta(safe) - k.eta(jet)
        dphi = k.delta_phi(safe, jet)
        if self.options.rotate:
            w = pt * m
            cxx, cyy, cxy = ((w * a * b).sum(1, keepdim=True) for a, b in ((deta, deta), (dphi, dphi), (deta, dphi)))
            theta = 0.5 * torch.atan2(2 * cxy, cxx - cyy)
            c, s = torch.cos(theta), torch.sin(theta)
            deta, dphi = c * deta + s * dphi, -s * deta + c * dphi
        feats = torch.stack([deta, dphi, pt.log(), e.log(), (pt / pt_j).log(), (e / e_j).log(), torch.hypot(deta, dphi)], -1)
        feats = (feats * m.unsqueeze(-1)).to(p4.dtype)
        new_p4 = (work / e_j.unsqueeze(-1)).to(p4.dtype) if self.options.scale_p4 else p4
        return particles.replace(p4=new_p4, channels=torch.cat([particles.channels, feats], -1))


@hookimpl
def register_input_transforms(register):
    register(JetFrame)
