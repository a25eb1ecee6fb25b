"""PELICAN's HDF5 files (Bogatskiy et al.): one jet per row of

    Pmu        (n, N, 4)   constituents (E, px, py, pz) in GeV, zero padded
    Nobj       (n,)        the number of constituents of each jet
    is_signal  (n,)        1 = signal, 0 = background (or (n, C) one-hot for C classes)
    truth_Pmu  (n, 4)      optional: the truth four-momentum (the top quark's), a regression target

→ ``p4`` = Pmu, ``mask`` = the first Nobj entries of each jet, ``label`` = is_signal (the index
of the set column when one-hot), ``target`` = truth_Pmu. Other keys (jet_pt, …) are not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from symfw.core.errors import DataError
from symfw.core.formats import Reader, hdf5_arrays
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import FileFormat

KEYS = ("Pmu", "Nobj", "is_signal", "truth_Pmu")


class PelicanReader(Reader):
    """Rows of Pmu, Nobj, is_signal and truth_Pmu."""

    def __init__(self, path: Path):
        import h5py

        self.path = path
        self.file = h5py.File(path, "r")
        try:
            self.arrays = hdf5_arrays(self.file, KEYS)
            for key in KEYS[:3]:
                if key not in self.arrays:
                    raise DataError(f"{path}: PELICAN HDF5: missing dataset '{key}' (found: "
                                    f"{', '.join(sorted(self.file.keys())) or 'nothing'})")
            shape = self.arrays["Pmu"].shape
            if len(shape) != 3 or shape[-1] != 4:
                raise DataError(f"{path}: PELICAN HDF5: Pmu: expected shape (n_jets, n_particles, 4), got {shape}")
            n = shape[0]
            for key, want in (("Nobj", (n,)), ("is_signal", (n,))):
                got = self.arrays[key].shape
                if got[:1] != want or (key == "Nobj" and len(got) != 1) or len(got) > 2:
                    raise DataError(f"{path}: PELICAN HDF5: {key}: expected shape ({n},)"
                                    f"{' or (n, C) one-hot' if key == 'is_signal' else ''}, got {got}")
            self.onehot = len(self.arrays["is_signal"].shape) == 2
            self.columns = {"p4": (shape, self.arrays["Pmu"].dtype), "mask": (shape[:2], np.dtype(bool)),
                            "label": ((n,), np.dtype(np.int64) if self.onehot else self.arrays["is_signal"].dtype)}
            if "truth_Pmu" in self.arrays:
                got = self.arrays["truth_Pmu"].shape
                if got != (n, 4):
                    raise DataError(f"{path}: PELICAN HDF5: truth_Pmu: expected shape ({n}, 4) (one target "
                                    f"four-momentum per jet), got {got}")
                self.columns["target"] = ((n, 4), self.arrays["truth_Pmu"].dtype)
        except BaseException:
            self.file.close()
            raise
        self.meta = {}

    def read(self, start, stop, names=None):
        nobj = np.asarray(self.arrays["Nobj"].read(start, stop))
        width = self.n_particles
        bad = (nobj < 0) | (nobj > width) | (nobj != np.rint(nobj))
        if bad.any():
            raise DataError(f"{self.path}: PELICAN HDF5: Nobj: jet {start + int(bad.argmax())} has "
                            f"{nobj[bad.argmax()]} constituents; expected a whole number from 0 to {width}")
        label = np.asarray(self.arrays["is_signal"].read(start, stop))
        if self.onehot:
            set_ = label != 0
            wrong = set_.sum(1) != 1
            if wrong.any():
                raise DataError(f"{self.path}: PELICAN HDF5: is_signal: jet {start + int(wrong.argmax())} is one-hot "
                                f"with {int(set_[wrong.argmax()].sum())} classes set (expected exactly one)")
            label = set_.argmax(1)
        out = {"p4": self.arrays["Pmu"].read(start, stop), "mask": np.arange(width)[None, :] < nobj[:, None],
               "label": label}
        if "target" in self.columns:
            out["target"] = self.arrays["truth_Pmu"].read(start, stop)
        return out

    def close(self) -> None:
        for a in self.arrays.values():
            a.close()
        self.file.close()


class Pelican(FileFormat):
    """PELICAN's HDF5: Pmu (n, N, 4), Nobj, is_signal, and truth_Pmu as a regression target."""

    name = "pelican"
    label = "PELICAN HDF5"
    extensions = (".h5", ".hdf5")

    def sniff(self, path: Path) -> bool:
        import h5py

        with h5py.File(path, "r") as f:
            return "Pmu" in f and "p4" not in f

    def open(self, path: Path) -> PelicanReader:
        return PelicanReader(path)


@hookimpl
def register_formats(register):
    register(Pelican)
