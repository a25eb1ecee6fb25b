"""The study's own scripts: the boosted-trees baseline of the jet studies and its paired comparison."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core.data import save_events
from symfw.core.training import RunSettings, run_training, with_training_overrides

STUDY = Path(__file__).resolve().parent.parent / "study"


@pytest.fixture(scope="module")
def baseline():
    spec = importlib.util.spec_from_file_location("jet_baseline", STUDY / "jet_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_paired_bootstrap_is_that_of_the_difference(baseline, monkeypatch):
    monkeypatch.setattr(baseline, "BOOTSTRAP", 200)
    rng = np.random.default_rng(0)
    label = (np.arange(400) % 2).astype(float)
    weight = np.ones(400)
    good = label + rng.normal(scale=0.5, size=400)
    same = baseline.paired_bootstrap(label, weight, good, good, seed=1)
    assert same["delta_auc"] == 0 and same["interval_95"] == [0.0, 0.0] and same["fraction_above_zero"] == 0
    # a better score wins on every resample; its interval sits above zero and contains the difference
    noisy = label + rng.normal(scale=2.0, size=400)
    better = baseline.paired_bootstrap(label, weight, good, noisy, seed=1)
    lo, hi = better["interval_95"]
    assert 0 < lo < better["delta_auc"] < hi and better["fraction_above_zero"] == 1.0
    assert baseline.paired_bootstrap(label, weight, noisy, good, seed=1)["delta_auc"] == pytest.approx(-better["delta_auc"])


def test_the_trees_and_a_symfw_run_are_scored_on_the_same_test_events(baseline, tmp_path, monkeypatch):
    monkeypatch.setattr(baseline, "BOOTSTRAP", 50)
    data = toy_events(600)
    path = tmp_path / "toy.npz"
    save_events(data, path)
    run = tmp_path / "run"
    spec = with_training_overrides(symfw.load_spec("invariant"), epochs=1, batch_size=64)
    res = run_training(spec, data, RunSettings(data=str(path), seed=1, seeds=2), run)["fractions"][0]
    out = baseline.main([str(path), "--seed", "1", "--versus", str(run), "--json", str(tmp_path / "b.json")])
    assert json.loads((tmp_path / "b.json").read_text())["learning_rate"] in baseline.LR_GRID
    entry = out["versus"][str(run)]
    # the members scored here are the run's own final-epoch members on its test split
    for mine, theirs in zip(entry["members"], res["members"]):
        assert mine["auc"] == pytest.approx(theirs["final"]["test"]["auc"], abs=1e-6)
    assert entry["vote"]["auc"] == pytest.approx(res["ensemble"]["final"]["test"]["auc"], abs=1e-6)
    delta = entry["vote_minus_trees"]
    assert delta["delta_auc"] == pytest.approx(entry["vote"]["auc"] - out["test"]["auc"])
