"""The training checkpoint: a typed, validated record of an ensemble after an epoch.

One :class:`Checkpoint` per (spec, training fraction) ensemble, written after every epoch
(``checkpoint.pt``, atomically) and read back by ``--resume``, by the executors that merge
per-seed tasks (:meth:`Checkpoint.merge`) and by :func:`symfw.core.training.load_members`.

Loading validates before anything is used: the file must be a symfw checkpoint of this
format version, with every field of the right type; parameters and buffers must have the
names, shapes and dtypes the spec's ensemble expects (when given), hold finite values, and
match the SHA-256 checksum of their bytes recorded at save time — so a file damaged on disk,
truncated, or from another model is refused with one line (:class:`CheckpointError`, exit
code 2) rather than loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError
from .io import atomic_write

FORMAT = "symfw-checkpoint"
VERSION = 2
Tensors = dict[str, torch.Tensor]


class CheckpointError(UsageError):
    """A checkpoint that cannot be used (damaged, foreign, or of another model)."""


@dataclass
class Checkpoint:
    """An ensemble after ``epoch`` epochs: stacked (member-first) state, optimiser, best epoch.

    ``best_score[m]`` is member m's best validation value of the task's primary metric so far
    (None before the first epoch), reached in ``best_epoch[m]`` with state ``best_params`` /
    ``best_buffers``. ``history`` holds one JSON-able record per epoch.
    """

    epoch: int
    seeds: list[int]
    params: Tensors
    buffers: Tensors
    optimizer: dict[str, Any]
    best_params: Tensors
    best_buffers: Tensors
    best_score: list[float | None]
    best_epoch: list[int]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_time_s: float = 0.0
    mode: str = "sequential"
    mode_reason: str | None = None

    # -- integrity ---------------------------------------------------------------------------
    def _tensors(self) -> list[tuple[str, torch.Tensor]]:
        out = []
        for part in ("params", "buffers", "best_params", "best_buffers"):
            out += [(f"{part}.{k}", v) for k, v in sorted(getattr(self, part).items())]
        for i, state in sorted(self.optimizer.get("state", {}).items()):
            out += [(f"optimizer.{i}.{k}", v) for k, v in sorted(state.items()) if isinstance(v, torch.Tensor)]
        return out

    def checksum(self) -> str:
        h = hashlib.sha256()
        for name, t in self._tensors():
            h.update(name.encode())
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        # the fields as they are (``asdict`` would deep-copy every tensor and the whole history)
        record = {"format": FORMAT, "version": VERSION, "checksum": self.checksum(),
                  **{f.name: getattr(self, f.name) for f in fields(self)}}
        atomic_write(Path(path), lambda tmp: torch.save(record, tmp))

    @classmethod
    def load(cls, path: str | Path, expected: tuple[Tensors, Tensors] | None = None,
             device: str | torch.device = "cpu") -> "Checkpoint":
        """Read and validate ``path``; ``expected`` = (params, buffers) of one member (shapes and
        dtypes; meta tensors will do), which the stacked tensors must match."""
        path = Path(path)

        def fail(why: str):
            raise CheckpointError(f"{path}: {why}; remove it to restart")

        if not path.is_file():
            fail("not a checkpoint file")
        try:
            raw = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable for whatever reason: one line
            fail(f"cannot read the checkpoint ({type(exc).__name__})")
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            fail("not a symfw checkpoint")
        if raw.get("version") != VERSION:
            fail(f"checkpoint format version {raw.get('version')!r}, this symfw reads {VERSION}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in raw]
        if missing:
            fail(f"missing {', '.join(missing)}")
        ckpt = cls(**{n: raw[n] for n in names})
        ckpt.require(expected, path)
        if ckpt.checksum() != raw.get("checksum"):
            fail("its tensor data do not match the recorded checksum (the file is damaged)")
        return ckpt

    def require(self, expected: tuple[Tensors, Tensors] | None, path: str | Path) -> None:
        """Raise :class:`CheckpointError` naming ``path`` if :meth:`problem` finds one."""
        problem = self.problem(expected)
        if problem:
            raise CheckpointError(f"{path}: {problem}; remove it to restart")

    def problem(self, expected: tuple[Tensors, Tensors] | None = None) -> str | None:
        """What is wrong with this checkpoint's structure and values, or None."""
        M = len(self.seeds) if isinstance(self.seeds, list) else -1
        if M < 1 or not all(isinstance(s, int) for s in self.seeds):
            return "seeds must be a non-empty list of integers"
        if not isinstance(self.epoch, int) or self.epoch < 0:
            return "epoch must be a non-negative integer"
        for name in ("best_score", "best_epoch"):
            if not isinstance(getattr(self, name), list) or len(getattr(self, name)) != M:
                return f"{name} must hold one entry per member ({M})"
        if not isinstance(self.history, list) or len(self.history) != self.epoch:
            return f"history must hold one record per epoch ({self.epoch})"
        if not all(isinstance(r, dict) and len(r.get("members", ())) == M for r in self.history):
            return "every history record needs one entry per member"
        if not isinstance(self.optimizer, dict) or "state" not in self.optimizer:
            return "optimizer is not an optimizer state"
        for part in ("params", "buffers", "best_params", "best_buffers"):
            tensors = getattr(self, part)
            if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
                return f"{part} must map names to tensors"
            if expected is not None:
                want = expected[part.endswith("buffers")]
                if set(tensors) != set(want):
                    diff = sorted(set(tensors) ^ set(want))
                    return f"{part} do not match the spec's model (e.g. '{diff[0]}')"
                for k, v in tensors.items():
                    w = want[k]
                    shape = (M, *w.shape)
                    if tuple(v.shape) != shape or v.dtype != w.dtype:
                        return (f"{part}.{k} is {tuple(v.shape)} {v.dtype}, the spec's model needs "
                                f"{shape} {w.dtype}")
            for k, v in tensors.items():
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    return f"{part}.{k} holds NaN or infinite values"
        return None

    # -- merging ---------------------------------------------------------------------------------
    @classmethod
    def merge(cls, parts: Sequence["Checkpoint"]) -> "Checkpoint":
        """One ensemble from checkpoints of disjoint members trained alike (same epochs):
        states and AdamW moments stacked by member, histories joined, times summed."""
        if len({p.epoch for p in parts}) != 1:
            raise CheckpointError("cannot merge checkpoints at different epochs")

        def stack(name: str) -> Tensors:
            return {k: torch.cat([getattr(p, name)[k] for p in parts]) for k in getattr(parts[0], name)}

        first = parts[0].optimizer
        optimizer = {"param_groups": first["param_groups"], "state": {}}
        for i, state in first["state"].items():
            optimizer["state"][i] = {
                k: torch.cat([p.optimizer["state"][i][k] for p in parts]) if v.dim() > 0 else v
                for k, v in state.items()
            }
        history, offset = [], 0
        for e in range(parts[0].epoch):
            members, offset = [], 0
            for p in parts:
                members += [{**m, "member": offset + j} for j, m in enumerate(p.history[e]["members"])]
                offset += len(p.seeds)
            history.append({**parts[0].history[e], "members": members})
        modes = {(p.mode, p.mode_reason) for p in parts}
        mode, reason = modes.pop() if len(modes) == 1 else ("mixed", "; ".join(sorted(f"{a}: {b}" for a, b in modes)))
        return cls(
            epoch=parts[0].epoch,
            seeds=[s for p in parts for s in p.seeds],
            params=stack("params"),
            buffers=stack("buffers"),
            optimizer=optimizer,
            best_params=stack("best_params"),
            best_buffers=stack("best_buffers"),
            best_score=[s for p in parts for s in p.best_score],
            best_epoch=[e for p in parts for e in p.best_epoch],
            history=history,
            train_time_s=float(sum(p.train_time_s for p in parts)),
            mode=mode,
            mode_reason=reason,
        )
