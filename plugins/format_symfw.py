"""symfw's own layout (docs/data.md): arrays named p4, label and optionally mask, weight,
p4_true, target, in an ``.npz`` archive or an HDF5 file; ``meta`` a JSON string (npz) or the
file's attributes (HDF5).

Uncompressed arrays (what ``save_events`` and ``symfw data convert`` write) are read with
``pread`` straight from their byte offset, only the rows asked for, so a streamed file costs
no more than the events it serves; compressed or chunked ones are read in blocks.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from symfw.core.data import ARRAYS, _scalar
from symfw.core.errors import DataError
from symfw.core.formats import ArrayReader, hdf5_arrays, npz_arrays
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import FileFormat

HDF5_SUFFIXES = (".h5", ".hdf5")


def _npz_names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return {n.removesuffix(".npy") for n in archive.namelist()}


def _h5_names(path: Path) -> set[str]:
    import h5py

    with h5py.File(path, "r") as f:
        return set(f.keys())


class SymfwLayout(FileFormat):
    """symfw's own layout: p4, label and optional mask, weight, p4_true, target (.npz or HDF5)."""

    name = "symfw"
    label = "symfw"
    extensions = (".npz", ".h5", ".hdf5")
    fallback = True

    def sniff(self, path: Path) -> bool:
        names = _npz_names(path) if zipfile.is_zipfile(path) else _h5_names(path)
        return {"p4", "label"} <= names

    def open(self, path: Path) -> ArrayReader:
        suffix = path.suffix.lower()
        kind = suffix[1:] if suffix in (".npz", *HDF5_SUFFIXES) else "symfw"
        try:
            return self._open(path, suffix, kind)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable or corrupt file
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"{path}: cannot read as {kind}: {type(exc).__name__}: {reason}") from None

    def _open(self, path: Path, suffix: str, kind: str) -> ArrayReader:
        import h5py

        if zipfile.is_zipfile(path):
            arrays, archive = npz_arrays(path, (*ARRAYS, "meta"))
            meta_member = arrays.pop("meta", None)
            meta = None
            if meta_member is not None:
                try:
                    meta = json.loads(str(meta_member.read_all()[()]))
                except json.JSONDecodeError:
                    archive.close()
                    raise DataError(f"{path}: meta: not valid JSON") from None
            return ArrayReader(arrays, meta, closing=[archive])
        if suffix == ".npz":
            raise DataError(f"{path}: cannot read as npz: not a zip archive")
        if not h5py.is_hdf5(path):
            what = "not an HDF5 file" if suffix in HDF5_SUFFIXES else "neither an npz archive nor an HDF5 file"
            raise DataError(f"{path}: cannot read as {kind}: {what}")
        f = h5py.File(path, "r")
        meta = {k: _scalar(v) for k, v in f.attrs.items()}
        return ArrayReader(hdf5_arrays(f, ARRAYS), meta, closing=[f])


@hookimpl
def register_formats(register):
    register(SymfwLayout)
