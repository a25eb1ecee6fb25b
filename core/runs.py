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
spec, the settings and the data (content hash, split hash) are those it started with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .io import atomic_write, atomic_write_json, atomic_write_text
from .metrics import jsonable
from .spec import Spec

RUN_FILE = "run.json"
SPEC_FILE = "spec.toml"
DATA_FILE = "data.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"


def fraction_dirname(fraction: float) -> str:
    return f"fraction-{fraction:g}"


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}") from None


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
            old = read_json(self.root / RUN_FILE)
            old_data = read_json(self.root / DATA_FILE) if (self.root / DATA_FILE).is_file() else {}
            old_spec = (self.root / SPEC_FILE).read_text() if (self.root / SPEC_FILE).is_file() else ""
            if old_spec != spec.to_toml():
                raise UsageError(f"{self.root}: cannot resume: the spec differs from the run's {SPEC_FILE}")
            diff = _first_difference(old.get("settings"), record["settings"]) or _first_difference(
                old_data, record["data"]
            )
            if diff:
                raise UsageError(f"{self.root}: cannot resume with different settings ({diff})")
            return
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root}: exists and is not a directory")
        atomic_write_text(self.root / SPEC_FILE, spec.to_toml())
        atomic_write_json(self.root / DATA_FILE, record["data"])
        # run.json last: its presence marks a started run
        atomic_write_json(self.root / RUN_FILE, {"settings": record["settings"]})

    def settings(self) -> dict[str, Any]:
        return read_json(self.root / RUN_FILE)["settings"]

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.root / RESULTS_FILE, jsonable(results))

    def results(self) -> dict[str, Any]:
        return read_json(self.root / RESULTS_FILE)

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
        return read_json(self.root / RESULTS_FILE)

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
