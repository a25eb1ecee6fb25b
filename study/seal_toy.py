"""SEAL Fig. 1 from the seal-toy compare runs of study/run.sh: test MSE vs the boost applied to
the training data, symmetry exact (ε = 0) and broken (ε = 1e-3); a markdown table and a figure.

    python study/seal_toy.py runs/study/quick --boosts "0 4 8" --figure docs/study/quick/seal-toy-fig1.png

Reads OUT/seal-toy-<exact|broken>-<boost>/compare.json; every number printed is from those files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CASES = (("exact", "ε = 0: y = P·P, exactly Lorentz invariant"),
         ("broken", "ε = 10⁻³: y = P·P + (s·P)², s = (0, 0, 0, ε)"))
STYLE = {"pfn-seal-infinitesimal": "-", "pfn-seal-group": "--"}  # the paper: δSEAL solid, GSEAL dashed


def short(spec: str) -> str:
    return spec.removeprefix("seal-toy-")


def load(out: Path, case: str, boost: str) -> dict:
    path = out / f"seal-toy-{case}-{boost}" / "compare.json"
    if not path.is_file():
        sys.exit(f"error: {path}: no such file (run study/run.sh with the seal-toy step first)")
    return json.loads(path.read_text())


def cell(row: dict) -> str:
    mse, loss = row["final_test"]["mse"], row["final_test"]["loss"]
    lam = f", λ {row['lam']:g}" if row.get("lam") is not None else ""
    return f"{mse['mean']:.3g} ± {mse.get('std', 0):.2g} ({loss['mean']:.3g}{lam})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--boosts", required=True, help="the boosts run, space-separated as in study/run.sh")
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args(argv)
    boosts = args.boosts.split()
    results = {case: {b: load(args.out, case, b) for b in boosts} for case, _ in CASES}
    first = results["exact"][boosts[0]]
    specs = first["specs"]
    for case, title in CASES:
        print(f"**{title}** — final test MSE ± std over members (in parentheses: MSE / Var(y) of the training "
              "split, the loss λ is chosen on, and the λ chosen on validation)\n")
        print("| η (boost of the data) | " + " | ".join(short(s) for s in specs) + " |")
        print("|---|" + "---|" * len(specs))
        for b in boosts:
            rows = {r["spec"]: r for r in results[case][b]["rows"]}
            print(f"| {b} | " + " | ".join(cell(rows[s]) for s in specs) + " |")
        print()
    split, sel = first["split"], first["selection"]
    print(f"{first['rows'][0]['members']} members × {first['rows'][0]['epochs']} epochs; {split['n_train']:,} / "
          f"{split['n_val']:,} / {split['n_test']:,} train / validation / test events; λ grid "
          f"{', '.join(f'{v:g}' for v in sel['lam_grid'])}, {sel['budget']['trials_per_spec']} trainings per spec "
          "(specs without penalties: seed replicas).")
    if args.figure is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        x = [float(b) for b in boosts]
        for ax, (case, title) in zip(axes, CASES):
            for spec in specs:
                stats = [next(r for r in results[case][b]["rows"] if r["spec"] == spec)["final_test"]["mse"]
                         for b in boosts]
                ax.errorbar(x, [s["mean"] for s in stats], yerr=[s.get("std", 0) for s in stats], capsize=3,
                            ls=STYLE.get(short(spec), ":"), marker="o", label=short(spec))
            ax.set_yscale("log")
            ax.set_xlabel("boost applied to the data (rapidity η along z)")
            ax.set_title(title, fontsize=9)
        axes[0].set_ylabel("test MSE")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
