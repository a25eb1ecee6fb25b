"""The Top Tagging Landscape reference dataset (Kasieczka et al. 2019): HDF5 files written by
pandas (``key="table"``), one jet per row, columns

    E_0, PX_0, PY_0, PZ_0, E_1, …, PZ_199    constituents (E, px, py, pz) in GeV, leading-pT first, zero padded
    is_signal_new                            1 = top jet, 0 = QCD jet

→ ``p4`` (n, 200, 4) with (E, px, py, pz) = (E_i, PX_i, PY_i, PZ_i), ``mask`` true where any of
the four is non-zero, ``label`` = is_signal_new. The other columns (truthE … truthPZ, the top
quark; ``ttv``, the file's part) are not read. Rows are read with pandas (``tables`` for the
HDF5), ``chunk`` rows at a time, so a file larger than memory streams.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from symfw.core.errors import DataError
from symfw.core.formats import Reader
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import FileFormat

LABEL = "is_signal_new"
COMPONENTS = ("E", "PX", "PY", "PZ")


class TopTaggingReader(Reader):
    """Rows of a pandas table with E_i, PX_i, PY_i, PZ_i and is_signal_new columns."""

    def __init__(self, path: Path):
        import pandas as pd

        self.path = path
        self.store = pd.HDFStore(path, mode="r")
        try:
            keys = [k.lstrip("/") for k in self.store.keys()]
            if not keys:
                raise DataError(f"{path}: Top Tagging HDF5: no pandas table in the file")
            self.key = "table" if "table" in keys else keys[0]
            if len(keys) > 1 and "table" not in keys:
                raise DataError(f"{path}: Top Tagging HDF5: several tables ({', '.join(keys)}) and none named 'table'")
            head = self.store.select(self.key, start=0, stop=1)
            columns = [str(c) for c in head.columns]
            indices = sorted(int(m.group(1)) for c in columns if (m := re.fullmatch(r"E_(\d+)", c)))
            if not indices:
                raise DataError(f"{path}: Top Tagging HDF5: no constituent columns E_0, PX_0, PY_0, PZ_0, … "
                                f"(found: {', '.join(columns[:8])}{', …' if len(columns) > 8 else ''})")
            n_part = len(indices)
            self.names = [f"{c}_{i}" for i in range(n_part) for c in COMPONENTS]
            missing = [c for c in (*self.names, LABEL) if c not in columns]
            if missing:
                raise DataError(f"{path}: Top Tagging HDF5: no column '{missing[0]}' "
                                f"({len(missing)} of the {4 * n_part} constituent columns and {LABEL} missing)"
                                if missing[0] != LABEL else f"{path}: Top Tagging HDF5: no column '{LABEL}' (the labels)")
            storer = self.store.get_storer(self.key)
            n = int(storer.nrows if storer.nrows is not None else storer.shape[0])  # a table, or a fixed frame
            dtype = np.result_type(*[head[c].dtype for c in self.names])
            self.columns = {"p4": ((n, n_part, 4), dtype), "mask": ((n, n_part), np.dtype(bool)),
                            "label": ((n,), head[LABEL].dtype)}
            self.meta = {}
        except BaseException:
            self.store.close()
            raise

    def read(self, start, stop, names=None):
        frame = self.store.select(self.key, start=start, stop=stop, columns=None)
        p4 = frame[self.names].to_numpy().reshape(len(frame), -1, 4)
        return {"p4": p4, "mask": (p4 != 0).any(-1), "label": frame[LABEL].to_numpy()}

    def close(self) -> None:
        self.store.close()


class TopTagging(FileFormat):
    """Top Tagging Landscape HDF5: a pandas table E_0 … PZ_199 (zero padded) and is_signal_new."""

    name = "top-tagging"
    label = "Top Tagging HDF5"
    extensions = (".h5", ".hdf5")
    requires = ("pandas", "tables")
    extra = "formats"

    def sniff(self, path: Path) -> bool:
        import h5py

        with h5py.File(path, "r") as f:  # pandas marks its groups with a pandas_type attribute
            return any("pandas_type" in f[k].attrs for k in f.keys())

    def open(self, path: Path) -> TopTaggingReader:
        return TopTaggingReader(path)


@hookimpl
def register_formats(register):
    register(TopTagging)
