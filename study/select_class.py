"""Keep one class of an event file (e.g. the top jets of a top-vs-QCD file, for top-momentum regression).

    python study/select_class.py IN.npz OUT.npz --label 1
"""

import argparse

import numpy as np

from symfw.core.data import load_events, save_events

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("source")
parser.add_argument("out")
parser.add_argument("--label", type=int, required=True)
args = parser.parse_args()
data = load_events(args.source)
kept = data.subset(np.flatnonzero(data.label == args.label))
if len(kept) == 0:
    raise SystemExit(f"select_class: no events with label {args.label} in {args.source}")
kept.label = np.zeros(len(kept), dtype=np.int64)
kept.meta["selected_label"] = args.label
save_events(kept, args.out)
print(f"wrote {args.out}: {len(kept)} events of label {args.label}")
