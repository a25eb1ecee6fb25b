"""Event data in memory, the file format users give symfw, validation, and seeded splits.

File format (``.npz`` or HDF5 ``.h5``/``.hdf5``), documented in docs/data.md:

- ``p4``     (n_events, n_particles, 4) float, (E, px, py, pz) in GeV
- ``label``  (n_events,) integer or bool class indices 0 … C−1 (C ≥ 2); binary: 1 = signal, 0 = background
- ``mask``   optional (n_events, n_particles) bool, True for real particles
- ``weight`` optional (n_events,) float, per-event weights (default 1)
- ``p4_true`` optional, same shape as ``p4``: the unsmeared four-vectors
- ``target`` optional (n_events, K) float (or (n_events,), read as K = 1): regression targets
- ``meta``   optional: a JSON object of scalars (npz: a 0-d string array; HDF5: file attributes)

Every problem is a :class:`DataError` naming the file and what is wrong (exit code 2). Models
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
from .errors import DataError
from .io import atomic_write

ARRAYS = ("p4", "label", "mask", "weight", "p4_true", "target")
P4_MAX = 1e18  # GeV: |E|, |p| of larger four-vectors square beyond float32's range (3.4e38)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class EventData:
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

    @property
    def n_classes(self) -> int:
        """C: labels are 0 … C−1 (2 for signal vs background)."""
        return int(self.label.max()) + 1

    @property
    def target_dim(self) -> int | None:
        """K, the number of regression targets per event (None without targets)."""
        return None if self.target is None else int(self.target.shape[1])

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


def content_hash(data: EventData) -> str:
    """p4, label, mask and weight, and the target only when there is one (so hashes of data
    without targets are what they were before targets existed)."""
    h = hashlib.sha256()
    for arr in (data.p4, data.label, data.mask, data.weight):
        h.update(np.ascontiguousarray(arr).tobytes())
    if data.target is not None:
        h.update(b"target")
        h.update(np.ascontiguousarray(data.target, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- validation


def class_name(cls: int) -> str:
    """'background' (0), 'signal' (1), 'class 2', …"""
    return {0: "background", 1: "signal"}.get(cls, f"class {cls}")


def validate(arrays: dict[str, Any], origin: str = "data") -> EventData:
    """Check arrays against the file format and build :class:`EventData` (float32 p4)."""

    def fail(msg: str):
        raise DataError(f"{origin}: {msg}")

    def check_finite(name: str, values: np.ndarray, limit: float = FLOAT32_MAX) -> None:
        bad = ~np.isfinite(values)
        if bad.any():
            fail(f"{name}: contains NaN or inf (first in event {int(bad.reshape(len(bad), -1).any(1).argmax())})")
        big = np.abs(values) > limit
        if big.any():
            fail(f"{name}: values beyond {limit:.3g} in magnitude, too large for float32 arithmetic "
                 f"(first in event {int(big.reshape(len(big), -1).any(1).argmax())})")

    for key in ("p4", "label"):
        if key not in arrays:
            fail(f"missing array '{key}' (found: {', '.join(sorted(arrays)) or 'nothing'})")
    p4 = np.asarray(arrays["p4"])
    if p4.dtype.kind not in "fiu":
        fail(f"p4: expected a numeric array, got dtype {p4.dtype}")
    if p4.ndim != 3 or p4.shape[-1] != 4:
        fail(f"p4: expected shape (n_events, n_particles, 4), got {p4.shape}")
    n, n_part = p4.shape[:2]
    if n == 0:
        fail("no events (p4 has 0 rows)")
    if n_part == 0:
        fail("p4: events have 0 particles")
    p4 = p4.astype(np.float64)

    label = np.asarray(arrays["label"])
    if label.ndim != 1 or label.shape[0] != n:
        fail(f"label: expected shape ({n},), got {label.shape}")
    if label.dtype.kind not in "biuf":
        fail(f"label: expected integer class indices 0, 1, …, got dtype {label.dtype}")
    if label.dtype.kind == "f":
        check_finite("label", label)
    values = np.unique(label.astype(np.int64) if label.dtype.kind == "b" else label)
    bad = values[(values < 0) | (values != np.floor(values))]
    if len(bad):
        fail(f"label: values must be integers 0, 1, …, C−1 (class indices), found {bad[:5].tolist()}")
    if len(values) < 2 and arrays.get("target") is None:  # one class is fine for a regression sample
        fail(f"label: only one class present ({int(values[0])}); need signal and background")
    gaps = values != np.arange(len(values))
    if gaps.any():  # sorted distinct non-negative integers: the first mismatch is the first missing class
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", …" if len(values) > 8 else "")
        fail(f"label: classes must be 0 … C−1 without gaps; class {int(gaps.argmax())} has no events "
             f"(found {shown})")
    label = label.astype(np.int64)

    mask = arrays.get("mask")
    if mask is None:
        mask = np.ones((n, n_part), dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != (n, n_part):
            fail(f"mask: expected shape {(n, n_part)} to match p4, got {mask.shape}")
        if mask.dtype.kind not in "biu" or not np.isin(np.unique(mask), [0, 1]).all():
            fail(f"mask: expected booleans, got dtype {mask.dtype}")
        mask = mask.astype(bool)
        if not mask.any(axis=1).all():
            fail(f"mask: event {int((~mask.any(axis=1)).argmax())} has no particles")
    # padded entries may hold anything (NaN included); they are set to zero
    p4 = np.where(mask[..., None], p4, 0.0)
    check_finite("p4", p4, P4_MAX)

    if (p4[..., 0] < 0).any():
        bad = int((p4[..., 0] < 0).any(axis=1).argmax())
        fail(f"p4: negative energy (first in event {bad})")

    weight = arrays.get("weight")
    if weight is None:
        weight = np.ones(n, dtype=np.float64)
    else:
        weight = np.asarray(weight)
        if weight.shape != (n,):
            fail(f"weight: expected shape ({n},), got {weight.shape}")
        if weight.dtype.kind not in "fiu":
            fail(f"weight: expected numbers, got dtype {weight.dtype}")
        weight = weight.astype(np.float64)
        check_finite("weight", weight)
        if (weight < 0).any():
            fail("weight: negative weights are not supported")
        for cls in values.astype(int) if len(values) < 2 else (1, 0, *range(2, len(values))):
            if not weight[label == cls].sum() > 0:
                fail(f"weight: the {class_name(cls)} events have zero total weight")

    p4_true = arrays.get("p4_true")
    if p4_true is not None:
        p4_true = np.asarray(p4_true)
        if p4_true.shape != p4.shape:
            fail(f"p4_true: expected shape {p4.shape} to match p4, got {p4_true.shape}")
        if p4_true.dtype.kind not in "fiu":
            fail(f"p4_true: expected a numeric array, got dtype {p4_true.dtype}")
        p4_true = np.where(mask[..., None], p4_true.astype(np.float64), 0.0)
        check_finite("p4_true", p4_true, P4_MAX)

    target = arrays.get("target")
    if target is not None:
        target = np.asarray(target)
        if target.dtype.kind not in "fiu":
            fail(f"target: expected a numeric array, got dtype {target.dtype}")
        if target.ndim == 1 and target.shape[0] == n:
            target = target[:, None]
        if target.ndim != 2 or target.shape[0] != n:
            fail(f"target: expected shape ({n}, K) or ({n},), got {target.shape}")
        if target.shape[1] == 0:
            fail(f"target: expected at least one value per event (K >= 1), got shape {target.shape}")
        target = target.astype(np.float64)
        check_finite("target", target)

    meta = arrays.get("meta") or {}
    if not isinstance(meta, dict):
        fail("meta: expected a JSON object")
    # four-vectors are held as float32 (what the models compute in; half the memory of float64);
    # quantities that cancel (masses, d_ij) are computed from them in float64 where they are used
    return EventData(
        p4=p4.astype(np.float32), label=label, mask=mask, weight=weight,
        p4_true=None if p4_true is None else p4_true.astype(np.float32), target=target, meta=dict(meta),
    )


# --------------------------------------------------------------------------- files


def load_events(path: str | Path) -> EventData:
    """Read and validate an ``.npz`` or HDF5 file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an .npz or .h5 file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    suffix = path.suffix.lower()
    arrays: dict[str, Any] = {}
    meta: Any = None
    try:
        if suffix == ".npz":
            if not zipfile.is_zipfile(path):
                raise DataError(f"{path}: cannot read as npz: not a zip archive")
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files if k in ARRAYS}
                meta = str(f["meta"][()]) if "meta" in f.files else None
        elif suffix in (".h5", ".hdf5"):
            import h5py

            if not h5py.is_hdf5(path):
                raise DataError(f"{path}: cannot read as {suffix[1:]}: not an HDF5 file")
            with h5py.File(path, "r") as f:
                arrays = {k: f[k][()] for k in f.keys() if k in ARRAYS}
                meta = {k: _scalar(v) for k, v in f.attrs.items()}
        else:
            raise DataError(f"{path}: unknown file type '{suffix}'; use .npz, .h5 or .hdf5")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable or corrupt file
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: cannot read as {suffix[1:]}: {type(exc).__name__}: {reason}") from None
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise DataError(f"{path}: meta: not valid JSON") from None
    if meta:
        arrays["meta"] = meta
    data = validate(arrays, origin=str(path))
    data.meta.setdefault("source", str(path))
    data.meta["file"] = str(path)
    return data


def _scalar(value: Any) -> Any:
    """An HDF5 attribute as a plain Python scalar."""
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def scalar_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able scalar entries of ``meta`` (what files keep)."""
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) and k != "file"}


def save_events(data: EventData, path: str | Path) -> None:
    """Write ``.npz`` or HDF5 (uncompressed: float64 momenta compress by only ~15%, at 40× the time), atomically."""
    path = Path(path)
    arrays = {"p4": data.p4, "label": data.label, "mask": data.mask, "weight": data.weight}
    for key in ("p4_true", "target"):
        if getattr(data, key) is not None:
            arrays[key] = getattr(data, key)
    meta = scalar_meta(data.meta)
    suffix = path.suffix.lower()
    if suffix == ".npz":

        def write(tmp: Path):
            with tmp.open("wb") as fh:
                np.savez(fh, **arrays, meta=np.array(json.dumps(meta)))

    elif suffix in (".h5", ".hdf5"):

        def write(tmp: Path):
            import h5py

            with h5py.File(tmp, "w") as f:
                for k, v in arrays.items():
                    f.create_dataset(k, data=v)
                for k, v in meta.items():
                    f.attrs[k] = v

    else:
        raise DataError(f"{path}: unknown file type '{suffix}'; use .npz, .h5 or .hdf5")
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
) -> EventData:
    """A registered dataset plugin by name (generated with ``seed``), or a user's file.

    For a generator, ``n_events`` events are made (the plugin's default when None). For a
    file, ``n_events`` (if given) keeps the first n events.
    """
    from .registry import get_registry

    registry = registry or get_registry()
    name = str(source)
    if name in registry.entries["dataset"]:
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
    path = Path(source)
    if not path.exists() and path.suffix.lower() not in (".npz", ".h5", ".hdf5"):
        known = ", ".join(registry.names("dataset")) or "none"
        raise DataError(f"{source}: neither a data file nor a dataset; datasets: {known}")
    data = load_events(path)
    if n_events is not None:
        if n_events < 1:
            raise DataError(f"--events must be >= 1, got {n_events}")
        data = data.subset(np.arange(min(n_events, len(data))))
        if len(np.unique(data.label)) < 2:
            raise DataError(f"{source}: the first {n_events} events hold only one class; use more events "
                            "(or shuffle the file)")
    return data
