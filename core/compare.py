"""Comparing specs: train each on the same data, split and seeds, then summarise.

Every spec is trained as :func:`symfw.core.training.run_training` trains it, with the same
:class:`~symfw.core.training.RunSettings` (so the same events, the same split and the same
member seeds — member m of every spec sees the same batch order), into ``OUT/<spec name>/``;
an executor (:mod:`symfw.core.executors`) runs the trainings here or on a Ray cluster.
All specs must have the same task; its primary metric (AUC for ``binary`` and
``multiclass``, the loss for ``regression``) is "the metric" below. The summary
(``compare.json``) holds per spec, for the largest training fraction:

- final and best-validation-epoch **test** metrics (mean ± std over members);
- the validation metric at epochs 1, 5, 10, 25, 50, 100 (those trained);
- epochs to come within 1 % of the member's own final validation metric;
- parameter count and training time;

and for every pair of specs the difference of their test metric, paired by member (same seed):
mean of the per-member differences ± its standard error. With several fractions, the test
metric per fraction; with a cut on the breaking variable, the metrics below and above it.

**Learning rate chosen on validation** (``lr_grid``): every spec is trained once per learning
rate of the grid — the same grid, so the same budget, for every spec — into
``OUT/<spec name>/lr-<lr>/``; for each spec the learning rate with the best validation metric
(the members' final-epoch value, averaged over members, at the largest training fraction;
largest AUC, smallest loss) is kept, and only that run enters the table. The test split plays
no part in the choice; ``compare.json`` records every trial under ``selection``.

**λ chosen on validation** (``lam_grid``): the same choice for the weight λ of the penalties.
Every spec gets the same number of trainings (:data:`BUDGET_RULE`): a spec with penalties one
per (learning rate, λ) — every penalty of the spec at that λ — into ``OUT/<spec>/[lr-<lr>-]lam-<λ>/``;
a spec without penalties, which has no λ, as many: one per (learning rate, seed replica) into
``OUT/<spec>/[lr-<lr>-]seeds-<r>/``, replica 0 with the member seeds every spec shares, the others
with fresh member seeds on the same data and split (:attr:`RunSettings.trial`). Each spec keeps
its best trial on validation, as above; ``selection`` gains ``lam_grid``, ``budget`` and, per
trial and chosen, ``lam`` and ``seed_replica``.

**Invariance** (``invariance=True``): every spec's final members are evaluated on the first
``INVARIANCE_EVENTS`` test events under the first spec's group, as ``symfw diagnose invariance``
does (mean |Δ logit| and |Δ probability| per generator and for a boost along a random direction,
K·n̂, vs θ); ``compare.json`` gets each model's summary and the ratios of the first spec's |Δ| to
each other's (also divided by each model's logit spread), and ``invariance.png`` is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics as M
from .data import EventData
from .errors import UsageError
from .io import atomic_write_json
from .runs import COMPARE_MARKERS, FolderLock, check_claimable, remove_orphans, safe_dirname
from .spec import Spec
from .training import AT_EPOCHS, EpochCallback, RunSettings

INVARIANCE_EVENTS = 2000


def run_dirnames(specs: Sequence[Spec]) -> list[str]:
    """A distinct, file-system-safe folder name per spec (its name; -2, -3 for repeats)."""
    names, seen = [], {}
    for spec in specs:
        base = safe_dirname(spec.name)
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int]:
    """Mean of a_i − b_i ± its standard error (sem is nan with one pair)."""
    d = np.asarray([x - y for x, y in zip(a, b) if x is not None and y is not None], dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return {"mean": math.nan, "sem": math.nan, "n": 0}
    sem = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    return {"mean": float(d.mean()), "sem": sem, "n": int(len(d))}


def _main_fraction(result: dict[str, Any]) -> dict[str, Any]:
    return max(result["fractions"], key=lambda f: f["fraction"])


def _primary(result: dict[str, Any]) -> tuple[str, str]:
    main = _main_fraction(result)
    return main.get("primary", "auc"), main.get("direction", "max")


def ensemble_value(result: dict[str, Any], key: str = "final") -> float | None:
    """The primary test metric of the members voting as one model (``key``: final or best-validation
    state); None for a single member."""
    ensemble = result.get("ensemble")
    return ensemble[key]["test"][result["primary"]] if ensemble else None


def summarize(results: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> dict[str, Any]:
    """The comparison of several :func:`run_training` results (same settings, same task)."""
    names = list(names or [r["spec"] for r in results])
    primary, direction = _primary(results[0])
    rows = []
    for name, result in zip(names, results):
        main = _main_fraction(result)
        s = main["summary"]
        rows.append({
            "spec": name, "task": main.get("task", "binary"), "members": len(main["members"]), "lr": main.get("lr"),
            **{k: main[k] for k in ("fraction", "n_train", "epochs", "parameters", "train_time_s", "mode")},
            f"final_test_{primary}": s["final_test"][primary], f"best_test_{primary}": s["best_test"][primary],
            **{f"ensemble_{key}_test_{primary}": ensemble_value(main, key) for key in ("final", "best")},
            **{k: s[k] for k in ("final_test", "best_test", "best_epoch", "epochs_to_99")},
            f"val_{primary}_at": {k: v for k, v in s[f"val_{primary}_at"].items() if int(k) in AT_EPOCHS},
        })
    differences = []
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            a, b = _main_fraction(results[i]), _main_fraction(results[j])
            entry = {"a": names[i], "b": names[j]}
            for key in ("final", "best"):
                entry[f"{key}_test_{primary}"] = _paired(
                    [m[key]["test"][primary] for m in a["members"]],
                    [m[key]["test"][primary] for m in b["members"]],
                )
            differences.append(entry)
    fractions = sorted({f["fraction"] for r in results for f in r["fractions"]})
    by_fraction = None
    if len(fractions) > 1:
        by_fraction = {
            name: [
                {
                    "fraction": f["fraction"],
                    "n_train": f["n_train"],
                    f"final_test_{primary}": f["summary"]["final_test"][primary],
                    f"best_test_{primary}": f["summary"]["best_test"][primary],
                }
                for f in sorted(r["fractions"], key=lambda f: f["fraction"])
            ]
            for name, r in zip(names, results)
        }
    extrapolation = None
    if any(_main_fraction(r).get("extrapolation") for r in results):
        extrapolation = {name: _main_fraction(r).get("extrapolation") for name, r in zip(names, results)}
    first = results[0]
    return M.jsonable(
        {
            "specs": names,
            "task": rows[0]["task"],
            "primary": primary,
            "direction": direction,
            "settings": first["settings"],
            "data": first["data"],
            "split": first["split"],
            "rows": rows,
            "differences": differences,
            "by_fraction": by_fraction,
            "extrapolation": extrapolation,
        }
    )


def validation_score(result: dict[str, Any]) -> float:
    """What the choice on validation optimises: the task's primary metric on the validation
    split at the final epoch, averaged over members (the state the headline "final test" numbers
    are measured on; a best-epoch optimum would favour runs that peak early by chance). NaN when
    no member has a finite value."""
    primary, _ = _primary(result)
    values = [m["final"]["val"][primary] for m in _main_fraction(result)["members"]]
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def check_lr_grid(lr_grid: Sequence[float]) -> list[float]:
    grid = sorted(set(float(lr) for lr in lr_grid))
    if not grid or any(not (math.isfinite(lr) and lr > 0) for lr in grid):
        raise UsageError(f"the learning-rate grid needs positive finite numbers, got {list(lr_grid)}")
    _distinct_folders([lr_dirname(lr) for lr in grid], "the learning-rate grid")
    return grid


def check_lam_grid(lam_grid: Sequence[float]) -> list[float]:
    """The λ grid, sorted: finite, ≥ 0 (λ = 0 is the penalty switched off, a legitimate choice), no repeats."""
    values = [float(v) for v in lam_grid]
    if not values:
        raise UsageError("the λ grid (--lam-grid) is empty: give values such as 0.1,1,10")
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise UsageError(f"the λ grid (--lam-grid) needs finite numbers >= 0, got {v:g}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise UsageError(f"the λ grid (--lam-grid) gives {repeated[0]:g} more than once")
    grid = sorted(values)
    _distinct_folders([lam_dirname(v) for v in grid], "the λ grid (--lam-grid)")
    return grid


def _distinct_folders(folders: Sequence[str], what: str) -> None:
    if len(set(folders)) < len(folders):
        raise UsageError(f"{what} has values too close to tell apart ({', '.join(folders)})")


BUDGET_RULE = (
    "every spec is trained the same number of times, |lr grid| × |λ grid|, and keeps its best run on validation: "
    "a spec with penalties once per (learning rate, λ), every penalty of the spec at that λ; a spec without "
    "penalties, having no λ, once per (learning rate, seed replica), with |λ grid| replicas: replica 0 has the "
    "member seeds every spec shares, replica r > 0 fresh member seeds (same data and split), so every model "
    "chooses its best of as many trainings; paired differences pair member m of the chosen runs, whose seeds "
    "differ when a replica r > 0 was chosen"
)


@dataclass(frozen=True)
class Trial:
    """One training of a spec in a choice on validation: its learning rate and the λ of its penalties
    (None: the spec's own) and its seed replica (None: no replicas in this search; 0: the shared seeds)."""

    lr: float | None = None
    lam: float | None = None
    replica: int | None = None

    @property
    def folder(self) -> str:
        parts = [lr_dirname(self.lr)] if self.lr is not None else []
        parts += [lam_dirname(self.lam)] if self.lam is not None else []
        parts += [f"seeds-{self.replica}"] if self.replica is not None else []
        return "-".join(parts)

    def apply(self, spec: Spec) -> Spec:
        update: dict[str, Any] = {}
        if self.lr is not None:
            update["training"] = spec.training.model_copy(update={"lr": self.lr})
        if self.lam is not None:
            update["penalties"] = [p.model_copy(update={"lam": self.lam}) for p in spec.penalties]
        return spec.model_copy(update=update)


def check_search(specs: Sequence[Spec], settings: RunSettings, lr_grid: Sequence[float] | None,
                 lam_grid: Sequence[float] | None) -> tuple[list[float] | None, list[float] | None]:
    """The checked learning-rate and λ grids of a choice on validation (None: not chosen); a grid
    that cannot be used is a UsageError, raised before anything is read or written."""
    grid = check_lr_grid(lr_grid) if lr_grid is not None else None
    lams = check_lam_grid(lam_grid) if lam_grid is not None else None
    if lams is not None and not any(spec.penalties for spec in specs):
        raise UsageError("--lam-grid chooses the λ of penalties, and none of the compared specs has a penalty")
    if lams is not None and settings.matched_init:
        raise UsageError("--lam-grid and --matched-init do not combine (seed replicas cannot be matched to the "
                         "first spec's seeds); compare the λ values without --matched-init")
    return grid, lams


def search_plan(specs: Sequence[Spec], lr_grid: Sequence[float] | None,
                lam_grid: Sequence[float] | None) -> list[list[Trial]] | None:
    """Per spec, its trials (None: no choice on validation) — the same number for every spec (:data:`BUDGET_RULE`)."""
    if lr_grid is None and lam_grid is None:
        return None
    lrs: list[float | None] = list(lr_grid) if lr_grid is not None else [None]
    if lam_grid is None:
        return [[Trial(lr=lr) for lr in lrs] for _ in specs]
    return [[Trial(lr, lam) for lr in lrs for lam in lam_grid] if spec.penalties
            else [Trial(lr, replica=r) for lr in lrs for r in range(len(lam_grid))] for spec in specs]


def select_on_validation(
    trials: Sequence[Sequence[dict[str, Any]]], plans: Sequence[Sequence[Trial]], names: Sequence[str],
    lr_grid: Sequence[float] | None = None, lam_grid: Sequence[float] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per spec, the trial with the best :func:`validation_score` (test metrics are not read)."""
    chosen, selection = [], {}
    primary, direction = _primary(trials[0][0])
    for name, results, plan in zip(names, trials, plans):
        scores = np.asarray([validation_score(r) for r in results])
        signed = np.where(np.isfinite(scores), scores if direction == "max" else -scores, -np.inf)
        best = int(np.argmax(signed))
        chosen.append(results[best])
        records = []
        for trial, result, score in zip(plan, results, scores):
            record: dict[str, Any] = {"lr": trial.lr if trial.lr is not None else _main_fraction(result).get("lr")}
            if lam_grid is not None:
                record.update(lam=trial.lam, seed_replica=trial.replica)
            records.append({**record, f"val_{primary}": score if math.isfinite(score) else None,
                            "run": f"{name}/{trial.folder}"})
        selection[name] = {**{k: v for k, v in records[best].items() if k not in (f"val_{primary}",)},
                           "trials": records}
    record = {
        "metric": primary,
        "direction": direction,
        "criterion": f"final-epoch validation {primary} ({'largest' if direction == 'max' else 'smallest'}), "
        "mean over members (largest training fraction)",
        "grid": list(lr_grid) if lr_grid is not None else None,
    }
    if lam_grid is not None:
        record["lam_grid"] = list(lam_grid)
        record["budget"] = {"trials_per_spec": len(plans[0]), "rule": BUDGET_RULE}
    return chosen, {**record, "specs": selection}


def lr_dirname(lr: float) -> str:
    return f"lr-{lr:g}"


def lam_dirname(lam: float) -> str:
    return f"lam-{lam:g}"


def compared_runs(summary: dict[str, Any]) -> list[str]:
    """Each compared spec's run folder, relative to the compare output (with a choice on
    validation: the chosen trial's)."""
    selection, specs = summary.get("selection"), summary.get("specs", [])
    if not selection:
        return list(specs)
    return [str(selection["specs"][name].get("run") or f"{name}/{lr_dirname(selection['specs'][name]['lr'])}")
            for name in specs]


def chosen_label(name: str, selection: dict[str, Any]) -> str:
    """``name, lr …[, λ …]``: a spec with its trial chosen on validation (a plot legend)."""
    entry = selection["specs"][name]
    lam = f", λ {entry['lam']:g}" if entry.get("lam") is not None else ""
    replica = f", seeds {entry['seed_replica']}" if entry.get("seed_replica") else ""
    return f"{name}, lr {entry['lr']:g}{lam}{replica}"


def run_compare(
    specs: Sequence[Spec],
    data: EventData,
    settings: RunSettings,
    out: str | Path,
    *,
    resume: bool = False,
    device="cpu",
    vectorize: str = "auto",
    registry=None,
    on_epoch: EpochCallback | None = None,
    plots: bool = True,
    executor=None,
    on_task=None,
    lr_grid: Sequence[float] | None = None,
    lam_grid: Sequence[float] | None = None,
    invariance: bool = False,
    parallel=None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Train every spec into ``out/<name>/``, write ``compare.json`` and the plots.

    The trainings are :func:`symfw.core.executors.train_runs`'s (the path ``symfw train``
    takes): ``executor`` runs them here or on Ray, ``on_task(task, done, total)`` follows its
    finished tasks, ``parallel`` (a :class:`~symfw.core.distributed.DistInfo`) trains each
    data-parallel (call on every rank; rank 0 writes). ``lr_grid``: train each spec at every
    learning rate and keep, per spec, the one best on validation. ``lam_grid``: likewise for the λ
    of the penalties, with the same number of trainings for every spec (:data:`BUDGET_RULE`). ``invariance``: add the
    invariance summary of every spec's final members (see the module docstring).
    """
    from .executors import _on_main, train_runs

    out = Path(out)
    tasks = {spec.task.name for spec in specs}
    if len(tasks) > 1:
        raise UsageError(f"compare needs specs of one task, got {', '.join(sorted(tasks))}")
    if invariance and tasks != {"binary"}:
        raise UsageError(f"--invariance measures the change of one logit; task {tasks.pop()} has other outputs")
    from .training import prepare_split

    split = prepare_split(data, settings, registry)
    names = run_dirnames(specs)
    grid, lams = check_search(specs, settings, lr_grid, lam_grid)
    plans = search_plan(specs, grid, lams)
    if plans is None:
        runs, run_names, trials = list(specs), names, None
    else:
        runs = [t.apply(spec) for spec, plan in zip(specs, plans) for t in plan]
        run_names = [f"{name}/{t.folder}" for name, plan in zip(names, plans) for t in plan]
        trials = [t.replica or 0 for plan in plans for t in plan]
    matched, matched_record = None, None
    if settings.matched_init:  # refused here, before anything is written, when the specs cannot be matched
        from .matching import PROBE_EVENTS, MatchedInit, first_batch_difference
        from .training import member_seeds

        probe = data.subset(split.with_fraction(max(settings.fractions)).train[:PROBE_EVENTS]).tensors()
        matched_record = first_batch_difference(specs, member_seeds(settings.seed, settings.seeds), probe["p4"],
                                                probe["mask"], registry, dtype)
        per_grid = 1 if plans is None else len(plans[0])
        matched = [MatchedInit(tuple(specs), r // per_grid) for r in range(len(runs))]
    _on_main(parallel, lambda: check_claimable(out, COMPARE_MARKERS, nested=True))  # never write into someone else's folder
    lock = FolderLock(out)  # held by rank 0 from after the checks of train_runs to compare.json

    def claim() -> None:
        lock.acquire()
        if resume:
            remove_orphans(out, recursive=False)  # of compare.json and the plots; each run cleans its own

    try:
        results = train_runs(
            runs, [out / name for name in run_names], data, settings, names=run_names, executor=executor,
            resume=resume, device=device, vectorize=vectorize, registry=registry, on_epoch=on_epoch,
            on_task=on_task, parallel=parallel, dtype=dtype, split=split, before_start=claim, matched=matched,
            trials=trials,
        )
        return _on_main(parallel, lambda: _summarise_and_write(
            specs, results, names, (plans, grid, lams), data, split, settings, out, registry, plots, invariance,
            matched_record))
    finally:
        lock.release()


def _summarise_and_write(specs, results, names, search, data, split, settings, out, registry, plots, invariance,
                         matched=None):
    plans, grid, lams = search
    selection = None
    if plans is not None:
        n = len(plans[0])
        trials = [results[i * n : (i + 1) * n] for i in range(len(specs))]
        results, selection = select_on_validation(trials, plans, names, grid, lams)
    summary = summarize(results, names)
    summary["selection"] = selection
    if lams is not None:
        for row in summary["rows"]:
            entry = selection["specs"][row["spec"]]
            row["lam"], row["seed_replica"] = entry["lam"], entry["seed_replica"]
    if matched is not None:
        summary["matched_init"] = matched
    if invariance:
        from .diagnostics import invariance_summary
        from .training import load_members

        fraction = max(settings.fractions)
        members = [load_members(out / run, fraction=fraction, registry=registry) for run in compared_runs(summary)]
        test = np.sort(split.test)[:INVARIANCE_EVENTS]
        t = data.subset(test).tensors(dtype=torch.float64)
        summary["invariance"] = invariance_summary(
            members, names, t["p4"], t["mask"], t["weight"], plot=out / "invariance.png" if plots else None
        )
    if plots:
        from .plots import write_plots

        labels = names if selection is None else [chosen_label(n, selection) for n in names]
        summary["plots"] = [str(p) for p in write_plots(results, out, labels, registry=registry)]
        if invariance and "models" in summary["invariance"]:
            summary["plots"].append(str(out / "invariance.png"))
    atomic_write_json(out / "compare.json", summary)
    return summary
