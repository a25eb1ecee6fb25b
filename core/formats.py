"""Event files of every format as one kind of object: a :class:`Reader` of symfw's arrays.

A file format is a plugin (:class:`~symfw.core.interfaces.FileFormat`, registered through the
``register_formats`` hook): it recognises its files (:meth:`~symfw.core.interfaces.FileFormat.sniff`)
and opens them as a :class:`Reader`, which names the arrays of symfw's layout (``p4``, ``label``,
``mask``, ``weight``, ``p4_true``, ``target``; docs/data.md) with their shapes and dtypes and
reads them by row ranges, so that a file larger than memory can be read in chunks. Checking the
values is not the reader's business: :func:`symfw.core.data.scan` does it, for every format alike.

- :func:`choose_format`: the format of a file, by content and extension, or the one named;
- :func:`open_reader`: a reader of one file or of several (a glob), concatenated;
- :class:`FileArray` and its kinds: one array of a file, read by row ranges or by sorted rows —
  :class:`ContiguousArray` (stored uncompressed at a byte offset: an uncompressed HDF5 dataset,
  an ``np.savez`` member), read with ``pread`` exactly the rows asked for; :class:`H5Array`
  (chunked or compressed HDF5) and :class:`ZipMemberArray` (a compressed ``.npz`` member), read
  in blocks; :class:`MemoryArray` (arrays already in memory);
- :func:`npz_arrays`, :func:`hdf5_arrays`: the arrays of an ``.npz`` or HDF5 file, lazily.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import struct
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UnknownComponentError, UsageError

GLOB_CHARS = "*?["
TAKE_BLOCK = 8192  # rows per read when a reader picks sorted rows out of row ranges
Columns = dict[str, tuple[tuple[int, ...], np.dtype]]


# --------------------------------------------------------------------------- arrays of a file


class FileArray:
    """One array of a file (C order): ``shape``, ``dtype``, rows read by range or by sorted index."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted, unique): the spans of each block of :data:`TAKE_BLOCK` rows."""
        return take_by_spans(self.read, rows)

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0]) if self.shape else self.read(0, 0)

    def close(self) -> None:
        pass


def take_by_spans(read, rows: np.ndarray):
    """``read(lo, hi)`` of the span of each block of sorted ``rows``, then the rows picked out:
    at most :data:`TAKE_BLOCK` rows in memory at once besides the result."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return read(0, 0)
    cuts = np.flatnonzero(np.diff(rows // TAKE_BLOCK)) + 1
    parts = []
    for part in np.split(rows, cuts):
        lo = int(part[0])
        got = read(lo, int(part[-1]) + 1)
        parts.append({k: v[part - lo] for k, v in got.items()} if isinstance(got, dict) else got[part - lo])
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


class MemoryArray(FileArray):
    """An array already in memory."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array)
        self.shape, self.dtype = self.array.shape, self.array.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop] if self.array.ndim else self.array

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


class ContiguousArray(FileArray):
    """An array stored uncompressed, C-ordered, at byte ``offset`` of ``path``: each run of
    consecutive rows is one ``pread`` straight into the result (no block is read around it)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset, self.shape, self.dtype = Path(path), int(offset), tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _fill(self, out: np.ndarray, first_row: int) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos, done = self.offset + first_row * self.row_bytes, 0
        while done < len(view):
            got = os.preadv(self._file(), [view[done:]], pos + done)
            if got <= 0:
                raise DataError(f"{self.path}: the file ends before its data (truncated?)")
            done += got

    def read(self, start: int, stop: int) -> np.ndarray:
        if not self.shape:
            out = np.empty((), self.dtype)
            self._fill(out, 0)
            return out
        stop = min(stop, self.shape[0])
        out = np.empty((max(0, stop - start), *self.shape[1:]), self.dtype)
        if out.size:
            self._fill(out, start)
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if len(rows) == 0 or out.size == 0:
            return out
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(rows)]])
        for s, e in zip(starts.tolist(), ends.tolist()):
            self._fill(out[s:e], int(rows[s]))
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class H5Array(FileArray):
    """An HDF5 dataset stored in chunks (or compressed): rows read through h5py, block by block."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.shape, self.dtype = tuple(dataset.shape), dataset.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.dataset[start:stop] if self.shape else self.dataset[()]


class ZipMemberArray(FileArray):
    """A compressed ``.npz`` member: decompressed as a stream, forwards (reading backwards
    starts the stream again), so rows are best read in increasing order."""

    def __init__(self, archive: zipfile.ZipFile, member: str, header_end: int, shape, dtype):
        self.archive, self.member, self.header_end = archive, member, header_end
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._stream = None

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0]) if self.shape else 1
        pos = self.header_end + start * self.row_bytes
        if self._stream is None or self._stream.tell() > pos:
            if self._stream is not None:
                self._stream.close()
            self._stream = self.archive.open(self.member)
        self._stream.seek(pos)
        count = max(0, stop - start) * self.row_bytes if self.shape else self.dtype.itemsize
        data = self._stream.read(count)
        if len(data) != count:
            raise DataError(f"{self.archive.filename}: member {self.member} ends before its data (truncated?)")
        return np.frombuffer(data, dtype=self.dtype).reshape((-1, *self.shape[1:]) if self.shape else ()).copy()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def npz_arrays(path: Path, names: Iterable[str] | None = None) -> tuple[dict[str, FileArray], zipfile.ZipFile]:
    """The arrays of an ``.npz`` archive (``np.savez`` or ``np.savez_compressed``), read lazily:
    stored members as :class:`ContiguousArray`, compressed ones as :class:`ZipMemberArray`;
    0-d members (strings such as ``meta``) in memory. Only ``names`` when given. The archive is
    returned to be closed by the caller."""
    archive = zipfile.ZipFile(path)
    wanted = None if names is None else set(names)
    out: dict[str, FileArray] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or (wanted is not None and name not in wanted):
            continue
        with archive.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            header = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            shape, fortran, dtype = header(fh) if header is not None else ((), False, np.dtype(np.uint8))
            header_end = fh.tell()
        if dtype.hasobject:
            raise DataError(f"{path}: {name}: an object array (pickled Python objects), which symfw does not load")
        if not shape or fortran or header is None:
            with archive.open(info) as fh:
                out[name] = MemoryArray(np.lib.format.read_array(fh, allow_pickle=False))
        elif info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as raw:  # the member's data start after its local header
                raw.seek(info.header_offset)
                local = raw.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len + header_end
            out[name] = ContiguousArray(path, start, shape, dtype)
        else:
            out[name] = ZipMemberArray(archive, info.filename, header_end, shape, dtype)
    return out, archive


def hdf5_arrays(h5file, names: Iterable[str]) -> dict[str, FileArray]:
    """The datasets ``names`` of an open h5py file that it has: uncompressed contiguous numeric
    ones as :class:`ContiguousArray`, the rest as :class:`H5Array`."""
    out: dict[str, FileArray] = {}
    for name in names:
        if name not in h5file:
            continue
        dset = h5file[name]
        if not hasattr(dset, "shape"):  # a group
            continue
        offset = dset.id.get_offset() if dset.chunks is None and dset.compression is None else None
        if offset is not None and dset.dtype.kind in "biuf" and dset.shape and not dset.dtype.byteorder == ">":
            out[name] = ContiguousArray(Path(h5file.filename), offset, dset.shape, dset.dtype)
        else:
            out[name] = H5Array(dset)
    return out


# --------------------------------------------------------------------------- readers


class Reader:
    """The arrays of symfw's layout in one file (or several), read by row ranges.

    ``columns`` maps each array the file has (``p4`` and ``label`` always, optionally ``mask``,
    ``weight``, ``p4_true``, ``target``) to the (shape, dtype) it reads as. :meth:`read` returns
    rows ``start`` … ``stop`` − 1 of the arrays ``names`` (all by default); :meth:`take` sorted,
    unique rows. ``classes`` names the label values 0, 1, … when the format knows them (JetClass's
    ``label_*`` branches): the classes present are then renumbered 0 … C−1 in that order.
    ``meta`` is the file's metadata (scalars).
    """

    columns: Columns
    classes: tuple[str, ...] | None = None
    meta: dict[str, Any]

    @property
    def n_events(self) -> int:
        for key in ("p4", "label"):
            if key in self.columns and self.columns[key][0]:
                return int(self.columns[key][0][0])
        return 0

    @property
    def n_particles(self) -> int:
        shape = self.columns.get("p4", ((0, 0),))[0]
        return int(shape[1]) if len(shape) > 1 else 0

    def read(self, start: int, stop: int, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def take(self, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return take_by_spans(lambda lo, hi: self.read(lo, hi, names), rows)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ArrayReader(Reader):
    """A reader whose arrays are :class:`FileArray` objects named as symfw's (symfw's own layout)."""

    def __init__(self, arrays: dict[str, FileArray], meta: dict[str, Any] | None = None, closing=()):
        self.arrays, self.meta, self._closing = arrays, dict(meta or {}), list(closing)
        self.columns = {k: (a.shape, a.dtype) for k, a in arrays.items()}

    def _names(self, names):
        return [k for k in (names if names is not None else self.arrays) if k in self.arrays]

    def read(self, start, stop, names=None):
        return {k: self.arrays[k].read(start, stop) for k in self._names(names)}

    def take(self, rows, names=None):
        return {k: self.arrays[k].take(rows) for k in self._names(names)}

    def close(self) -> None:
        for a in self.arrays.values():
            a.close()
        for c in self._closing:
            c.close()


def arrays_reader(arrays: dict[str, Any]) -> ArrayReader:
    """A reader of arrays in memory (``meta`` taken as the metadata)."""
    return ArrayReader({k: MemoryArray(v) for k, v in arrays.items() if k != "meta" and v is not None},
                       meta=arrays.get("meta"))


ROW_ARRAYS = ("p4", "mask", "p4_true")  # (n, N, ...) arrays: padded to the widest file when files are joined


class ConcatReader(Reader):
    """Several files of one format as one: rows in file order, particles padded to the widest file,
    class names (when the format has them) joined in order of appearance."""

    def __init__(self, readers: Sequence[Reader], paths: Sequence[Path]):
        self.readers, self.paths = list(readers), list(paths)
        first = self.readers[0]
        for path, r in zip(self.paths[1:], self.readers[1:]):
            if set(r.columns) != set(first.columns):
                raise DataError(f"{path}: holds the arrays {', '.join(sorted(r.columns))}, but {self.paths[0]} "
                                f"holds {', '.join(sorted(first.columns))}; files read together must match")
        self.counts = [r.n_events for r in self.readers]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        width = max(r.n_particles for r in self.readers)
        self.columns = {}
        for k, (shape, dtype) in first.columns.items():
            dtypes = [r.columns[k][1] for r in self.readers]
            shape = (int(self.starts[-1]), *((width,) if k in ROW_ARRAYS else shape[1:2]), *shape[2:])
            self.columns[k] = (shape, np.result_type(*dtypes))
        self.classes = None
        self._remap: list[np.ndarray | None] = [None] * len(self.readers)
        if all(r.classes is not None for r in self.readers):
            names: list[str] = []
            for r in self.readers:
                names += [c for c in r.classes if c not in names]
            self.classes = tuple(names)
            self._remap = [np.array([names.index(c) for c in r.classes], dtype=np.int64) for r in self.readers]
        self.meta = {**first.meta, "files": len(self.readers)}

    def _pad(self, i: int, got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k, v in got.items():
            if k in ROW_ARRAYS and v.shape[1] < self.n_particles:
                pad = [(0, 0), (0, self.n_particles - v.shape[1])] + [(0, 0)] * (v.ndim - 2)
                v = np.pad(v, pad)
            if k == "label" and self._remap[i] is not None:
                v = self._remap[i][np.asarray(v, dtype=np.int64)]
            out[k] = v.astype(self.columns[k][1], copy=False)
        return out

    def _join(self, parts: list[dict[str, np.ndarray]], names) -> dict[str, np.ndarray]:
        if not parts:
            return self._pad(0, self.readers[0].read(0, 0, names))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def read(self, start, stop, names=None):
        parts = []
        for i, r in enumerate(self.readers):
            lo, hi = max(start, self.starts[i]), min(stop, self.starts[i + 1])
            if lo < hi:
                parts.append(self._pad(i, r.read(int(lo - self.starts[i]), int(hi - self.starts[i]), names)))
        return self._join(parts, names)

    def take(self, rows, names=None):
        rows = np.asarray(rows, dtype=np.int64)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        parts = []
        for i in np.unique(which).tolist():
            local = rows[which == i] - self.starts[i]
            parts.append(self._pad(i, self.readers[i].take(local, names)))
        return self._join(parts, names)

    def close(self) -> None:
        for r in self.readers:
            r.close()


# --------------------------------------------------------------------------- choosing and opening


def expand(source: str | Path) -> list[Path]:
    """The files of ``source``: one path, or the sorted matches of a glob (``data/*.root``)."""
    text = str(source)
    if any(c in text for c in GLOB_CHARS):
        paths = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise DataError(f"{text}: no files match")
        return paths
    return [Path(os.path.expanduser(text))]


def known_extensions(registry) -> list[str]:
    return sorted({e for name in registry.names("format") for e in registry.get("format", name).extensions})


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")


def _sniffs(cls, path: Path) -> bool:
    try:
        return bool(cls(cls.Options()).sniff(path))
    except Exception:  # noqa: BLE001 - a file a format cannot even look at is not of that format
        return False


def choose_format(path: Path, registry, name: str | None = None):
    """The format class reading ``path``: ``name`` when given, else the first format (by name)
    whose extensions include the file's and which recognises its content, then any format that
    recognises the content, then the fallback format of the extension."""
    _check_file(path)
    if name is not None:
        try:
            return registry.get("format", name)
        except UnknownComponentError as exc:
            raise UsageError(f"--format: {exc}") from None
    classes = [registry.get("format", n) for n in registry.names("format")]
    suffix = path.suffix.lower()
    by_ext = [c for c in classes if suffix in c.extensions]
    for cls in [c for c in by_ext if not c.fallback] + [c for c in classes if c not in by_ext]:
        if _sniffs(cls, path):
            return cls
    for cls in by_ext:
        if cls.fallback:
            return cls
    exts = known_extensions(registry)
    raise DataError(f"{path}: unknown file type '{path.suffix}'; use {', '.join(exts[:-1])} or {exts[-1]} "
                    f"(or name a format with --format: {', '.join(registry.names('format'))})")


def check_requirements(cls, path: Path) -> None:
    """A one-line :class:`DataError` naming the extra to install when a module the format needs is missing."""
    missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
    if missing:
        extra = f"pip install 'symfw[{cls.extra}]'" if cls.extra else f"pip install {' '.join(missing)}"
        raise DataError(f"{path}: reading {cls.label or cls.name} files needs {' and '.join(missing)}: {extra}")


def open_file(path: Path, cls) -> Reader:
    """``cls`` opening ``path``; an unexpected failure is one line naming the file and the format."""
    check_requirements(cls, path)
    try:
        return cls(cls.Options()).open(path)
    except (DataError, UsageError):
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable or corrupt file
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: cannot read as {cls.label or cls.name}: {type(exc).__name__}: {reason}") from None


def open_reader(source: str | Path, format: str | None = None, registry=None) -> tuple[Reader, str]:
    """A reader of ``source`` (one file or a glob's files, all of one format) and the format's name."""
    from .registry import get_registry

    registry = registry or get_registry()
    paths = expand(source)
    classes = [choose_format(p, registry, format) for p in paths]
    if len({c.name for c in classes}) > 1:
        kinds = ", ".join(f"{p.name}: {c.name}" for p, c in list(zip(paths, classes))[:4])
        raise DataError(f"{source}: the files are of different formats ({kinds}); read one format at a time")
    readers: list[Reader] = []
    try:
        for path in paths:
            readers.append(open_file(path, classes[0]))
        reader = readers[0] if len(readers) == 1 else ConcatReader(readers, paths)
    except BaseException:
        for r in readers:
            r.close()
        raise
    return reader, classes[0].name


__all__ = [
    "ArrayReader", "ConcatReader", "ContiguousArray", "FileArray", "H5Array", "MemoryArray", "Reader",
    "ZipMemberArray", "arrays_reader", "check_requirements", "choose_format", "expand", "hdf5_arrays",
    "known_extensions", "npz_arrays", "open_file", "open_reader", "take_by_spans",
]
