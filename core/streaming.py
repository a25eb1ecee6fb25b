"""Event files larger than memory: checked once in chunks, then read chunk by chunk on demand.

:func:`open_events` opens a data file (or a glob's files) in any format symfw reads. It loads
the file into an :class:`~symfw.core.data.EventData` unless the file is to be **streamed**:
asked for (``stream=True``, ``--stream``) or, by default, when its four-vectors and masks
would take more than :data:`STREAM_FRACTION` of the memory available. A streamed file is read
once, in blocks, to check it exactly as loading would (:func:`symfw.core.data.scan`); what
stays in memory is every event's label, weight and target (24 bytes an event, plus 8 per
target value). The four-vectors are read when asked for: :meth:`StreamedEvents.read` (any
events, read from the file in sorted order and put back in the order asked for),
:meth:`StreamedEvents.chunks` (all of them in order, ``chunk_events`` at a time).

Training reads the same batches in the same order from a streamed file as from memory
(:class:`symfw.core.training.Tensors`), so the same seed gives the same model: the split comes
from the labels alone, each epoch's batch order is the same permutation, and each window of
upcoming batches is read in one go. ``chunk_events`` bounds the events in memory at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import EventData, Events, rows_of, scan
from .errors import UsageError

STREAM_FRACTION = 0.25  # stream a file whose arrays would take more than this share of the available memory
CHUNK_EVENTS = 65536  # events read (and held) at once while streaming, by default
ROW_NAMES = ("p4", "mask", "p4_true")


def event_bytes(n_particles: int, has_p4_true: bool) -> int:
    """Bytes of one event's arrays in memory: float32 four-vectors, the mask, label, weight."""
    return n_particles * (16 + 1 + (16 if has_p4_true else 0)) + 16


def check_chunk(chunk_events: int | None) -> int:
    chunk = CHUNK_EVENTS if chunk_events is None else int(chunk_events)
    if chunk < 1:
        raise UsageError(f"--chunk-events must be >= 1, got {chunk_events}")
    return chunk


class _Handle:
    """An open reader shared by a file's views, closed when the last view is gone (in the process
    that opened it)."""

    def __init__(self, reader):
        self.reader, self.pid = reader, os.getpid()

    def __del__(self):
        if self.pid == os.getpid():
            self.reader.close()


class StreamedEvents(Events):
    """Events of a file read chunk by chunk: labels, weights and targets in memory, four-vectors
    and masks read from the file when asked for. ``rows`` are the file's rows these events are
    (all of them, in order, unless a subset); :meth:`subset` gives another view of the file.
    Pickles as its per-event arrays and the file's name: another process opens the file again."""

    in_memory = False

    def __init__(self, source: str, format: str, label: np.ndarray, weight: np.ndarray, target: np.ndarray | None,
                 meta: dict[str, Any], n_particles: int, has_p4_true: bool, chunk_events: int = CHUNK_EVENTS,
                 rows: np.ndarray | None = None, registry=None):
        self.source, self.format = str(source), format
        self.label, self.weight, self.target, self.meta = label, weight, target, dict(meta)
        self._n_particles, self._has_p4_true = int(n_particles), bool(has_p4_true)
        self.chunk_events = check_chunk(chunk_events)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._registry = registry
        self._open: _Handle | None = None

    # -- what it is ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.label)

    @property
    def n_particles(self) -> int:
        return self._n_particles

    @property
    def has_p4_true(self) -> bool:
        return self._has_p4_true

    @property
    def resident_events(self) -> int:
        return min(len(self), self.chunk_events)

    @property
    def nbytes(self) -> int:
        """Bytes the events' arrays would take in memory (:meth:`load`)."""
        return len(self) * event_bytes(self.n_particles, self.has_p4_true)

    def __repr__(self) -> str:
        return (f"StreamedEvents({self.source!r}, format={self.format!r}, {len(self):,} events × "
                f"{self.n_particles} particles, chunks of {self.chunk_events:,})")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"], state["_registry"] = None, None
        return state

    # -- reading -------------------------------------------------------------------------------
    def reader(self):
        """The file's reader, opened once per process and shared with :meth:`subset` views."""
        if self._open is None or self._open.pid != os.getpid():
            from .formats import open_reader

            self._open = _Handle(open_reader(self.source, self.format, self._registry)[0])
        return self._open.reader

    def file_rows(self, index) -> np.ndarray:
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        return index if self.rows is None else self.rows[index]

    def read_rows(self, index, names=("p4", "mask")) -> dict[str, np.ndarray]:
        """``names`` of the events ``index`` (any order), as symfw holds them (float32 four-vectors,
        padded entries zero, bool mask): the file's rows are read sorted, then put in order."""
        rows = self.file_rows(index)
        unique, inverse = np.unique(rows, return_inverse=True)
        reader = self.reader()
        wanted = set(names) | {"mask"} | (set() if "mask" in reader.columns else {"p4"})  # the mask of a file without one: p4's shape
        if not self.has_p4_true:
            wanted.discard("p4_true")
        got = rows_of(reader.take(unique, [k for k in ROW_NAMES if k in wanted]))
        if "p4" not in wanted:
            got.pop("p4", None)
        if len(unique) == len(rows) and (len(rows) < 2 or bool((np.diff(rows) > 0).all())):
            return got
        return {k: v[inverse] for k, v in got.items()}

    def read(self, index, names=ROW_NAMES) -> EventData:
        """The events ``index`` (any order) in memory."""
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        got = self.read_rows(index, names)
        n = len(index)
        empty = np.zeros((n, self.n_particles, 4), np.float32)
        return EventData(
            p4=got.get("p4", empty), label=self.label[index], mask=got["mask"], weight=self.weight[index],
            p4_true=got.get("p4_true") if self.has_p4_true and "p4_true" in names else None,
            target=None if self.target is None else self.target[index], meta=dict(self.meta),
        )

    def chunks(self, size: int | None = None, names=ROW_NAMES):
        """The events in order, ``size`` (default ``chunk_events``) at a time, as :class:`EventData`."""
        size = size or self.chunk_events
        for start in range(0, len(self), size):
            yield self.read(slice(start, min(len(self), start + size)), names)

    def subset(self, index) -> "StreamedEvents":
        """The events ``index`` as another view of the file (nothing read)."""
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        view = StreamedEvents(self.source, self.format, self.label[index], self.weight[index],
                              None if self.target is None else self.target[index], self.meta, self.n_particles,
                              self.has_p4_true, self.chunk_events, self.file_rows(index), self._registry)
        view._open = self._open
        return view

    def load(self) -> EventData:
        """Every event in memory."""
        return self.read(slice(None))

    def tensors(self, device: str | torch.device = "cpu", dtype=torch.float32) -> dict[str, torch.Tensor]:
        """:meth:`EventData.tensors` of the loaded events (for small views: a test sample)."""
        return self.load().tensors(device, dtype)


def open_events(source: str | Path, *, n_events: int | None = None, format: str | None = None,
                stream: bool | None = None, chunk_events: int | None = None, registry=None) -> Events:
    """The events of a data file (or a glob's files): loaded, or streamed (``stream=True``, or
    ``None`` and the file's arrays larger than :data:`STREAM_FRACTION` of the available memory).
    ``n_events`` keeps the first n events (a small enough streamed selection is then loaded,
    unless ``stream=True``). Either way the file is checked whole, as :func:`~symfw.core.data.load_events` does."""
    from .data import _file_meta
    from .formats import open_reader
    from .limits import available_memory
    from .registry import get_registry

    registry = registry or get_registry()
    chunk = check_chunk(chunk_events)
    reader, fmt = open_reader(source, format, registry)
    with reader:
        n = reader.n_events if n_events is None else min(n_events, reader.n_events)
        per_event = event_bytes(reader.n_particles, "p4_true" in reader.columns)
        budget = STREAM_FRACTION * available_memory("cpu")
        streamed = stream if stream is not None else reader.n_events * per_event > budget
        scanned = scan(reader, origin=str(source), keep=not streamed)
    meta = _file_meta(scanned.meta, source, fmt)
    if not streamed:
        data = scanned.events()
        data.meta = meta
        return data.subset(np.arange(n)) if n_events is not None else data
    data = StreamedEvents(str(source), fmt, scanned.label, scanned.weight, scanned.target, meta,
                          scanned.n_particles, scanned.has_p4_true, chunk, registry=registry)
    if n_events is not None:
        data = data.subset(np.arange(n))
        if stream is None and n * per_event <= budget:  # a part of a large file, small enough to hold
            data = data.load()
    return data


__all__ = ["CHUNK_EVENTS", "STREAM_FRACTION", "StreamedEvents", "event_bytes", "open_events"]
