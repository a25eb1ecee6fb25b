"""A parametric detector for jets: each piece switchable, each breaking a stated part of the Lorentz group.

It acts on one jet's particle-level constituents (the jet is not reclustered)::

    acceptance     |η| < eta_max, else the particle is lost
    tracker        charged, |η| < track_eta_max:  pT' = pT·(1 + σ·N(0,1)),  σ = a ⊕ b·pT   (y, φ, m kept)
                   kept if pT' > track_pt_min
    calorimeter    neutral (and charged beyond the tracker):  E' = E·(1 + σ·N(0,1)),  σ = a/√E ⊕ b
                   (photons: ECAL a, b; hadrons: HCAL a, b); massless along the particle's direction
    towers         calorimeter deposits summed per η–φ cell (Δη × Δφ), placed at the cell centre
                   kept if E' > calo_e_min

Symmetry each piece breaks (of the Lorentz group; SO(2)_z: rotations about the beam, SO(1,1)_z:
boosts along it):

    eta_max, track_eta_max   keeps SO(2)_z only (a z-boost or a tilt moves particles across the edge)
    track_resolution         keeps SO(1,1)_z × SO(2)_z exactly (pT, φ fixed and y shifted by z-boosts)
    ecal/hcal_resolution     keeps SO(3) (E and the direction are rotation invariant); breaks every boost
    towers                   keeps only rotations by multiples of Δφ (and, for massless deposits,
                             z-boosts by multiples of Δη)
    track_pt_min             keeps SO(1,1)_z × SO(2)_z;   calo_e_min keeps SO(3)

``p4_true`` of each measured object is the truth it came from: the particle for a track, the sum
of the merged particles for a tower (docs/jets.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from symfw.core import kinematics as K
from symfw.core.interfaces import Options

Pair = tuple[float, float]


class DetectorOptions(Options):
    """The detector's pieces; ``null`` switches a piece off (docs/jets.md)."""

    eta_max: float | None = Field(4.9, gt=0, description="acceptance: particles with |η| ≥ eta_max are lost")
    track_eta_max: float | None = Field(2.5, gt=0, description="tracker coverage; charged particles beyond it "
                                        "are measured by the calorimeter (null: tracker everywhere)")
    track_resolution: tuple[float, float] | None = Field(
        (0.01, 0.0005), description="(a, b) of σ(pT)/pT = a ⊕ b·pT, b per GeV (charged particles)")
    ecal_resolution: tuple[float, float] | None = Field(
        (0.10, 0.01), description="(a, b) of σ(E)/E = a/√E ⊕ b, a in √GeV (photons)")
    hcal_resolution: tuple[float, float] | None = Field(
        (0.50, 0.03), description="(a, b) of σ(E)/E = a/√E ⊕ b (neutral hadrons, charged beyond the tracker)")
    towers: tuple[float, float] | None = Field(
        (0.1, 0.1), description="(Δη, Δφ) of the calorimeter cells merging deposits (Δφ rounded to 2π/n)")
    track_pt_min: float | None = Field(0.5, ge=0, description="tracks kept with measured pT above this [GeV]")
    calo_e_min: float | None = Field(1.0, ge=0, description="towers (deposits) kept with energy above this [GeV]")


def _np(fn, p4):
    return fn(torch.from_numpy(p4 if p4.flags.writeable else p4.copy())).numpy()  # (Ray returns read-only arrays)


def measure(p4, charge, pid, jet, options: DetectorOptions, rng):
    """Measured objects of flat constituents: (p4 (K, 4), p4_true (K, 4), jet (K,)).

    ``p4`` (M, 4) particle-level (E, px, py, pz), ``charge`` (M,) (0 for neutral), ``pid`` (M,)
    PDG ids, ``jet`` (M,) the jet of each. One row of ``rng.standard_normal((M, 2))`` per particle
    (column 0 tracker, 1 calorimeter), so a jet's draws do not depend on the pieces switched on.
    """
    o = options
    z = rng.standard_normal((len(p4), 2))
    pt, y, phi, eta = (_np(f, p4) for f in (K.pt, K.rapidity, K.phi, K.eta))
    keep = np.ones(len(p4), bool) if o.eta_max is None else np.abs(eta) < o.eta_max
    tracked = (charge != 0) & keep
    if o.track_eta_max is not None:
        tracked &= np.abs(eta) < o.track_eta_max
    calo = keep & ~tracked

    # tracker: pT scaled at fixed rapidity, azimuth and mass
    t = np.flatnonzero(tracked)
    scale = np.ones(len(t))
    if o.track_resolution is not None:
        a, b = o.track_resolution
        scale = 1.0 + np.hypot(a, b * pt[t]) * z[t, 0]
    pt_t = pt[t] * scale
    ok = scale > 0
    if o.track_pt_min is not None:
        ok &= pt_t > o.track_pt_min
    t, pt_t = t[ok], pt_t[ok]
    m2 = np.maximum(_np(K.mass2, p4[t]), 0.0)
    mt = np.sqrt(m2 + pt_t**2)
    tracks = np.stack([mt * np.cosh(y[t]), pt_t * np.cos(phi[t]), pt_t * np.sin(phi[t]), mt * np.sinh(y[t])], -1)

    # calorimeter: each deposit's energy smeared, then summed per cell
    c = np.flatnonzero(calo)
    e = p4[c, 0].copy()
    photon = pid[c] == 22
    for sel, res in ((photon, o.ecal_resolution), (~photon, o.hcal_resolution)):
        if res is not None:
            e[sel] *= 1.0 + np.hypot(res[0] / np.sqrt(e[sel]), res[1]) * z[c[sel], 1]
    ok = e > 0
    c, e = c[ok], e[ok]
    if o.towers is not None:
        d_eta, n_phi = o.towers[0], max(1, round(2 * math.pi / o.towers[1]))
        d_phi = 2 * math.pi / n_phi
        i_eta = np.floor(eta[c] / d_eta).astype(np.int64)
        i_phi = np.floor((phi[c] + math.pi) / d_phi).astype(np.int64) % n_phi
        cells, cell = np.unique(np.stack([jet[c], i_eta, i_phi], 1), axis=0, return_inverse=True)
        cell = cell.reshape(-1)
        e_cell = np.bincount(cell, weights=e, minlength=len(cells))
        true_cell = np.stack([np.bincount(cell, weights=p4[c, k], minlength=len(cells)) for k in range(4)], -1)
        eta_c, phi_c = (cells[:, 1] + 0.5) * d_eta, (cells[:, 2] + 0.5) * d_phi - math.pi
        calo_jet, calo_true, calo_e = cells[:, 0], true_cell, e_cell
    else:
        eta_c, phi_c, calo_jet, calo_true, calo_e = eta[c], phi[c], jet[c], p4[c], e
    deposits = K.from_pt_eta_phi_m(calo_e / np.cosh(eta_c), eta_c, phi_c)
    ok = np.ones(len(calo_e), bool) if o.calo_e_min is None else calo_e > o.calo_e_min

    return (
        np.concatenate([tracks, deposits[ok]]),
        np.concatenate([p4[t], calo_true[ok]]),
        np.concatenate([jet[t], calo_jet[ok]]),
    )
