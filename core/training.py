"""Training: ensembles of one spec on a seeded split, with held-out metrics every epoch.

Defaults are the hybrid paper's (BCE with logits, AdamW with weight decay 0.01, batch 128,
100 epochs), read from the spec's ``[training]`` table. Events and their weights stay as
tensors on the device; each member draws its own batch order (a seeded permutation per epoch)
and batches are gathered by index — no per-sample ``Dataset``.

After every epoch each member is evaluated on the **validation** split (loss, AUC, accuracy,
background rejection at ε_S = 0.3 and 0.5). The **test** split is evaluated once, at the end,
for the final model and for the member's best-validation epoch; it is never used to select
anything.

Reproducibility: member m of base seed b initialises with ``member_seeds(b, M)[m]`` and its
epoch-e batch order comes from a generator seeded by (member seed, e); the global torch RNG
(used by random penalties) is reseeded at the start of every epoch. Hence a run resumed from
its last checkpoint ends with exactly the metrics of an uninterrupted one (CPU, same threads).

The Python API::

    from symfw.core.training import RunSettings, run_training
    results = run_training(spec, data, RunSettings(data="zmumu", seeds=3), out="runs/hybrid")
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics as M
from .data import EventData, Split, make_split
from .ensemble import Ensemble, PenaltyTerm
from .errors import DataError, UsageError
from .interfaces import Batch
from .model import SymfwModel
from .registry import get_registry
from .runs import FractionDir, RunDir
from .spec import PenaltyRef, Spec

EpochCallback = Callable[[dict[str, Any]], None]
WEIGHT_CURVE_BINS = 20
EXTRAPOLATION_BINS = 4  # on each side of the pT cut


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RunSettings:
    """What determines a run's results besides the spec (recorded in ``run.json``).

    ``seed`` is the base seed: it seeds the data generator, the split (shared by every member
    and every spec) and, through :func:`member_seeds`, each member's initialisation and batch
    order. ``train_pt_max`` restricts training and validation to events whose leading-particle
    pT is below it (the extrapolation protocol); the test split keeps every event.
    """

    data: str = "zmumu"
    events: int | None = None
    seed: int = 0
    seeds: int = 1
    fractions: tuple[float, ...] = (1.0,)
    train_pt_max: float | None = None
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)

    def __post_init__(self):
        if self.seeds < 1:
            raise UsageError(f"--seeds must be >= 1, got {self.seeds}")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed must be in [0, 2^32), got {self.seed}")
        if not self.fractions:
            raise UsageError("--fractions: give at least one fraction")
        for f in self.fractions:
            if not (0 < f <= 1) or not math.isfinite(f):
                raise UsageError(f"--fractions: each fraction must be in (0, 1], got {f:g}")
        if len(set(self.fractions)) != len(self.fractions):
            raise UsageError("--fractions: fractions must be distinct")
        if self.events is not None and self.events < 1:
            raise UsageError(f"--events must be >= 1, got {self.events}")
        if self.train_pt_max is not None and not (self.train_pt_max > 0 and math.isfinite(self.train_pt_max)):
            raise UsageError(f"--train-pt-max must be a positive number of GeV, got {self.train_pt_max:g}")

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["fractions"] = list(self.fractions)
        out["split"] = list(self.split)
        return out


def derive_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)


def penalty_seed(seeds: Sequence[int], epoch: int) -> int:
    """Seed of the random draws of penalties in ``epoch`` for the members ``seeds`` trained together
    (members trained as separate tasks draw independently)."""
    return derive_seed(*seeds, 2, epoch)


def member_seeds(base_seed: int, n: int) -> list[int]:
    """Member seeds for base seed ``base_seed``; member m's seed does not depend on n."""
    return [derive_seed(base_seed, 1, m) for m in range(n)]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:N``) or ``auto`` (cuda when available)."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UsageError(f"--device {name}: not a valid CUDA device name") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise UsageError(f"--device must be cpu, cuda or auto, got '{name}'")


def with_training_overrides(spec: Spec, **overrides: Any) -> Spec:
    """The spec with ``[training]`` values replaced (None keeps the spec's); validated."""
    from pydantic import ValidationError

    from .spec import Training

    values = spec.training.model_dump()
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        training = Training.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    return spec.model_copy(update={"training": training})


def leading_pt(data: EventData) -> np.ndarray:
    """pT of the leading (highest-pT) real particle of every event, in GeV."""
    pt = np.hypot(data.p4[..., 1], data.p4[..., 2]) * data.mask
    return pt.max(axis=1)


def restrict_pt(split: Split, lead_pt: np.ndarray, pt_max: float, labels: np.ndarray) -> Split:
    """Training and validation events below ``pt_max``; the test split keeps every event."""
    train = split.train[lead_pt[split.train] < pt_max]
    val = split.val[lead_pt[split.val] < pt_max]
    for name, part in (("training", train), ("validation", val)):
        if len(np.unique(labels[part])) < 2:
            raise DataError(
                f"--train-pt-max {pt_max:g}: the {name} split below the cut has "
                f"{'no events' if len(part) == 0 else 'only one class'}; raise the cut or use more events"
            )
    return Split(train, val, split.test, split.seed, split.fractions, split.fraction)


def check_data_fits(spec: Spec, data: EventData, registry=None) -> None:
    """One untrained pass of ``spec``'s model on two events: a model that cannot take the data (a
    fixed-size model and events with another number of particles) is a DataError before anything
    is written."""
    from .model import build_model

    with torch.random.fork_rng(devices=[]):
        model = build_model(spec, registry).eval()
    t = data.subset(np.arange(min(2, len(data)))).tensors()
    try:
        with torch.no_grad():
            model(t["p4"], t["mask"])
    except Exception as exc:  # noqa: BLE001 - any failure here is a mismatch of model and data
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"spec '{spec.name}' (n_particles = {spec.n_particles}) cannot take these events with "
            f"{data.p4.shape[1]} particle slots: {detail}"
        ) from None


def penalty_terms(spec: Spec, group, registry=None) -> list[tuple[PenaltyRef, Any]]:
    """The spec's penalties, constructed as ``Penalty(options, group=model.group)``."""
    registry = registry or get_registry()
    out = []
    for ref in spec.penalties:
        cls = registry.get("penalty", ref.name)
        out.append((ref, cls(cls.Options.model_validate(ref.options), group=group)))
    return out


def lam_at(ref: PenaltyRef, epoch: int) -> float:
    """λ in (0-based) epoch ``epoch``: linear ramp from 0 over ``warmup_epochs``, then λ."""
    if ref.warmup_epochs <= 0:
        return float(ref.lam)
    return float(ref.lam) * min(1.0, epoch / ref.warmup_epochs)


# --------------------------------------------------------------------------- one ensemble


@dataclass
class Tensors:
    """Events on the training device, and NumPy copies of what the metrics need."""

    p4: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor
    label_np: np.ndarray
    weight_np: np.ndarray
    lead_pt: np.ndarray

    @classmethod
    def from_data(cls, data: EventData, device: torch.device, dtype: torch.dtype = torch.float32) -> "Tensors":
        t = data.tensors(device, dtype=dtype)
        return cls(
            t["p4"], t["mask"], t["label"], t["weight"],
            data.label.astype(np.float64), data.weight.astype(np.float64), leading_pt(data),
        )


@dataclass
class EnsembleJob:
    """One ensemble of ``spec`` on one split (one training fraction)."""

    spec: Spec
    split: Split
    seeds: list[int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    vectorize: str = "auto"  # auto | yes | no
    train_pt_max: float | None = None
    registry: Any = None
    base_seed: int = 0


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch; a last batch of one event is dropped (batch norm needs 2)."""
    out = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(out) > 1 and out[-1][1] - out[-1][0] < 2:
        out.pop()
    return out


def adamw(params: Sequence[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, with the fused kernel where the device supports it (same update, fewer passes)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def batch_order(train_idx: torch.Tensor, seeds: Sequence[int], epoch: int, device) -> torch.Tensor:
    """(M, n) event indices: member m's shuffled training events in ``epoch``."""
    perms = []
    for s in seeds:
        g = torch.Generator().manual_seed(derive_seed(s, epoch))
        perms.append(train_idx[torch.randperm(len(train_idx), generator=g)])
    return torch.stack(perms).to(device)


def gather(tensors: Tensors, order: torch.Tensor, start: int, stop: int) -> Batch:
    """One batch per member, gathered by index from the device tensors."""
    idx = order[:, start:stop]
    return Batch(tensors.p4[idx], tensors.mask[idx], tensors.label[idx], tensors.weight[idx])


def train_epoch(
    ens: Ensemble,
    opt: torch.optim.Optimizer,
    tensors: Tensors,
    order: torch.Tensor,
    steps: Sequence[tuple[int, int]],
    terms: Sequence[PenaltyTerm] = (),
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over ``order`` in ``steps``; returns summed BCE (M,), summed penalty (M,), events."""
    ens.train()
    loss_sum = torch.zeros(len(ens), device=order.device, dtype=torch.float64)
    pen_sum = torch.zeros_like(loss_sum)
    count = 0
    for start, stop in steps:
        bce, pen = ens.backward(gather(tensors, order, start, stop), terms)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += bce.double() * (stop - start)
        pen_sum += pen.double() * (stop - start)
        count += stop - start
    return loss_sum, pen_sum, count


def _member_metrics(tensors: Tensors, index: np.ndarray, logits: torch.Tensor) -> list[dict[str, float]]:
    y, w = tensors.label_np[index], tensors.weight_np[index]
    logits_np = logits.detach().double().cpu().numpy()
    label_t = torch.as_tensor(y, dtype=torch.float64)
    weight_t = torch.as_tensor(w, dtype=torch.float64)
    out = []
    for row in logits_np:
        m = M.evaluate(y, row, w)
        m["loss"] = float(M.weighted_bce_with_logits(torch.as_tensor(row), label_t, weight_t))
        out.append(m)
    return out


def train_ensemble(
    job: EnsembleJob,
    tensors: Tensors,
    directory: FractionDir | None = None,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train the ensemble, evaluate it, write its files (if ``directory``) and return results."""
    spec, cfg, device = job.spec, job.spec.training, job.device
    registry = job.registry or get_registry()
    train_idx = torch.as_tensor(job.split.train, dtype=torch.long)
    val_idx, test_idx = job.split.val, job.split.test
    val_p4, val_mask = tensors.p4[torch.as_tensor(val_idx, device=device)], tensors.mask[torch.as_tensor(val_idx, device=device)]

    ens = Ensemble(
        spec, job.seeds, device=device, registry=registry, vectorize=job.vectorize != "no", dtype=tensors.p4.dtype
    )
    opt = adamw(ens.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    penalties = penalty_terms(spec, ens.base.group, registry)
    steps = batches(len(train_idx), cfg.batch_size)

    def epoch_order(epoch: int) -> torch.Tensor:
        return batch_order(train_idx, job.seeds, epoch, device)

    ckpt = directory.load_checkpoint(device) if (directory is not None and resume) else None
    if ckpt is not None and ckpt.get("mode") == "ddp":  # members at different epochs: symfw.core.distributed
        raise UsageError(
            f"{directory.root}: the checkpoint was written by data-parallel training; resume it with torchrun or --ddp"
        )
    if ckpt is not None:
        ens.load_state((ckpt["params"], ckpt["buffers"]))
        opt.load_state_dict(ckpt["optimizer"])
        history, start_epoch, train_time = ckpt["history"], ckpt["epoch"], ckpt["train_time_s"]
        mode, mode_reason = ckpt["mode"], ckpt["mode_reason"]
        best_state = (ckpt["best"]["params"], ckpt["best"]["buffers"])
        best_auc, best_epoch = list(ckpt["best"]["auc"]), list(ckpt["best"]["epoch"])
        directory.write_metrics(history)  # a kill between the checkpoint and this file loses nothing
    else:
        history, start_epoch, train_time = [], 0, 0.0
        mode, mode_reason = "vectorized", None
        if job.vectorize == "no":
            mode, mode_reason = "sequential", "requested"
        elif job.vectorize == "auto" and len(job.seeds) == 1:
            mode, mode_reason = "sequential", "one member"
        elif job.vectorize == "auto":
            probe = [PenaltyTerm(ref.name, pen, 1.0) for ref, pen in penalties]
            reason = ens.probe_vectorized(gather(tensors, epoch_order(0), *steps[0]), probe)
            if reason is not None:
                mode, mode_reason = "sequential", f"vmap failed: {reason}"
        best_state = ens.state()
        best_auc, best_epoch = [-math.inf] * len(ens), [0] * len(ens)
    ens.vectorize = mode == "vectorized"

    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(penalty_seed(job.seeds, epoch))
            terms = [PenaltyTerm(ref.name, pen, lam_at(ref, epoch)) for ref, pen in penalties]
            loss_sum, pen_sum, count = train_epoch(ens, opt, tensors, epoch_order(epoch), steps, terms)
            val = _member_metrics(tensors, val_idx, ens.predict(val_p4, val_mask))
            for m, mm in enumerate(val):
                auc = mm["auc"] if math.isfinite(mm["auc"]) else -math.inf
                if auc > best_auc[m]:
                    best_auc[m], best_epoch[m] = auc, epoch + 1
                    with torch.no_grad():
                        for src, dst in zip((ens.params, ens.buffers), best_state):
                            for k in dst:
                                dst[k][m].copy_(src[k][m])
            train_time += time.perf_counter() - t0
            losses, pens = (loss_sum / count).tolist(), (pen_sum / count).tolist()
            record = {
                "epoch": epoch + 1,
                "members": [
                    {
                        "member": m,
                        "seed": job.seeds[m],
                        "loss": losses[m],
                        **({"penalty": pens[m], "lam": {t.name: t.lam for t in terms}} if penalties else {}),
                        "val": val[m],
                    }
                    for m in range(len(ens))
                ],
            }
            history.append(M.jsonable(record))
            if directory is not None:
                params, buffers = ens.state()
                directory.save_checkpoint(
                    {
                        "epoch": epoch + 1,
                        "params": params,
                        "buffers": buffers,
                        "optimizer": opt.state_dict(),
                        "best": {"params": best_state[0], "buffers": best_state[1], "auc": best_auc, "epoch": best_epoch},
                        "history": history,
                        "train_time_s": train_time,
                        "mode": mode,
                        "mode_reason": mode_reason,
                        "seeds": job.seeds,
                    }
                )
                directory.write_metrics(history)
            if on_epoch is not None:
                on_epoch({**record, "epochs": cfg.epochs, "spec": spec.name, "fraction": job.split.fraction,
                          "lr": cfg.lr})

    results = _final_results(job, ens, tensors, history, best_state, best_epoch, train_time, mode, mode_reason)
    if directory is not None:
        directory.write_results(results)
    return results


# --------------------------------------------------------------------------- evaluation


def _epochs_to(curve: Sequence[float], level: float) -> int | None:
    for i, v in enumerate(curve):
        if v is not None and v >= level:
            return i + 1
    return None


def _summary(per_member: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: M.mean_std([m[k] for m in per_member]) for k in M.METRICS}


def _final_results(job, ens, tensors, history, best_state, best_epoch, train_time, mode, mode_reason):
    device = job.device
    test_t = torch.as_tensor(job.split.test, device=device)
    test_p4, test_mask = tensors.p4[test_t], tensors.mask[test_t]
    final_logits = ens.predict(test_p4, test_mask)
    best_logits = ens.predict(test_p4, test_mask, state=best_state)
    final_test = _member_metrics(tensors, job.split.test, final_logits)
    best_test = _member_metrics(tensors, job.split.test, best_logits)
    n_epochs = len(history)
    val_auc = [[M.from_json(r["members"][m]["val"]["auc"]) for m in range(len(ens))] for r in history]
    members = []
    for m in range(len(ens)):
        curve = [row[m] for row in val_auc]
        final_auc = curve[-1]
        members.append(
            {
                "member": m,
                "seed": job.seeds[m],
                "final": {"epoch": n_epochs, "val": history[-1]["members"][m]["val"], "test": final_test[m]},
                "best": {
                    "epoch": best_epoch[m],
                    "val": history[best_epoch[m] - 1]["members"][m]["val"] if best_epoch[m] else None,
                    "test": best_test[m],
                },
                "epochs_to_99": _epochs_to(curve, 0.99 * final_auc) if math.isfinite(final_auc) else None,
            }
        )
    at_epochs = [e for e in (1, 5, 10, 25, 50, 100) if e <= n_epochs]
    results: dict[str, Any] = {
        "spec": job.spec.name,
        "fraction": job.split.fraction,
        "n_train": len(job.split.train),
        "n_val": len(job.split.val),
        "n_test": len(job.split.test),
        "epochs": n_epochs,
        "batch_size": job.spec.training.batch_size,
        "lr": job.spec.training.lr,
        "weight_decay": job.spec.training.weight_decay,
        "mode": mode,
        "mode_reason": mode_reason,
        "device": str(device),
        "parameters": ens.n_parameters,
        "train_time_s": train_time,
        "members": members,
        "curves": {
            "epoch": list(range(1, n_epochs + 1)),
            "val_auc": val_auc,
            "loss": [[r["members"][m]["loss"] for m in range(len(ens))] for r in history],
        },
        "summary": {
            "final_test": _summary(final_test),
            "best_test": _summary(best_test),
            "best_epoch": M.mean_std(best_epoch),
            "epochs_to_99": M.mean_std([m["epochs_to_99"] for m in members]),
            "val_auc_at": {str(e): M.mean_std(val_auc[e - 1]) for e in at_epochs},
        },
        "general_weight": general_weight_curve([ens.member(m) for m in range(len(ens))], test_p4, test_mask),
        "extrapolation": None,
    }
    if job.train_pt_max is not None:
        results["extrapolation"] = extrapolation(
            tensors.label_np[job.split.test],
            final_logits.double().cpu().numpy(),
            tensors.weight_np[job.split.test],
            tensors.lead_pt[job.split.test],
            job.train_pt_max,
        )
    return M.jsonable(results)


@torch.no_grad()
def general_weight_curve(
    models: Sequence[SymfwModel], p4: torch.Tensor, mask: torch.Tensor, bins: int = WEIGHT_CURVE_BINS
) -> dict[str, Any] | None:
    """The learned weight of the general subnet vs leading pT (hybrid paper, Fig. 5).

    Each model's own ``general_weight`` (its combiner's weight of its breaking context) is
    evaluated on the events and averaged in ``bins`` leading-pT bins of equal population
    (quantiles); a bin's pT is the mean pT of its events. The curve is the mean over models ±
    their standard deviation. None when the models' combiner learns no weight.
    """
    pt = (torch.hypot(p4[..., 1], p4[..., 2]) * mask).amax(1).double().cpu().numpy()
    edges = np.unique(np.quantile(pt, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([pt.min(), pt.min() + 1e-9])
    which = np.clip(np.searchsorted(edges, pt, side="right") - 1, 0, len(edges) - 2)
    bins = len(edges) - 1
    centers = [float(pt[which == b].mean()) if (which == b).any() else math.nan for b in range(bins)]
    per_model = []
    for model in models:
        w = model.general_weight(p4, mask)
        if w is None:
            return None
        w = w.double().cpu().numpy()
        per_model.append([float(w[which == b].mean()) if (which == b).any() else math.nan for b in range(bins)])
    arr = np.asarray(per_model)
    counts = [int((which == b).sum()) for b in range(bins)]
    return {
        "pt_edges": edges.tolist(),
        "pt_centers": centers,
        "n": counts,
        "mean": arr.mean(axis=0).tolist(),
        "std": (arr.std(axis=0, ddof=1) if len(arr) > 1 else np.zeros(bins)).tolist(),
        "per_member": arr.tolist(),
    }


def extrapolation(
    labels: np.ndarray,
    logits: np.ndarray,
    weights: np.ndarray,
    pt: np.ndarray,
    pt_max: float,
    bins: int = EXTRAPOLATION_BINS,
) -> dict[str, Any]:
    """Test AUC and accuracy in leading-pT bins below and above the training cut ``pt_max``.

    ``logits`` is (members, n). Below and above the cut, bin edges are quantiles of the test
    events' pT (``bins`` bins each side), so every bin holds a similar number of events.
    """
    below, above = pt < pt_max, pt >= pt_max
    edges: list[float] = []
    if below.any():
        e = np.quantile(pt[below], np.linspace(0, 1, bins + 1))
        e[-1] = pt_max
        edges += e[:-1].tolist()
    edges.append(pt_max)
    if above.any():
        e = np.quantile(pt[above], np.linspace(0, 1, bins + 1))
        e[-1] = np.nextafter(e[-1], np.inf)
        edges += e[1:].tolist()
    edges = sorted(set(edges))
    per_member = [M.binned(labels, row, weights, pt, edges) for row in logits]
    out_bins = []
    for b in range(len(edges) - 1):
        cells = [pm[b] for pm in per_member]
        in_bin = (pt >= edges[b]) & (pt < edges[b + 1])
        out_bins.append(
            {
                "lo": edges[b],
                "hi": edges[b + 1],
                "pt_mean": float(pt[in_bin].mean()) if in_bin.any() else math.nan,
                "n": cells[0]["n"],
                "side": "below" if edges[b + 1] <= pt_max else "above",
                "auc": M.mean_std([c["auc"] for c in cells]),
                "accuracy": M.mean_std([c["accuracy"] for c in cells]),
            }
        )
    sides = {}
    for side, sel in (("below", below), ("above", above)):
        if sel.any():
            member_metrics = [M.evaluate(labels[sel], row[sel], weights[sel]) for row in logits]
            sides[side] = {"n": int(sel.sum()), **_summary(member_metrics)}
        else:
            sides[side] = None
    return {"pt_max": pt_max, "bins": out_bins, **sides}


# --------------------------------------------------------------------------- a whole run


def prepare_split(data: EventData, settings: RunSettings) -> Split:
    """The seeded split of a run, restricted below ``train_pt_max`` when set."""
    split = make_split(data.label, settings.seed, settings.split)
    if settings.train_pt_max is not None:
        split = restrict_pt(split, leading_pt(data), settings.train_pt_max, data.label)
    return split


def run_training(
    spec: Spec,
    data: EventData,
    settings: RunSettings,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
    vectorize: str = "auto",
    registry=None,
    on_epoch: EpochCallback | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Train ``settings.seeds`` members of ``spec`` for every training fraction.

    With ``out``, the run directory is written (see :mod:`symfw.core.runs`) and ``resume``
    continues an interrupted run there; fractions already finished are read back. ``vectorize``
    is ``auto`` (vmap when the model and penalties allow it), ``yes`` or ``no`` (sequential).
    Models train in float32 unless ``dtype`` says otherwise.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    if vectorize not in ("auto", "yes", "no"):
        raise UsageError(f"vectorize must be auto, yes or no, got '{vectorize}'")
    split = prepare_split(data, settings)
    check_data_fits(spec, data, registry)
    data_record = {"data": data.describe(), "split": split.describe()}
    run = RunDir(Path(out)) if out is not None else None
    if run is not None:
        run.start(spec, settings.record(), data_record, resume)
    tensors = Tensors.from_data(data, device, dtype)
    seeds = member_seeds(settings.seed, settings.seeds)
    per_fraction = []
    for fraction in sorted(settings.fractions):
        directory = run.fraction(fraction) if run is not None else None
        if directory is not None and resume and directory.done:
            per_fraction.append(directory.results())
            continue
        job = EnsembleJob(
            spec=spec,
            split=split.with_fraction(fraction),
            seeds=seeds,
            device=device,
            vectorize=vectorize,
            train_pt_max=settings.train_pt_max,
            registry=registry,
            base_seed=settings.seed,
        )
        per_fraction.append(train_ensemble(job, tensors, directory, resume=resume, on_epoch=on_epoch))
    results = M.jsonable(
        {"spec": spec.name, "settings": settings.record(), **data_record, "fractions": per_fraction}
    )
    if run is not None:
        run.write_results(results)
    return results


def load_members(run_dir: str | Path, fraction: float = 1.0, best: bool = False, registry=None) -> list[SymfwModel]:
    """The trained members of a run (final, or best-validation with ``best``) as models."""
    from .spec import load_spec

    run = RunDir(Path(run_dir))
    spec = load_spec(run.root / "spec.toml", registry=registry)
    ckpt = run.fraction(fraction).load_checkpoint("cpu")
    if ckpt is None:
        raise UsageError(f"{run.root}: no checkpoint for training fraction {fraction:g}")
    ens = Ensemble(spec, ckpt["seeds"], registry=registry)
    state = (ckpt["best"]["params"], ckpt["best"]["buffers"]) if best else (ckpt["params"], ckpt["buffers"])
    return [ens.member(m, state) for m in range(len(ens))]
