"""energyflow's quark/gluon jets (Komiske, Metodiev, Thaler: ``energyflow.qg_jets``): ``.npz``
files with

    X   (n_jets, M, 4)   per particle (pT [GeV], rapidity y, azimuth φ, PDG id), zero padded
    y   (n_jets,)        1 = quark jet, 0 = gluon jet

→ ``p4`` with each particle's mass m taken from its PDG id (:data:`MASSES`, GeV; photons 0):

    m_T = √(pT² + m²),   E = m_T cosh y,   px = pT cos φ,   py = pT sin φ,   pz = m_T sinh y

(exact for the rapidity y; a massless particle has m_T = pT), ``mask`` true where any of the
four columns is non-zero, ``label`` = y. An unknown PDG id is refused, naming it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from symfw.core.errors import DataError
from symfw.core.formats import Reader, npz_arrays
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import FileFormat

# |PDG id| -> mass in GeV (PDG 2022): the particles energyflow's jets hold
MASSES = {
    22: 0.0,  # photon
    11: 0.000511,  # electron
    13: 0.105658,  # muon
    211: 0.139570,  # charged pion
    321: 0.493677,  # charged kaon
    130: 0.497611,  # K0 long
    310: 0.497611,  # K0 short
    2112: 0.939565,  # neutron
    2212: 0.938272,  # proton
    3122: 1.115683,  # Lambda
    3112: 1.197449,  # Sigma-
    3222: 1.189370,  # Sigma+
    3312: 1.321710,  # Xi-
    3322: 1.314860,  # Xi0
    3334: 1.672450,  # Omega-
}
_IDS = np.array(sorted(MASSES))
_MASS = np.array([MASSES[i] for i in _IDS])


def p4_from_ptyphipid(x: np.ndarray) -> np.ndarray:
    """(…, 4) four-vectors (E, px, py, pz) of (pT, y, φ, PDG id) rows (padding rows all zero stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    pt, y, phi, pid = np.moveaxis(x, -1, 0)
    ids = np.abs(np.rint(pid)).astype(np.int64)
    where = np.clip(np.searchsorted(_IDS, ids), 0, len(_IDS) - 1)
    mass = np.where(_IDS[where] == ids, _MASS[where], 0.0)
    mt = np.sqrt(pt**2 + mass**2)
    return np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], -1)


class EnergyflowReader(Reader):
    """Rows of X (pT, y, φ, PID) and y."""

    def __init__(self, path: Path):
        arrays, self.archive = npz_arrays(path, ("X", "y"))
        try:
            for key in ("X", "y"):
                if key not in arrays:
                    raise DataError(f"{path}: energyflow npz: missing array '{key}' (found: "
                                    f"{', '.join(sorted(arrays)) or 'nothing'})")
            self.x, self.y = arrays["X"], arrays["y"]
            shape = self.x.shape
            if len(shape) != 3 or shape[-1] != 4:
                raise DataError(f"{path}: energyflow npz: X: expected shape (n_jets, n_particles, 4) holding "
                                f"(pT, y, φ, PDG id), got {shape}")
            if self.x.dtype.kind not in "fiu":
                raise DataError(f"{path}: energyflow npz: X: expected numbers, got dtype {self.x.dtype}")
        except BaseException:
            self.archive.close()
            raise
        self.path = path
        self.columns = {"p4": (shape, np.dtype(np.float64)), "mask": (shape[:2], np.dtype(bool)),
                        "label": (self.y.shape, self.y.dtype)}
        self.meta = {}

    def read(self, start, stop, names=None):
        x = np.asarray(self.x.read(start, stop), dtype=np.float64)
        mask = (x != 0).any(-1)
        real = x[mask]
        unknown = np.setdiff1d(np.unique(np.abs(np.rint(real[:, 3])).astype(np.int64)), _IDS)
        if len(unknown):
            jet = start + int(np.argwhere(mask & np.isin(np.abs(np.rint(x[..., 3])), unknown))[0, 0])
            raise DataError(f"{self.path}: energyflow npz: X: unknown PDG id {int(unknown[0])} (first in jet {jet}); "
                            f"known: {', '.join(str(i) for i in _IDS)}")
        if (real[:, 0] <= 0).any():
            jet = start + int(np.argwhere(mask & (x[..., 0] <= 0))[0, 0])
            raise DataError(f"{self.path}: energyflow npz: X: a particle with pT <= 0 (first in jet {jet})")
        return {"p4": p4_from_ptyphipid(x), "mask": mask, "label": self.y.read(start, stop)}

    def close(self) -> None:
        self.x.close()
        self.archive.close()


class Energyflow(FileFormat):
    """energyflow's quark/gluon jets (.npz): X = (pT, y, φ, PDG id) per particle, zero padded; y."""

    name = "energyflow"
    label = "energyflow npz"
    extensions = (".npz",)

    def sniff(self, path: Path) -> bool:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        return {"X.npy", "y.npy"} <= names and "p4.npy" not in names

    def open(self, path: Path) -> EnergyflowReader:
        return EnergyflowReader(path)


@hookimpl
def register_formats(register):
    register(Energyflow)
