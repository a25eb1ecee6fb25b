"""Boosted decision trees on jet substructure: the non-neural baseline of the jet studies.

    python study/jet_baseline.py JETS.npz [--seed 1] [--lr-grid 0.03,0.1,0.3] [--json OUT.json] [--versus RUN_DIR ...]

Features per jet (from its constituents, weights as in the file): the jet mass, pT and number
of constituents, and the energy-correlation ratios of the 32 hardest constituents (β = 1,
Larkoski et al.): e2 = ECF2/ECF1², C2 = ECF3·ECF1/ECF2², D2 = ECF3·ECF1³/ECF2³. Trained with
scikit-learn's HistGradientBoostingClassifier on symfw's training split of the same file and
seed (the same events a `symfw compare --seed S` run trains on); its learning rate is chosen on the
validation split from ``--lr-grid`` (default LR_GRID; give it as many values as the networks'
``symfw compare --lr-grid``, so both get the same budget), and it is evaluated once on the test split with symfw's metrics
(AUC, accuracy, 1/ε_B at ε_S = 0.3 and 0.5).

``--versus RUN_DIR`` (a `symfw train` run, or a spec's folder of a `symfw compare` run, on the
same file and seed) also scores that run's members and their vote (``Task.combine``) on the same
test jets, and the paired bootstrap of AUC(network) − AUC(trees): the test jets resampled with
replacement (BOOTSTRAP times, seeded), both models scored on each resample, so the interval is that
of the difference, not of either AUC alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from symfw.core import kinematics as k
from symfw.core import metrics as M
from symfw.core.compare import check_lr_grid
from symfw.core.data import load_events
from symfw.core.errors import UsageError
from symfw.core.training import RunSettings, load_members, prepare_split

HARDEST = 32
LR_GRID = (0.03, 0.1, 0.3)
BOOTSTRAP = 2000


def substructure(p4: np.ndarray, mask: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(n, 6): mass, pT, multiplicity, e2, C2, D2 of every jet."""
    out = []
    for s in range(0, len(p4), chunk):
        x = torch.as_tensor(p4[s : s + chunk], dtype=torch.float64) * torch.as_tensor(mask[s : s + chunk])[..., None]
        jet = x.sum(1)
        c = x[:, :HARDEST]
        pt = k.pt(c)
        eta, phi = k.eta(c), k.phi(c)
        dphi = torch.remainder(phi[:, :, None] - phi[:, None, :] + torch.pi, 2 * torch.pi) - torch.pi
        dr = torch.hypot(eta[:, :, None] - eta[:, None, :], dphi) * (pt[:, :, None] > 0) * (pt[:, None, :] > 0)
        e1 = pt.sum(1)
        e2 = 0.5 * torch.einsum("bi,bj,bij->b", pt, pt, dr)
        e3 = torch.einsum("bi,bj,bk,bij,bik,bjk->b", pt, pt, pt, dr, dr, dr) / 6
        e2 = e2.clamp_min(1e-12)
        feats = [k.mass(jet), k.pt(jet), torch.as_tensor(mask[s : s + chunk]).sum(1).double(),
                 e2 / e1**2, e3 * e1 / e2**2, e3 * e1**3 / e2**3]
        out.append(torch.stack(feats, -1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def run_outputs(run: str, data, index: np.ndarray, chunk: int = 500) -> tuple[np.ndarray, object]:
    """(members, n) test outputs of the run's final-epoch members, and the run's task."""
    from symfw.core.registry import get_registry
    from symfw.core.spec import load_spec

    models = load_members(run)
    task_spec = load_spec(Path(run) / "spec.toml").task
    cls = get_registry().get("task", task_spec.name)
    outputs = []
    for s in range(0, len(index), chunk):
        rows = index[s : s + chunk]
        p4, mask = torch.as_tensor(data.p4[rows]), torch.as_tensor(data.mask[rows])
        outputs.append(np.stack([m.eval()(p4, mask).double().numpy() for m in models]))
    return np.concatenate(outputs, 1), cls(cls.Options.model_validate(task_spec.options))


def paired_bootstrap(label, weight, a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    """AUC(a) − AUC(b) on the same events, and its bootstrap distribution over resampled events."""
    rng = np.random.default_rng(seed)
    n = len(label)
    deltas = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, n, n)
        deltas.append(M.auc(label[i], a[i], weight[i]) - M.auc(label[i], b[i], weight[i]))
    deltas = np.asarray(deltas)
    return {"delta_auc": M.auc(label, a, weight) - M.auc(label, b, weight),
            "interval_68": np.quantile(deltas, [0.16, 0.84]).tolist(),
            "interval_95": np.quantile(deltas, [0.025, 0.975]).tolist(),
            "fraction_above_zero": float((deltas > 0).mean()), "resamples": BOOTSTRAP}


def versus(run: str, data, index: np.ndarray, trees: np.ndarray, seed: int) -> dict:
    """The run's members and their vote against the trees on the same test jets."""
    outputs, task = run_outputs(run, data, index)
    label, weight = data.label[index], data.weight[index]
    vote = task.combine(outputs)
    return {
        "members": [M.evaluate(label, o, weight) for o in outputs],
        "vote": M.evaluate(label, vote, weight),
        "vote_minus_trees": paired_bootstrap(label, weight, vote, trees, seed),
        "members_minus_trees": [paired_bootstrap(label, weight, o, trees, seed)["delta_auc"] for o in outputs],
    }


def _lr_grid(text: str) -> tuple[float, ...]:
    """``--lr-grid``: comma-separated, each rate once (a repeat would be one trial fewer than the
    grid's size), positive and finite (``symfw compare``'s own check)."""
    try:
        grid = [float(v) for v in text.split(",")]
        if len(set(grid)) != len(grid):
            raise UsageError("a learning rate is given twice")
        check_lr_grid(grid)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None
    except UsageError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None
    return tuple(grid)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--seed", type=int, default=0, help="symfw's base seed (the split)")
    parser.add_argument("--json", help="write the metrics here")
    parser.add_argument("--lr-grid", default=",".join(map(str, LR_GRID)), type=_lr_grid,
                        help="the trees' learning rates to choose from on validation, comma-separated")
    parser.add_argument("--versus", nargs="+", default=[], metavar="RUN_DIR",
                        help="symfw runs on the same file and seed to score against the trees on the same test jets")
    args = parser.parse_args(argv)
    data = load_events(args.data)
    if len(np.unique(data.label)) != 2:
        sys.exit("jet_baseline: binary labels needed")
    split = prepare_split(data, RunSettings(data=args.data, seed=args.seed))
    x = substructure(data.p4, data.mask)
    trials = {}
    for lr in args.lr_grid:  # chosen on validation
        bdt = HistGradientBoostingClassifier(max_iter=500, learning_rate=lr, early_stopping=True, random_state=args.seed)
        bdt.fit(x[split.train], data.label[split.train], sample_weight=data.weight[split.train])
        trials[lr] = (M.evaluate(data.label[split.val], bdt.decision_function(x[split.val]), data.weight[split.val]), bdt)
    lr = max(trials, key=lambda r: trials[r][0]["auc"])
    val, bdt = trials[lr]
    trees = bdt.decision_function(x[split.test])
    test = M.evaluate(data.label[split.test], trees, data.weight[split.test])
    result = {"model": "boosted trees on m, pT, n, e2, C2, D2", "n_train": int(len(split.train)),
              "learning_rate": lr, "val_auc_per_learning_rate": {str(r): t[0]["auc"] for r, t in trials.items()},
              "val": val, "test": test}
    if args.versus:
        result["versus"] = {run: versus(run, data, split.test, trees, args.seed) for run in args.versus}
    print(json.dumps(M.jsonable(result), indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(M.jsonable(result), fh, indent=2)
    return result


if __name__ == "__main__":
    main()
