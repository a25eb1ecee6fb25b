"""Event data in memory, the file format users give symfw, validation, and seeded splits.

File format (``.npz`` or HDF5 ``.h5``/``.hdf5``), documented in docs/data.md:

- ``p4``     (n_events, n_particles, 4) float, (E, px, py, pz) in GeV
- ``label``  (n_events,) integer or bool class indices 0 … C−1 (C ≥ 2); binary: 1 = signal, 0 = background
- ``mask``   optional (n_events, n_particles) bool, True for real particles
- ``weight`` optional (n_events,) float, per-event weights (default 1)
- ``p4_true`` optional, same shape as ``p4``: the unsmeared four-vectors
- ``target`` optional (n_events, K) float (or (n_events,), read as K = 1): regression targets
- ``meta``   optional: a JSON object of scalars (npz: a 0-d string array; HDF5: file attributes)

Files of other formats (Top Tagging, energyflow, JetClass, PELICAN) are read by format plugins
(:mod:`symfw.core.formats`) as these same arrays; :func:`scan` checks any reader block by block,
so a file is checked the same way whether it is loaded (:func:`load_events`) or streamed
(:mod:`symfw.core.streaming`). Every problem is a :class:`DataError` naming the file and what is wrong (exit code 2). Models
compute in float32, so values must stay in its range: |p4| ≤ ``P4_MAX`` GeV (their squares,
the invariants, stay finite), weights and targets below float32's largest number. Events a
dataset plugin generates are validated as a file would be.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from . import kinematics
from .errors import DataError, UsageError
from .io import atomic_write

ARRAYS = ("p4", "label", "mask", "weight", "p4_true", "target")
P4_MAX = 1e18  # GeV: |E|, |p| of larger four-vectors square beyond float32's range (3.4e38)
FLOAT32_MAX = float(np.finfo(np.float32).max)


class Events:
    """What every kind of event data offers: the per-event arrays ``label``, ``weight`` and
    ``target`` in memory, ``meta``, and the four-vectors through :meth:`chunks` and :meth:`read`.

    :class:`EventData` holds everything in memory; :class:`symfw.core.streaming.StreamedEvents`
    reads the four-vectors and masks from its file when asked.
    """

    label: np.ndarray
    weight: np.ndarray
    target: np.ndarray | None
    meta: dict[str, Any]
    in_memory: bool = True

    @property
    def n_classes(self) -> int:
        """C: labels are 0 … C−1 (2 for signal vs background)."""
        return int(self.label.max()) + 1

    @property
    def target_dim(self) -> int | None:
        """K, the number of regression targets per event (None without targets)."""
        return None if self.target is None else int(self.target.shape[1])

    @property
    def resident_events(self) -> int:
        """How many events' four-vectors are in memory at once (all of them, unless streamed)."""
        return len(self)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary recorded with every run (the counts win over same-named meta).

        ``target_dim`` is there only when the data has targets, so records of data without
        them are unchanged.
        """
        out = {
            **{k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))},
            "n_events": len(self),
            "n_particles": self.n_particles,
            "n_signal": int((self.label == 1).sum()),
            "n_background": int((self.label == 0).sum()),
            "n_classes": self.n_classes,
            "weighted": bool(not np.all(self.weight == 1)),
            "content_hash": content_hash(self),
        }
        if self.target is not None:
            out["target_dim"] = self.target_dim
        return out


@dataclass
class EventData(Events):
    """Labelled events. Arrays are NumPy; ``tensors()`` gives torch views for training.

    Events read from files or made by a dataset plugin (:func:`validate`) hold ``p4`` and
    ``p4_true`` as float32 — the models' precision, half the memory of float64 — and weights
    and targets as float64.
    """

    p4: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    p4_true: np.ndarray | None = None
    target: np.ndarray | None = None  # (n_events, K) float64 regression targets
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.p4.shape[0])

    @property
    def n_particles(self) -> int:
        return int(self.p4.shape[1])

    @property
    def has_p4_true(self) -> bool:
        return self.p4_true is not None

    def subset(self, index: np.ndarray) -> "EventData":
        return EventData(
            p4=self.p4[index],
            label=self.label[index],
            mask=self.mask[index],
            weight=self.weight[index],
            p4_true=None if self.p4_true is None else self.p4_true[index],
            target=None if self.target is None else self.target[index],
            meta=dict(self.meta),
        )

    def read(self, index: np.ndarray, names=None) -> "EventData":
        """The events ``index`` (any order), as :meth:`subset`."""
        return self.subset(index)

    def load(self) -> "EventData":
        return self

    def chunks(self, size: int | None = None, names=None):
        """The events in order, ``size`` at a time (all at once by default)."""
        if size is None or size >= len(self):
            yield self
            return
        for start in range(0, len(self), size):
            yield self.subset(slice(start, start + size))

    def tensors(self, device: str | torch.device = "cpu", dtype=torch.float32) -> dict[str, torch.Tensor]:
        """p4, mask, label (float), weight, and target when the data has one, as tensors on ``device``."""
        out = {
            "p4": torch.as_tensor(self.p4, dtype=dtype, device=device),
            "mask": torch.as_tensor(self.mask, dtype=torch.bool, device=device),
            "label": torch.as_tensor(self.label, dtype=dtype, device=device),
            "weight": torch.as_tensor(self.weight, dtype=dtype, device=device),
        }
        if self.target is not None:
            out["target"] = torch.as_tensor(self.target, dtype=dtype, device=device)
        return out


def target_summary(data: EventData) -> dict[str, Any] | None:
    """None without targets; else K (``dim``) and, for four-vector targets (K = 4, (E, px, py, pz)),
    the median mass and pT in GeV (``mass_median``, ``pt_median``, unweighted)."""
    if data.target is None:
        return None
    out: dict[str, Any] = {"dim": data.target_dim}
    if data.target_dim == 4:
        t = torch.from_numpy(np.ascontiguousarray(data.target, dtype=np.float64))
        out["mass_median"] = float(np.median(kinematics.mass(t).numpy()))
        out["pt_median"] = float(np.median(kinematics.pt(t).numpy()))
    return out


def content_hash(data: Events) -> str:
    """p4, label, mask and weight, and the target only when there is one (so hashes of data
    without targets are what they were before targets existed). Streamed events are hashed chunk
    by chunk: the same hash as of the same events in memory."""
    h = hashlib.sha256()
    for chunk in data.chunks(names=("p4",)):
        h.update(np.ascontiguousarray(chunk.p4).data)
    h.update(np.ascontiguousarray(data.label).data)
    for chunk in data.chunks(names=("mask",)):
        h.update(np.ascontiguousarray(chunk.mask).data)
    h.update(np.ascontiguousarray(data.weight).data)
    if data.target is not None:
        h.update(b"target")
        h.update(np.ascontiguousarray(data.target, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- validation


def class_name(cls: int) -> str:
    """'background' (0), 'signal' (1), 'class 2', …"""
    return {0: "background", 1: "signal"}.get(cls, f"class {cls}")


SCAN_BYTES = 64 * 2**20  # float64 four-vectors checked at once while a file is read (bounds the scan's memory)
PER_EVENT = ("label", "weight", "target")  # the arrays kept in memory for every event, streamed or not


def _failer(origin: str):
    def fail(msg: str):
        raise DataError(f"{origin}: {msg}")

    return fail


def _check_finite(fail, name: str, values: np.ndarray, limit: float = FLOAT32_MAX, offset: int = 0) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        fail(f"{name}: contains NaN or inf (first in event {offset + int(bad.reshape(len(bad), -1).any(1).argmax())})")
    big = np.abs(values) > limit
    if big.any():
        fail(f"{name}: values beyond {limit:.3g} in magnitude, too large for float32 arithmetic "
             f"(first in event {offset + int(big.reshape(len(big), -1).any(1).argmax())})")


def _check_layout(columns: dict[str, tuple[tuple[int, ...], np.dtype]], fail) -> tuple[int, int]:
    """Names, shapes and dtypes of the arrays (nothing read yet); (n_events, n_particles)."""
    for key in ("p4", "label"):
        if key not in columns:
            fail(f"missing array '{key}' (found: {', '.join(sorted(columns)) or 'nothing'})")
    shape, dtype = columns["p4"]
    shape = tuple(int(d) for d in shape)
    if dtype.kind not in "fiu":
        fail(f"p4: expected a numeric array, got dtype {dtype}")
    if len(shape) != 3 or shape[-1] != 4:
        fail(f"p4: expected shape (n_events, n_particles, 4), got {shape}")
    n, n_part = shape[:2]
    if n == 0:
        fail("no events (p4 has 0 rows)")
    if n_part == 0:
        fail("p4: events have 0 particles")
    expect = {"label": ((n,), "biuf", "integer class indices 0, 1, …"), "mask": ((n, n_part), "biu", "booleans"),
              "weight": ((n,), "fiu", "numbers"), "p4_true": (shape, "fiu", "a numeric array")}
    for key, (want, kinds, what) in expect.items():
        if key not in columns:
            continue
        got, kind = tuple(int(d) for d in columns[key][0]), columns[key][1]
        match = " to match p4" if key in ("mask", "p4_true") else ""
        if key == "label" and (len(got) != 1 or got[0] != n):
            fail(f"label: expected shape ({n},), got {got}")
        if key != "label" and got != want:
            fail(f"{key}: expected shape {want if key != 'weight' else f'({n},)'}{match}, got {got}")
        if kind.kind not in kinds:
            fail(f"{key}: expected {what}, got dtype {kind}")
    if "target" in columns:
        got, kind = tuple(int(d) for d in columns["target"][0]), columns["target"][1]
        if kind.kind not in "fiu":
            fail(f"target: expected a numeric array, got dtype {kind}")
        if not (got == (n,) or (len(got) == 2 and got[0] == n)):
            fail(f"target: expected shape ({n}, K) or ({n},), got {got}")
        if len(got) == 2 and got[1] == 0:
            fail(f"target: expected at least one value per event (K >= 1), got shape {got}")
    return n, n_part


def normalized(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Four-vectors as symfw holds them: padded entries zero, float32 (the same numbers whether a
    file is loaded whole or read in chunks)."""
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    return np.where(mask[..., None], values, values.dtype.type(0)).astype(np.float32, copy=False)


def _mask_of(block: dict[str, np.ndarray], fail, offset: int, check: bool) -> np.ndarray:
    mask = block.get("mask")
    if mask is None:
        return np.ones(np.shape(block["p4"])[:2], dtype=bool)
    mask = np.asarray(mask)
    if check and mask.dtype != bool and not np.isin(np.unique(mask), [0, 1]).all():
        fail(f"mask: expected booleans, got dtype {mask.dtype}")
    mask = mask.astype(bool, copy=False)
    if check and not mask.any(axis=1).all():
        fail(f"mask: event {offset + int((~mask.any(axis=1)).argmax())} has no particles")
    return mask


def rows_of(block: dict[str, np.ndarray], fail=None, offset: int = 0) -> dict[str, np.ndarray]:
    """``p4``, ``mask`` (and ``p4_true``) of a block of rows as symfw holds them, checked when
    ``fail`` is given (events numbered from ``offset``): padded entries may hold anything, NaN
    included, and are set to zero; real ones must be finite, in float32's range, with E ≥ 0."""
    check = fail is not None
    mask = _mask_of(block, fail, offset, check)
    out = {"mask": mask}
    for key in ("p4", "p4_true"):
        if key not in block:
            continue
        if not check:
            out[key] = normalized(block[key], mask)
            continue
        values = np.where(mask[..., None], np.asarray(block[key]).astype(np.float64), 0.0)
        _check_finite(fail, key, values, P4_MAX, offset)
        if key == "p4" and (values[..., 0] < 0).any():
            fail(f"p4: negative energy (first in event {offset + int((values[..., 0] < 0).any(axis=1).argmax())})")
        out[key] = values.astype(np.float32)
    return out


def _check_events(label: np.ndarray, weight: np.ndarray | None, target: np.ndarray | None, fail,
                  classes: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list | None]:
    """Labels (class indices), weights and targets of every event: (label int64, weight float64,
    target (n, K) float64 or None, the names of the classes present when the format names them)."""
    n = len(label)
    if label.dtype.kind == "f":
        _check_finite(fail, "label", label)
    values = np.unique(label.astype(np.int64) if label.dtype.kind == "b" else label)
    bad = values[(values < 0) | (values != np.floor(values))]
    if len(bad):
        fail(f"label: values must be integers 0, 1, …, C−1 (class indices), found {bad[:5].tolist()}")
    names = None
    if classes is not None:  # the classes present, renumbered 0 … C−1 in the format's order
        values = values.astype(np.int64)
        if values[-1] >= len(classes):
            fail(f"label: class {int(values[-1])} has no name (the file names {len(classes)} classes)")
        names = [classes[v] for v in values]
        label = np.searchsorted(values, label.astype(np.int64))
        values = np.arange(len(values))
    if len(values) < 2 and target is None:  # one class is fine for a regression sample
        which = f"{names[0]}" if names else f"{int(values[0])}"
        fail(f"label: only one class present ({which}); need signal and background")
    gaps = values != np.arange(len(values))
    if gaps.any():  # sorted distinct non-negative integers: the first mismatch is the first missing class
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", …" if len(values) > 8 else "")
        fail(f"label: classes must be 0 … C−1 without gaps; class {int(gaps.argmax())} has no events "
             f"(found {shown})")
    label = label.astype(np.int64)

    if weight is None:
        weight = np.ones(n, dtype=np.float64)
    else:
        weight = np.asarray(weight).astype(np.float64)
        _check_finite(fail, "weight", weight)
        if (weight < 0).any():
            fail("weight: negative weights are not supported")
        for cls in values.astype(int) if len(values) < 2 else (1, 0, *range(2, len(values))):
            if not weight[label == cls].sum() > 0:
                fail(f"weight: the {class_name(cls)} events have zero total weight")

    if target is not None:
        target = np.asarray(target).astype(np.float64)
        if target.ndim == 1:
            target = target[:, None]
        _check_finite(fail, "target", target)
    return label, weight, target, names


@dataclass
class Scanned:
    """What :func:`scan` found: every event's label, weight and target, the metadata, and — when
    kept — the four-vectors and mask."""

    n_particles: int
    label: np.ndarray
    weight: np.ndarray
    target: np.ndarray | None
    meta: dict[str, Any]
    has_p4_true: bool
    rows: dict[str, np.ndarray] | None = None

    def events(self) -> "EventData":
        rows = self.rows or {}
        return EventData(p4=rows["p4"], label=self.label, mask=rows["mask"], weight=self.weight,
                         p4_true=rows.get("p4_true"), target=self.target, meta=dict(self.meta))


def scan_rows(n_particles: int, block_bytes: int = SCAN_BYTES) -> int:
    """Events per block of a scan: ``block_bytes`` of float64 four-vectors."""
    return max(1, block_bytes // max(1, n_particles * 4 * 8))


def scan(reader, origin: str = "data", *, keep: bool = True, block_bytes: int = SCAN_BYTES) -> Scanned:
    """Check every array of ``reader`` (a :class:`~symfw.core.formats.Reader`) against symfw's
    layout, block by block, with at most ``block_bytes`` of float64 four-vectors at once; keep
    the four-vectors and mask (as float32 and bool) only when ``keep``. Every problem is a
    :class:`DataError` naming ``origin`` and what is wrong (docs/data.md, "What is refused")."""
    fail = _failer(origin)
    columns = reader.columns
    n, n_part = _check_layout(columns, fail)
    has_true = "p4_true" in columns
    rows = None
    if keep:
        rows = {"p4": np.empty((n, n_part, 4), np.float32), "mask": np.empty((n, n_part), bool)}
        if has_true:
            rows["p4_true"] = np.empty((n, n_part, 4), np.float32)
    events: dict[str, list[np.ndarray]] = {k: [] for k in PER_EVENT if k in columns}
    step = scan_rows(n_part, block_bytes)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        try:
            block = reader.read(lo, hi)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - a file that opened but whose data cannot be read
            reason = (str(exc).strip().splitlines() or [""])[0]
            fail(f"cannot read events {lo}–{hi - 1}: {type(exc).__name__}: {reason}")
        checked = rows_of(block, fail, lo)
        if rows is not None:
            for k, v in checked.items():
                rows[k][lo:hi] = v
        for k in events:
            events[k].append(np.asarray(block[k]))
    per_event = {k: np.concatenate(v) for k, v in events.items()}
    label, weight, target, names = _check_events(per_event["label"], per_event.get("weight"),
                                                 per_event.get("target"), fail, reader.classes)
    meta = reader.meta if reader.meta is not None else {}
    if not isinstance(meta, dict):
        fail("meta: expected a JSON object")
    meta = dict(meta)
    if names is not None:
        meta["classes"] = ",".join(names)
    return Scanned(n_part, label, weight, target, meta, has_true, rows)


def validate(arrays: dict[str, Any], origin: str = "data") -> EventData:
    """Check arrays against the file format and build :class:`EventData` (float32 p4)."""
    from .formats import arrays_reader

    return scan(arrays_reader(arrays), origin).events()


# --------------------------------------------------------------------------- files


def _reader(path: str | Path, format: str | None, registry):
    from .formats import open_reader

    return open_reader(path, format, registry)


def _file_meta(meta: dict[str, Any], source: str | Path, fmt: str) -> dict[str, Any]:
    meta = dict(meta)
    if fmt != "symfw":
        meta["format"] = fmt
    meta.setdefault("source", str(source))
    meta["file"] = str(source)
    return meta


def load_events(path: str | Path, format: str | None = None, registry=None) -> EventData:
    """Read and check an event file (any format symfw reads; a glob reads several files as one)
    into memory. ``format`` forces a format by name (``symfw data formats`` lists them)."""
    reader, fmt = _reader(path, format, registry)
    with reader:
        scanned = scan(reader, origin=str(path))
    data = scanned.events()
    data.meta = _file_meta(data.meta, path, fmt)
    return data


def _scalar(value: Any) -> Any:
    """An HDF5 attribute as a plain Python scalar."""
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def scalar_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able scalar entries of ``meta`` (what files keep)."""
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) and k != "file"}


SAVE_SUFFIXES = (".npz", ".h5", ".hdf5")


def _npz_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: np.dtype, parts) -> None:
    """Write one ``.npy`` member from the arrays ``parts`` (its rows in order), as ``np.savez`` does."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": tuple(shape)})
        for part in parts:
            fh.write(memoryview(np.ascontiguousarray(part, dtype=dtype).reshape(-1).view(np.uint8)))


def save_events(data, path: str | Path) -> None:
    """Write ``.npz`` or HDF5 in symfw's layout (uncompressed: float64 momenta compress by only
    ~15%, at 40× the time), atomically. ``data`` may be streamed: it is then written chunk by
    chunk (HDF5 in one pass over the input, ``.npz`` one pass per row array)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise DataError(f"{path}: unknown file type '{suffix}'; use .npz, .h5 or .hdf5")
    n, n_part = len(data), data.n_particles
    row_keys = ["p4", "mask"] + (["p4_true"] if data.has_p4_true else [])
    shapes = {"p4": ((n, n_part, 4), np.float32), "mask": ((n, n_part), np.bool_),
              "p4_true": ((n, n_part, 4), np.float32)}
    events = {"label": data.label, "weight": data.weight}
    if data.target is not None:
        events["target"] = data.target
    meta = scalar_meta(data.meta)
    order = ["p4", "label", "mask", "weight"] + [k for k in ("p4_true", "target") if k in row_keys or k in events]

    if suffix == ".npz":

        def write(tmp: Path):
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for key in order:
                    if key in events:
                        _npz_member(archive, key, events[key].shape, events[key].dtype, [events[key]])
                    else:
                        _npz_member(archive, key, *shapes[key], (getattr(c, key) for c in data.chunks(names=(key,))))
                with archive.open("meta.npy", "w") as fh:
                    np.lib.format.write_array(fh, np.array(json.dumps(meta)), allow_pickle=False)

    else:

        def write(tmp: Path):
            import h5py

            with h5py.File(tmp, "w") as f:
                for key in order:
                    if key in events:
                        f.create_dataset(key, data=events[key])
                    else:
                        f.create_dataset(key, shape=shapes[key][0], dtype=shapes[key][1])
                start = 0
                for chunk in data.chunks(names=tuple(row_keys)):
                    for key in row_keys:
                        f[key][start : start + len(chunk)] = getattr(chunk, key)
                    start += len(chunk)
                for k, v in meta.items():
                    f.attrs[k] = v

    atomic_write(path, write)


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Index arrays of a seeded, label-stratified train/validation/test split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    fractions: tuple[float, float, float]
    fraction: float = 1.0

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "fractions": list(self.fractions),
            "train_fraction": self.fraction,
            "n_train": int(len(self.train)),
            "n_val": int(len(self.val)),
            "n_test": int(len(self.test)),
            "indices_hash": self.hash,
        }

    def with_fraction(self, fraction: float) -> "Split":
        """The first ``fraction`` of the training indices; validation and test unchanged."""
        if not 0 < fraction <= 1:
            raise DataError(f"fraction must be in (0, 1], got {fraction}")
        n = max(1, int(round(len(self.train) * fraction)))
        return Split(self.train[:n], self.val, self.test, self.seed, self.fractions, fraction)


def make_split(
    labels: np.ndarray, seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> Split:
    """Stratified by label: each class is shuffled with ``seed`` and cut by ``fractions``.

    Each part is shuffled again so classes interleave; no index appears in two parts. Every
    part must hold every class (for binary labels: both; a regression sample may hold one).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    classes = np.unique(labels)
    for cls in classes:
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        for k, chunk in enumerate((idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :])):
            parts[k].append(chunk)
    train, val, test = (rng.permutation(np.concatenate(p)) for p in parts)
    for name, part in (("train", train), ("validation", val), ("test", test)):
        if len(part) == 0:
            raise DataError(f"the {name} split is empty; use more events")
        present = np.unique(labels[part])
        if len(present) < 2 <= len(classes):
            raise DataError(f"the {name} split holds only one class; use more events")
        if len(present) < len(classes):
            missing = np.setdiff1d(classes, present)[0]
            raise DataError(f"the {name} split has no events of {class_name(int(missing))}; use more events")
    return Split(train, val, test, seed, tuple(float(f) for f in fractions))


# --------------------------------------------------------------------------- sources


def _first_error(exc: ValidationError) -> str:
    """The first pydantic error as ``option: message`` on one line."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    tail = f" (and {more} more)" if more else ""
    return f"{loc + ': ' if loc else ''}{msg}{tail}".splitlines()[0]


def _check_generated_size(source, name: str, n_events: int | None, seed: int) -> None:
    """Refuse asking a generator for more events than memory holds, measured on a small sample
    (only for requests above ``PROBE_ABOVE`` events; a sample the generator refuses says nothing)."""
    from .limits import PROBE_ABOVE, PROBE_EVENTS, check_events, event_bytes

    if n_events is None or n_events <= PROBE_ABOVE:
        return
    try:
        sample = source.generate(PROBE_EVENTS, seed)
    except Exception:  # noqa: BLE001 - the full request reports its own problems
        return
    check_events(n_events, event_bytes(sample), f"dataset '{name}'")


def resolve_data(
    source: str | Path,
    *,
    n_events: int | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    registry=None,
    progress=None,
    format: str | None = None,
    stream: bool | None = None,
    chunk_events: int | None = None,
) -> Events:
    """A registered dataset plugin by name (generated with ``seed``), or a user's file (or a glob
    of files) in any format symfw reads.

    For a generator, ``n_events`` events are made (the plugin's default when None). For a
    file, ``n_events`` (if given) keeps the first n events. ``format`` forces a file format;
    ``stream`` (None: when the file is large, see :func:`symfw.core.streaming.open_events`)
    reads the file in chunks of ``chunk_events`` events instead of loading it.
    """
    from .registry import get_registry

    registry = registry or get_registry()
    name = str(source)
    if name in registry.entries["dataset"]:
        if stream or format is not None:
            raise UsageError(f"--{'stream' if stream else 'format'}: is for data files; dataset '{name}' is "
                             "generated in memory (write it to a file with `symfw data generate` to stream it)")
        cls = registry.get("dataset", name)
        try:
            opts = cls.Options.model_validate(options or {})
        except ValidationError as exc:
            raise DataError(f"dataset '{name}': {_first_error(exc)}") from None
        if n_events is not None and n_events < 1:
            raise DataError(f"--events must be >= 1, got {n_events}")
        _check_generated_size(cls(opts), name, n_events if n_events is not None else getattr(opts, "n_events", None),
                              seed)
        generated = cls(opts).generate(n_events, seed, progress=progress)
        arrays = {k: getattr(generated, k) for k in ARRAYS if getattr(generated, k) is not None}
        return validate({**arrays, "meta": generated.meta}, origin=f"dataset '{name}'")  # as a file would be
    from .formats import GLOB_CHARS, known_extensions
    from .streaming import open_events

    path = Path(source)
    if not any(c in name for c in GLOB_CHARS) and not path.exists() \
            and path.suffix.lower() not in known_extensions(registry):
        known = ", ".join(registry.names("dataset")) or "none"
        raise DataError(f"{source}: neither a data file nor a dataset; datasets: {known}")
    if n_events is not None and n_events < 1:
        raise DataError(f"--events must be >= 1, got {n_events}")
    data = open_events(source, n_events=n_events, format=format, stream=stream, chunk_events=chunk_events,
                       registry=registry)
    if n_events is not None and len(np.unique(data.label)) < 2:
        raise DataError(f"{source}: the first {n_events} events hold only one class; use more events "
                        "(or shuffle the file)")
    return data
