"""Pinned numbers: one float64 run's per-epoch metrics, recorded before the training path was
unified (issue 12). The same seed must give the same numbers through every refactoring.

Regenerate only for an intended change of results: ``python tests/core/test_pinned.py``.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

import symfw
from symfw.core.training import RunSettings, run_training, with_training_overrides

PINNED = Path(__file__).with_name("pinned_float64.json")
CASES = {
    # a hybrid (two subnets, learned pT weight, batch norm) trained as a vmapped ensemble of 2
    "hybrid": dict(preset="hybrid", seeds=2, penalty=None),
    # the PFN with SEAL Γ_G (random boosts per step, logits reused), sequential (one member)
    "pfn-seal-group": dict(preset="pfn-seal-group", seeds=1, penalty=True),
}


def _spec(preset: str):
    spec = symfw.load_spec(preset)
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [16, 8]})})
    return with_training_overrides(spec, epochs=3, batch_size=64)


def compute(name: str) -> list[list[dict[str, float]]]:
    from toy_events import toy_events

    case = CASES[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_training(
            _spec(case["preset"]), toy_events(400, weighted=True), RunSettings(data="toy", seeds=case["seeds"]),
            dtype=torch.float64,
        )
    finally:
        torch.set_num_threads(threads)
    f = res["fractions"][0]
    return [
        [{"loss": f["curves"]["loss"][e][m], "val_auc": f["curves"]["val_auc"][e][m]} for m in range(case["seeds"])]
        for e in range(len(f["curves"]["epoch"]))
    ] + [[{"final_test_auc": mm["final"]["test"]["auc"], "final_test_loss": mm["final"]["test"]["loss"]}
          for mm in f["members"]]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_seed_gives_the_pinned_float64_metrics(name):
    expected = json.loads(PINNED.read_text())[name]
    got = compute(name)
    assert len(got) == len(expected)
    for row_got, row_exp in zip(got, expected):
        for m_got, m_exp in zip(row_got, row_exp):
            assert m_got.keys() == m_exp.keys()
            for key in m_exp:
                assert m_got[key] == pytest.approx(m_exp[key], rel=1e-9, abs=1e-12), (name, key)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))
    PINNED.write_text(json.dumps({name: compute(name) for name in sorted(CASES)}, indent=1) + "\n")
    print(f"wrote {PINNED}")
