"""The toy Z → μμ (signal) vs γ* → μμ (background) dataset, with a pT-dependent detector resolution.

Truth, per event (m in the mass window, default 60–120 GeV)::

    signal       dN/dm ∝ 1 / ((m² − M_Z²)² + M_Z² Γ_Z²)        relativistic Breit–Wigner
    background   dN/dm ∝ m^(−k),  k = 2                          γ* → μμ (steeper with larger k)
    boson        dN/dpT ∝ pT / (pT² + p₀²)^α,  y ~ N(0, σ_y),  φ ~ U(−π, π)
    decay        dN/dcos θ* ∝ 1 + cos² θ*,  φ* ~ U(0, 2π)  in the boson rest frame, boosted to the lab

Detector, each muon with its own draw::

    pT_meas = pT_true · (1 + σ_rel(pT_true) · N(0, 1)),   σ_rel = a ⊕ b·pT_true

η and φ are kept and E is recomputed for a massless muon. Optional acceptance |η| < η_max,
pT > pT_min on the measured muons. Muons are ordered leading-first by measured pT; the true
four-vectors are kept (same order), and their sum, the true dimuon four-momentum (E, px, py, pz),
is the regression ``target``. The background is reweighted to the signal's spectrum of
the leading-muon or dimuon pT in equal-population bins of the signal, as per-event weights or
by resampling (accept-reject, so no event is repeated).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from symfw.core.data import EventData
from symfw.core.errors import DataError, SymfwError
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import DatasetSource, Options

CHUNK = 65_536  # events per vectorised step (also the progress granularity)


class ZmumuOptions(Options):
    """Options of the ``zmumu`` generator (all energies in GeV)."""

    n_events: int = Field(100_000, ge=2, description="events when none is asked for")
    signal_fraction: float = Field(0.5, gt=0, lt=1, description="share of Z → μμ events")
    mass_window: tuple[float, float] = Field((60.0, 120.0), description="true dimuon mass range")
    z_mass: float = Field(91.1876, gt=0)
    z_width: float = Field(2.4952, gt=0)
    background_power: float = Field(2.0, ge=2.0, description="γ* mass spectrum ∝ m^-k, k ≥ 2")
    boson_pt_scale: float = Field(6.0, gt=0, description="p₀ of dN/dpT ∝ pT/(pT²+p₀²)^α")
    boson_pt_power: float = Field(1.8, gt=1, description="α of dN/dpT ∝ pT/(pT²+p₀²)^α")
    boson_pt_max: float = Field(400.0, gt=0, description="largest boson pT generated")
    rapidity_width: float = Field(1.5, gt=0, description="σ of the boson rapidity")
    resolution: float = Field(0.05, ge=0, description="a in σ(pT)/pT = a ⊕ b·pT")
    resolution_slope: float = Field(0.002, ge=0, description="b in σ(pT)/pT = a ⊕ b·pT, per GeV")
    eta_max: float | None = Field(2.5, gt=0, description="muon acceptance |η| < eta_max (None: no cut)")
    pt_min: float | None = Field(10.0, ge=0, description="muon acceptance pT > pt_min (None: pT > 0)")
    reweight: Literal["weights", "resample", "none"] = "weights"
    reweight_variable: Literal["leading-pt", "dimuon-pt"] = "leading-pt"
    reweight_bins: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.mass_window
        if not 0 < lo < hi:
            raise ValueError(f"mass_window must be 0 < low < high, got {self.mass_window}")
        return self


# --------------------------------------------------------------------------- truth


def breit_wigner_masses(rng, n, lo, hi, mass, width):
    """m from dN/dm ∝ 1/((m² − M²)² + M²Γ²) on [lo, hi], by the inverse CDF (a cached table)."""
    table = _breit_wigner_quantiles(float(lo), float(hi), float(mass), float(width))
    x = rng.random(n) * (len(table) - 1)
    i = np.minimum(x.astype(np.int64), len(table) - 2)
    return table[i] + (x - i) * (table[i + 1] - table[i])


@functools.lru_cache(maxsize=8)
def _breit_wigner_quantiles(lo, hi, mass, width, grid=200_001, size=65_537):
    """Quantiles of the Breit–Wigner at ``size`` equally spaced probabilities (integrated on a fine grid)."""
    m = np.linspace(lo, hi, grid)
    density = 1.0 / ((m * m - mass * mass) ** 2 + (mass * width) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(m))])
    return np.interp(np.linspace(0.0, cdf[-1], size), cdf, m)


def power_law_masses(rng, n, lo, hi, power):
    """m from dN/dm ∝ m^(−k) on [lo, hi] (k > 1), by the inverse CDF."""
    e = 1.0 - power
    return (lo**e + rng.random(n) * (hi**e - lo**e)) ** (1.0 / e)


def boson_pts(rng, n, scale, power, pt_max):
    """pT from dN/dpT ∝ pT/(pT² + p₀²)^α below pt_max: peak at p₀/√(2α−1), tail ∝ pT^(1−2α)."""
    # CDF in s = pT²: 1 − (1 + s/p₀²)^(1−α); invert for u below the CDF at pt_max
    u_max = 1.0 - (1.0 + (pt_max / scale) ** 2) ** (1.0 - power)
    u = rng.random(n) * u_max
    return scale * np.sqrt((1.0 - u) ** (1.0 / (1.0 - power)) - 1.0)


def cos_theta_star(rng, n):
    """cos θ* from dN/dc ∝ 1 + c²: solves c³ + 3c = 8u − 4 (one real root, Cardano)."""
    d = 4.0 * rng.random(n) - 2.0  # half of 8u − 4
    r = np.sqrt(d * d + 1.0)
    return np.cbrt(d + r) + np.cbrt(d - r)


def decay_to_lab(m, pt, y, phi, cos_t, phi_star):
    """Two massless daughters (n, 2, 4) of bosons (m, pT, y, φ) decaying at (θ*, φ*) in the rest frame.

    With P the boson momentum, E its energy and p* the first daughter's rest-frame momentum
    (|p*| = m/2): E₁,₂ = E/2 ± P⃗·p⃗*/m and p⃗₁,₂ = ±p⃗* + P⃗ (½ ± P⃗·p⃗*/(m(E + m))).
    """
    mt = np.sqrt(m * m + pt * pt)
    e, px, py, pz = mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)
    half = 0.5 * m
    r = half * np.sqrt(1.0 - cos_t * cos_t)
    qx, qy, qz = r * np.cos(phi_star), r * np.sin(phi_star), half * cos_t
    k = (px * qx + py * qy + pz * qz) / (m * (e + m))
    out = np.empty((m.shape[0], 2, 4))
    for i, (sign, share) in enumerate(((1.0, 0.5 + k), (-1.0, 0.5 - k))):
        x, y_, z = sign * qx + px * share, sign * qy + py * share, sign * qz + pz * share
        out[:, i, 0] = np.sqrt(x * x + y_ * y_ + z * z)  # massless: E = |p|
        out[:, i, 1], out[:, i, 2], out[:, i, 3] = x, y_, z
    return out


# --------------------------------------------------------------------------- detector


def resolution(pt, a, b):
    """Relative resolution σ(pT)/pT = a ⊕ b·pT."""
    return np.hypot(a, b * pt) if b else np.full_like(pt, a)


def smear(p4_true, rng, a, b):
    """Each muon's pT scaled by its own 1 + σ_rel·N(0,1), σ_rel = a ⊕ b·pT; η, φ kept, E massless.

    At fixed η and φ a massless four-vector is proportional to pT, so the whole vector scales
    (E = |p| stays exact). Returns the measured four-vectors, the true and measured pT, and the
    scale factors (≤ 0 marks an unmeasurable muon, rejected by the acceptance).
    """
    pt = np.hypot(p4_true[..., 1], p4_true[..., 2])
    scale = 1.0 + resolution(pt, a, b) * rng.standard_normal(pt.shape)
    p4 = p4_true * np.abs(scale)[..., None]
    return p4, pt, pt * np.abs(scale), scale


# --------------------------------------------------------------------------- generator


class Zmumu(DatasetSource):
    """Toy Z→μμ vs γ*→μμ with per-muon pT smearing σ/pT = a ⊕ b·pT (the hybrid paper's task)."""

    name = "zmumu"
    Options = ZmumuOptions

    def generate(self, n_events, seed, progress=None):
        o = self.options
        n = o.n_events if n_events is None else int(n_events)
        n_sig = int(round(n * o.signal_fraction))
        if not 1 <= n_sig < n:
            raise DataError(f"zmumu: {n} events at signal_fraction {o.signal_fraction} leave a class empty")
        rng_mix, rng_sig, rng_bkg = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        label = np.zeros(n, np.int64)
        label[rng_mix.permutation(n)[:n_sig]] = 1
        slots = {"signal": np.flatnonzero(label == 1), "background": np.flatnonzero(label == 0)}
        out = _Output(n, progress)

        self._fill(rng_sig, "signal", slots["signal"], out)
        weight = np.ones(n)
        info = {}
        sig_var = out.variable(slots["signal"], o.reweight_variable)
        if o.reweight == "resample":
            info = self._resample_background(rng_bkg, slots["background"], sig_var, out)
        else:
            self._fill(rng_bkg, "background", slots["background"], out)
            if o.reweight == "weights":
                bkg_var = out.variable(slots["background"], o.reweight_variable)
                weight[slots["background"]], info = bin_weights(sig_var, bkg_var, o.reweight_bins)
        if not all_rows_unique(out.p4):
            raise SymfwError("zmumu: generated a duplicated event (a bug: the draws are continuous)")
        meta = {"source": "zmumu", "seed": int(seed)}
        for key, value in o.model_dump(exclude={"n_events"}).items():  # the options, as scalars a file keeps
            if key == "mass_window":
                value = f"{value[0]:g}-{value[1]:g}"
            meta[key] = "none" if value is None else value
        meta.update(info)
        return EventData(
            p4=out.p4, label=label, mask=np.ones((n, 2), bool), weight=weight, p4_true=out.p4_true,
            target=out.p4_true.sum(1), meta=meta,
        )

    # -- pieces ------------------------------------------------------------------------
    def _masses(self, rng, n, process):
        o = self.options
        lo, hi = o.mass_window
        if process == "signal":
            return breit_wigner_masses(rng, n, lo, hi, o.z_mass, o.z_width)
        return power_law_masses(rng, n, lo, hi, o.background_power)

    def _chunk(self, rng, n, process):
        """n truth events, smeared; the accepted ones as (measured, true), leading muon first."""
        o = self.options
        m = self._masses(rng, n, process)
        pt = boson_pts(rng, n, o.boson_pt_scale, o.boson_pt_power, o.boson_pt_max)
        y = rng.normal(0.0, o.rapidity_width, n)
        phi = rng.uniform(-math.pi, math.pi, n)
        cos_t = cos_theta_star(rng, n)
        phi_star = rng.uniform(0.0, 2 * math.pi, n)
        true = decay_to_lab(m, pt, y, phi, cos_t, phi_star)
        if o.eta_max is not None:  # smearing keeps η: cut first.  |η| < η_max ⇔ |pz| < |p⃗| tanh η_max
            true = true[(np.abs(true[..., 3]) < true[..., 0] * math.tanh(o.eta_max)).all(1)]
        meas, _, pt_meas, scale = smear(true, rng, o.resolution, o.resolution_slope)
        keep = (scale > 0).all(1)
        if o.pt_min is not None:
            keep &= (pt_meas > o.pt_min).all(1)
        meas, true = meas[keep], true[keep]
        swap = (pt_meas[keep, 1] > pt_meas[keep, 0])[:, None, None]
        return np.where(swap, meas[:, ::-1], meas), np.where(swap, true[:, ::-1], true)

    def _stream(self, rng, process, n):
        """Chunks of accepted events, sized from the acceptance seen so far, until n are made."""
        have = drawn = 0
        while have < n:
            eff = have / drawn if have else 0.5
            ask = min(CHUNK, max(1024, int((n - have) / max(eff, 1e-3) * 1.05) + 16))
            meas, true = self._chunk(rng, ask, process)
            drawn += ask
            have += len(meas)
            if drawn > 50 * n + 10 * CHUNK:
                raise DataError(
                    f"zmumu: only {have} of {drawn} {process} events pass the acceptance; loosen eta_max/pt_min"
                )
            yield meas, true

    def _fill(self, rng, process, slots, out):
        """Write exactly len(slots) accepted events of ``process`` into ``slots``."""
        done = 0
        for meas, true in self._stream(rng, process, len(slots)):
            k = min(len(meas), len(slots) - done)
            out.write(slots[done : done + k], meas[:k], true[:k])
            done += k

    def _resample_background(self, rng, slots, sig_var, out, max_pool=50):
        """Background events accepted with probability w/w_max, w the bin weights of the pool.

        The pool grows until enough pass; each pool event keeps its one uniform draw, so the
        accepted events follow the signal spectrum and none is repeated.
        """
        o = self.options
        n = len(slots)
        pool_meas, pool_true, pool_u, size = [], [], [], n
        while True:
            for meas, true in self._stream(rng, "background", size):
                pool_meas.append(meas)
                pool_true.append(true)
                pool_u.append(rng.random(len(meas)))
            meas = np.concatenate(pool_meas)
            w, info = bin_weights(sig_var, reweight_variable(meas, o.reweight_variable), o.reweight_bins)
            accept = np.concatenate(pool_u) * w.max() < w
            n_acc = int(accept.sum())
            if n_acc >= n:
                idx = np.flatnonzero(accept)[:n]
                out.write(slots, meas[idx], np.concatenate(pool_true)[idx])
                return {**info, "resample_pool": len(meas)}
            if len(meas) >= max_pool * n:
                raise DataError(
                    f"zmumu: resampling accepts only {n_acc} of {len(meas)} background events; "
                    "use reweight='weights' or fewer reweight_bins"
                )
            size = max(1024, int((n - n_acc) / max(n_acc / len(meas), 1.0 / max_pool) * 1.1))


class _Output:
    """The event arrays, filled slot by slot, reporting ``progress(done, total)``."""

    def __init__(self, n, progress):
        self.p4 = np.empty((n, 2, 4))
        self.p4_true = np.empty((n, 2, 4))
        self.progress, self.done, self.total = progress, 0, n

    def write(self, slots, meas, true):
        self.p4[slots] = meas
        self.p4_true[slots] = true
        self.done += len(slots)
        if self.progress is not None:
            self.progress(self.done, self.total)

    def variable(self, slots, name):
        return reweight_variable(self.p4[slots], name)


def reweight_variable(p4, variable):
    """Leading-muon pT (muons are ordered) or the dimuon pT, from (n, 2, 4) four-vectors."""
    if variable == "leading-pt":
        return np.hypot(p4[:, 0, 1], p4[:, 0, 2])
    total = p4.sum(1)
    return np.hypot(total[:, 1], total[:, 2])


def bin_weights(target, values, n_bins):
    """Weights making ``values`` follow the spectrum of ``target`` in bins, mean weight 1.

    The bins hold equal shares of ``target`` (the outer ones open-ended), so every bin is
    populated however long the tail. Values in a bin with no target events get weight 0.
    """
    n_bins = max(1, min(n_bins, len(target)))
    edges = np.quantile(target, np.linspace(0, 1, n_bins + 1)[1:-1])
    t_bin = np.searchsorted(edges, target, side="right")
    v_bin = np.searchsorted(edges, values, side="right")
    t_frac = np.bincount(t_bin, minlength=n_bins) / len(target)
    v_count = np.bincount(v_bin, minlength=n_bins)
    ratio = np.divide(t_frac * len(values), v_count, out=np.zeros(n_bins), where=v_count > 0)
    w = ratio[v_bin]
    unmatched = float(t_frac[v_count == 0].sum())
    w *= len(values) / w.sum()
    return w, {"reweight_unmatched_fraction": unmatched}


def all_rows_unique(p4):
    """True when no two events are identical (checked on one continuous column, then in full)."""
    col = np.sort(p4[:, 0, 1])
    if (np.diff(col) != 0).all():
        return True
    return len(np.unique(p4.reshape(len(p4), -1), axis=0)) == len(p4)


@hookimpl
def register_datasets(register):
    register(Zmumu)
