"""Markdown tables of a study's results, read from the compare.json / invariance.json files.

    python study/summarize.py runs/study/medium > /tmp/tables.md

Every number printed comes from the files symfw wrote; nothing is computed here but formatting
(and, for the extrapolation protocol, event-weighted means over the pT bins below/above the cut).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pm(stat: dict | None, digits: int = 4) -> str:
    if not stat:
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat.get('std', stat.get('sem', 0.0)):.{digits}f}"


def compare_table(path: Path) -> str:
    d = json.loads((path / "compare.json").read_text())
    rows = [r for r in d["rows"] if r["fraction"] == max(x["fraction"] for x in d["rows"])]
    epochs = sorted({int(k) for r in rows for k in r["val_auc_at"]})
    head = ["spec", "params", "final test AUC", "best-val test AUC", *[f"val AUC @{e}" for e in epochs],
            "epochs to 99%", "rej@εS=0.5 (final)", "train time (s)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["spec"], f"{r['parameters']:,}", pm(r["final_test_auc"]), pm(r["best_test_auc"]),
                 *[pm(r["val_auc_at"].get(str(e)), 3) for e in epochs], pm(r["epochs_to_99"], 1),
                 pm(r["final_test"].get("rej50"), 1), f"{r['train_time_s']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
    s = d["split"]
    out.append("")
    out.append(f"{rows[0]['members']} members × {rows[0]['epochs']} epochs; {s['n_train']:,} / {s['n_val']:,} / "
               f"{s['n_test']:,} train / validation / test events; split hash `{s['indices_hash']}`, data hash "
               f"`{d['data'].get('content_hash', '?')}`.")
    if d.get("differences"):
        out.append("")
        out.append("| a − b | Δ final test AUC | Δ best-val test AUC |")
        out.append("|---|---|---|")
        for diff in d["differences"]:
            out.append(f"| {diff['a']} − {diff['b']} | {pm(diff['final_test_auc'])} | {pm(diff['best_test_auc'])} |")
    if d.get("by_fraction"):
        out.append("")
        names = list(d["by_fraction"])
        fracs = [x["fraction"] for x in d["by_fraction"][names[0]]]
        out.append("| training fraction | n_train | " + " | ".join(f"{n} final test AUC" for n in names) + " |")
        out.append("|---|---|" + "---|" * len(names))
        for i, f in enumerate(fracs):
            cells = [f"{f:g}", f"{d['by_fraction'][names[0]][i]['n_train']:,}"]
            cells += [pm(d["by_fraction"][n][i]["final_test_auc"]) for n in names]
            out.append("| " + " | ".join(cells) + " |")
    if d.get("extrapolation"):
        out.append("")
        out.append("| spec | test AUC below cut | test AUC above cut | accuracy below | accuracy above |")
        out.append("|---|---|---|---|---|")
        for name, ex in d["extrapolation"].items():
            side = {}
            for which in ("below", "above"):
                bins = [b for b in ex["bins"] if b["side"] == which]
                n = sum(b["n"] for b in bins)
                side[which] = {k: sum(b[k]["mean"] * b["n"] for b in bins) / n for k in ("auc", "accuracy")} if n else None
            cell = lambda w, k: f"{side[w][k]:.3f}" if side[w] else "—"  # noqa: E731
            out.append(f"| {name} | {cell('below', 'auc')} | {cell('above', 'auc')} | {cell('below', 'accuracy')} | "
                       f"{cell('above', 'accuracy')} |")
        out.append("")
        out.append(f"(means over the pT bins of each side, weighted by test events; cut at {ex['pt_max']:g} GeV)")
    return "\n".join(out)


def invariance_table(path: Path) -> str:
    d = json.loads((path / "invariance.json").read_text())
    models = d["models"]
    gens = list(models[0]["dlogit"])
    theta = models[0]["parameters"]
    k = theta.index(1.0) if 1.0 in theta else len(theta) - 1
    out = [f"mean |Δ logit| at θ = {theta[k]:g} ({d['n_events']:,} events, {d['events']}):", "",
           "| model | logit std | " + " | ".join(gens) + " |", "|---|---|" + "---|" * len(gens)]
    for m in models:
        out.append(f"| {m['label']} | {m['logit_std']:.3f} | " + " | ".join(f"{m['dlogit'][g][k]:.4f}" for g in gens) + " |")
    return "\n".join(out)


def main(root: str) -> None:
    base = Path(root)
    times = {}
    if (base / "times.txt").exists():
        for line in (base / "times.txt").read_text().split("\n"):
            if line.strip():
                name, secs = line.split()
                times[name] = int(secs)
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        if (sub / "compare.json").exists():
            print(f"### {sub.name}  (wall time {times.get(sub.name, '?')} s)\n")
            print(compare_table(sub) + "\n")
        elif (sub / "invariance.json").exists():
            print(f"### {sub.name}  (wall time {times.get(sub.name, '?')} s)\n")
            print(invariance_table(sub) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/study/quick")
