"""Boosted decision trees on jet substructure: the non-neural baseline of the jet studies.

    python study/jet_baseline.py JETS.npz [--seed 1] [--json OUT.json]

Features per jet (from its constituents, weights as in the file): the jet mass, pT and number
of constituents, and the energy-correlation ratios of the 32 hardest constituents (β = 1,
Larkoski et al.): e2 = ECF2/ECF1², C2 = ECF3·ECF1/ECF2², D2 = ECF3·ECF1³/ECF2³. Trained with
scikit-learn's HistGradientBoostingClassifier on symfw's training split of the same file and
seed (the same events a `symfw compare --seed S` run trains on), evaluated once on its test split
with symfw's metrics (AUC, accuracy, 1/ε_B at ε_S = 0.3 and 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from symfw.core import kinematics as k
from symfw.core import metrics as M
from symfw.core.data import load_events
from symfw.core.training import RunSettings, prepare_split

HARDEST = 32


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--seed", type=int, default=0, help="symfw's base seed (the split)")
    parser.add_argument("--json", help="write the metrics here")
    args = parser.parse_args(argv)
    data = load_events(args.data)
    if len(np.unique(data.label)) != 2:
        sys.exit("jet_baseline: binary labels needed")
    split = prepare_split(data, RunSettings(data=args.data, seed=args.seed))
    x = substructure(data.p4, data.mask)
    bdt = HistGradientBoostingClassifier(max_iter=500, learning_rate=0.1, early_stopping=True, random_state=args.seed)
    bdt.fit(x[split.train], data.label[split.train], sample_weight=data.weight[split.train])
    val = M.evaluate(data.label[split.val], bdt.decision_function(x[split.val]), data.weight[split.val])
    test = M.evaluate(data.label[split.test], bdt.decision_function(x[split.test]), data.weight[split.test])
    result = {"model": "boosted trees on m, pT, n, e2, C2, D2", "n_train": int(len(split.train)),
              "val": val, "test": test}
    print(json.dumps(M.jsonable(result), indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(M.jsonable(result), fh, indent=2)
    return result


if __name__ == "__main__":
    main()
