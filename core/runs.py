"""Run directories: what a training run writes, and how it is resumed.

    RUN/
      spec.toml          the resolved spec (every default, CLI overrides applied)
      run.json           the settings that determine the results (data, seeds, fractions, pT cut)
      data.json          the data description (content hash) and the split record (seed, sizes,
                         indices hash)
      results.json       every fraction's results and the summary (written when all are done)
      fraction-1/        one folder per training fraction (``fraction-0.1``, ...)
        metrics.jsonl    one JSON line per epoch and member: loss and validation metrics
        checkpoint.pt    the state after the last completed epoch (members, optimiser, best
                         epoch snapshot, history)
        results.json     final and best-validation test metrics per member, summaries

Every file is written atomically (temp file + rename, :mod:`symfw.core.io`), and the checkpoint
is the source of truth: after a kill, ``--resume`` reloads it and continues from the next epoch;
``metrics.jsonl`` is rewritten from the checkpoint's history. A resumed run checks that the
spec, the settings and the data (content hash, split hash) are those it started with, that its
JSON files have the structure symfw writes, and removes the temporary files a killed write left.

A run folder is claimed with an exclusive lock (:class:`FolderLock`, ``flock`` on ``RUN/.lock``)
held while it trains, so a second process on the same folder is refused instead of mixing two
runs. A folder that holds other files and is not symfw's (no ``.lock``, no ``run.json``) is
never written into (:func:`check_claimable`). Folder names made from spec names go through
:func:`safe_dirname`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputError, UsageError
from .io import TMP_SUFFIX, atomic_write, atomic_write_json, atomic_write_text, jsonable
from .spec import Spec

try:
    import fcntl
except ImportError:  # not POSIX: run folders are not locked
    fcntl = None

RUN_FILE = "run.json"
SPEC_FILE = "spec.toml"
DATA_FILE = "data.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = ".lock"
MAX_DIRNAME = 100  # characters of a folder name made from a spec name
COMPARE_MARKERS = (LOCK_FILE, "compare.json")  # what makes a compare output folder symfw's


def fraction_dirname(fraction: float) -> str:
    return f"fraction-{fraction:g}"


def safe_dirname(name: str) -> str:
    """A file-system-safe folder name for a spec name: characters other than letters, digits,
    ``_ . -`` become ``_``, leading and trailing dots and underscores go, at most ``MAX_DIRNAME``
    characters; ``spec`` if nothing is left. So ``../../x``, ``/abs``, NUL bytes or a 300-character
    name stay one folder inside the parent."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:MAX_DIRNAME].rstrip("._")
    return base or "spec"


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a symfw JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}") from None


def read_json_object(path: Path, required: dict[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """A JSON file holding an object with (at least) the ``required`` keys of the given types;
    anything else is a one-line :class:`UsageError` naming the file and the first problem."""
    obj = read_json(path)
    problem = structure_problem(obj, required or {})
    if problem:
        raise UsageError(f"{path}: not a symfw file of this kind ({problem}); remove it or choose another --out")
    return obj


def structure_problem(obj: Any, required: dict[str, type | tuple[type, ...]], where: str = "") -> str | None:
    """Why ``obj`` is not an object with the ``required`` keys and types, or None."""
    if not isinstance(obj, dict):
        return f"{where or 'the file'} holds {type(obj).__name__}, not an object"
    for key, kind in required.items():
        if key not in obj:
            return f"missing '{where}{key}'"
        if not isinstance(obj[key], kind) or isinstance(obj[key], bool) and bool not in _kinds(kind):
            return f"'{where}{key}' is {type(obj[key]).__name__}"
    return None


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


NUMBER = (int, float)
FRACTION_RESULTS = {"spec": str, "fraction": NUMBER, "n_train": int, "epochs": int, "parameters": int,
                    "train_time_s": NUMBER, "mode": str, "device": str, "members": list, "summary": dict,
                    "curves": dict}
SUMMARY = {"final_test": dict, "best_test": dict, "best_epoch": dict, "epochs_to_99": dict}
MEMBER = {"final": dict, "best": dict}


def fraction_results_problem(obj: Any) -> str | None:
    """Why ``obj`` is not a fraction's ``results.json`` as :func:`~symfw.core.training.final_results`
    writes it (top-level keys, the summary's, each member's final and best test metrics), or None."""
    problem = structure_problem(obj, FRACTION_RESULTS) or structure_problem(obj["summary"], SUMMARY, "summary.")
    if problem:
        return problem
    if not obj["members"]:
        return "'members' is empty"
    for i, member in enumerate(obj["members"]):
        problem = structure_problem(member, MEMBER, f"members[{i}].")
        for part in ("final", "best"):
            problem = problem or structure_problem(member[part], {"test": dict}, f"members[{i}].{part}.")
        if problem:
            return problem
    return None


def remove_orphans(root: Path, recursive: bool = True) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) that writes killed midway left in ``root``
    (and its subfolders); call it only while holding the folder's lock. Returns what was removed."""
    removed = []
    root = Path(root)
    for path in (root.rglob if recursive else root.glob)(f".*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_claimable(root: Path, markers: tuple[str, ...] = (LOCK_FILE, RUN_FILE), nested: bool = False) -> None:
    """Refuse to write into ``root`` when it exists and is not a folder, or is a folder that holds
    other files and none of the ``markers`` that make it symfw's (a lock file, a run record) —
    or, ``nested`` (a compare output), not only folders that are symfw's runs."""
    root = Path(root)
    try:
        if not root.exists():
            return
        if not root.is_dir():
            raise UsageError(f"{root}: exists and is not a directory; choose another --out")
        if any(True for _ in root.iterdir()) and not _symfw_folder(root, markers, nested):
            raise UsageError(f"{root}: a folder that holds other files and is not symfw's; "
                             "choose an empty or new folder for --out")
    except OSError as exc:
        raise OutputError(f"{root}: cannot read the folder: {exc.strerror or exc}") from None


def _symfw_folder(root: Path, markers: tuple[str, ...], nested: bool) -> bool:
    if any((root / m).exists() for m in markers):
        return True
    entries = list(root.iterdir())
    return nested and bool(entries) and all(
        e.is_dir() and _symfw_folder(e, (LOCK_FILE, RUN_FILE), nested) for e in entries)


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``ROOT/.lock`` (the folder and the file are made if
    missing), held until :meth:`release` (or the end of a ``with`` block, or of the process). A
    folder another process holds is a one-line :class:`UsageError`. The lock file stays: removing
    it would let two processes lock two different files."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot write: {exc.strerror or exc}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise UsageError(f"{self.root}: another symfw process is using this folder (it is locked); "
                                 "wait for it to finish or choose another --out") from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if diff:
                return diff
        return None
    return None if a == b else f"{where}: {a!r} then, {b!r} now"


@dataclass
class RunDir:
    """One run's folder (see the module docstring for its layout)."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    # -- top level ---------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return (self.root / RUN_FILE).is_file()

    def start(self, spec: Spec, settings: dict[str, Any], data: dict[str, Any], resume: bool) -> None:
        """Record a new run, or (``resume``) check that the existing one matches.

        Without ``resume`` an existing run is an error, so nothing is overwritten by accident.
        """
        record = jsonable({"settings": settings, "data": data})
        if self.started:
            if not resume:
                raise UsageError(
                    f"{self.root} already holds a run; pass --resume to continue it or choose another --out"
                )
            old = read_json_object(self.root / RUN_FILE, {"settings": dict})
            old_data = read_json_object(self.root / DATA_FILE) if (self.root / DATA_FILE).is_file() else {}
            try:
                old_spec = (self.root / SPEC_FILE).read_text() if (self.root / SPEC_FILE).is_file() else ""
            except UnicodeDecodeError:
                old_spec = None
            if old_spec != spec.to_toml():
                raise UsageError(f"{self.root}: cannot resume: the spec differs from the run's {SPEC_FILE}")
            diff = _first_difference(old.get("settings"), record["settings"]) or _first_difference(
                old_data, record["data"]
            )
            if diff:
                raise UsageError(f"{self.root}: cannot resume with different settings ({diff})")
            for fraction in self.root.glob("fraction-*"):
                for results in [fraction / RESULTS_FILE, *fraction.glob(f"member-*/{RESULTS_FILE}")]:
                    if results.exists():
                        FractionDir(results.parent).results()  # a damaged record is refused before training
            remove_orphans(self.root)
            return
        check_claimable(self.root)
        atomic_write_text(self.root / SPEC_FILE, spec.to_toml())
        atomic_write_json(self.root / DATA_FILE, record["data"])
        # run.json last: its presence marks a started run
        atomic_write_json(self.root / RUN_FILE, {"settings": record["settings"]})

    def settings(self) -> dict[str, Any]:
        return read_json_object(self.root / RUN_FILE, {"settings": dict})["settings"]

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.root / RESULTS_FILE, jsonable(results))

    def results(self) -> dict[str, Any]:
        return read_json_object(self.root / RESULTS_FILE, {"spec": str, "fractions": list})

    def lock(self) -> FolderLock:
        return FolderLock(self.root)

    # -- per fraction ----------------------------------------------------------------------
    def fraction(self, fraction: float) -> "FractionDir":
        return FractionDir(self.root / fraction_dirname(fraction))


@dataclass
class FractionDir:
    """The files of one (spec, training fraction) ensemble."""

    root: Path

    @property
    def done(self) -> bool:
        return (self.root / RESULTS_FILE).is_file()

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.root / RESULTS_FILE, jsonable(results))

    def results(self) -> dict[str, Any]:
        path = self.root / RESULTS_FILE
        obj = read_json(path)
        problem = fraction_results_problem(obj)
        if problem:
            raise UsageError(f"{path}: not a symfw results file ({problem}); remove it to train this fraction again")
        return obj

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """All epoch records so far as JSON lines (one line per epoch and member)."""
        lines = []
        for record in history:
            for member in record["members"]:
                lines.append(json.dumps(jsonable({"epoch": record["epoch"], **member})))
        atomic_write_text(self.root / METRICS_FILE, "".join(line + "\n" for line in lines))

    def metrics(self) -> list[dict[str, Any]]:
        path = self.root / METRICS_FILE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def checkpoint_path(self) -> Path:
        return self.root / CHECKPOINT_FILE

    @property
    def has_checkpoint(self) -> bool:
        """Whether a checkpoint exists (a directory in its place is refused when loaded)."""
        return self.checkpoint_path.exists()
