"""Atomic file writes: write a temporary file in the same folder, then rename it into place.

An interrupted run never leaves a half-written file under the final name. A path that cannot
be written (below a file, a read-only or full file system, ``/proc``) is an
:class:`~symfw.core.errors.OutputError` (one line, exit code 2), and :func:`check_writable`
finds it before any work starts. JSON is written strictly: NaN and infinities become ``null``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

TMP_SUFFIX = ".tmp"  # temporary files are ``.<name>.<random>.tmp`` next to their target


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically.

    The file is flushed to disk before the rename and the folder after it, so that even a power
    loss leaves either the old file or the complete new one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except (OSError, ValueError) as exc:
        raise _output_error(path, exc) from exc
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(Path(tmp))
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _output_error(path, exc) from exc
        raise
    _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _output_error(path: Path, exc: BaseException) -> OutputError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return OutputError(f"{path}: cannot write: {reason}")


def check_writable(path: Path | str, what: str = "--out", directory: bool = True) -> None:
    """Refuse, before any work, an output ``path`` (a folder, or a file when not ``directory``)
    that cannot be written: the wrong kind of thing there, below a file, or a folder where no file
    can be created (read-only, full, ``/proc``). Creates nothing: the probe file is removed."""
    path = Path(path)
    try:
        if path.exists() and path.is_dir() != directory:
            raise OutputError(f"{what} {path}: " + ("exists and is not a directory" if directory else "is a directory"))
        base = path if path.is_dir() else path.parent
        while not base.exists() and base != base.parent:
            base = base.parent
        if not base.is_dir():
            raise OutputError(f"{what} {path}: {base} is a file, not a directory")
        fd, probe = tempfile.mkstemp(prefix=".symfw-probe.", suffix=TMP_SUFFIX, dir=base)
        try:
            os.write(fd, b"symfw")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OutputError(f"{what} {path}: cannot write there: {reason}") from None


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it: symfw writes from one thread)."""
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync(path: Path | str, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def jsonable(obj: Any) -> Any:
    """Replace nan/inf by None and NumPy scalars by Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Strict JSON (NaN and infinities as ``null``: no bare ``NaN`` tokens), written atomically."""
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")
