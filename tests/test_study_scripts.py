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

def test_the_trees_choose_their_learning_rate_from_the_grid_given(baseline, tmp_path, capsys):
    data = toy_events(400)
    path = tmp_path / "toy.npz"
    save_events(data, path)
    out = baseline.main([str(path), "--seed", "1", "--lr-grid", "0.05,0.5"])
    assert set(out["val_auc_per_learning_rate"]) == {"0.05", "0.5"} and out["learning_rate"] in (0.05, 0.5)
    best = max(out["val_auc_per_learning_rate"].values())
    assert out["val_auc_per_learning_rate"][str(out["learning_rate"])] == best
    for bad in ("0.1,x", "0,0.1", "nan", "", "0.1,0.1"):
        with pytest.raises(SystemExit) as exc:
            baseline.main([str(path), "--lr-grid", bad])
        assert exc.value.code == 2 and "--lr-grid" in capsys.readouterr().err



#: the residual group each study spec claims in its description (what docs/study.md's tables name)
STUDY_SPEC_GROUP = {
    "jets-input-E-augmented": "so3", "jets-input-E": "so3", "jets-input-Eminus-augmented": "se2",
    "jets-input-Eminus": "se2", "jets-input-Epz-augmented": "so2-z", "jets-input-all-augmented": "trivial",
    "jets-input-all": "trivial", "jets-input-pz-augmented": "so12-z", "jets-input-pz": "so12-z",
    "jets-spurion-beam-axis": "so12-z", "jets-spurion-beam-plus": "se2", "jets-spurion-time": "so3",
    "pelican-jets-64": "lorentz", "pelican-jets-input-E": "so3", "pelican-jets-input-pz": "so12-z",
    "pelican-jets-spurion-beam-axis": "so12-z", "pelican-jets-spurion-time": "so3", "pfn-jets-latent128": "trivial",
    "seal-toy-invariant": "lorentz", "seal-toy-pfn-seal-group": "trivial", "seal-toy-pfn-seal-infinitesimal": "trivial",
    "seal-toy-pfn": "trivial", "jets-spurions-four-vector": "so2-z",
    "jets-small-lorentz": "lorentz", "jets-small-spurion-time": "so3", "jets-small-spurion-beam-axis": "so12-z",
    "jets-small-spurion-beam-plus": "se2", "jets-small-spurion-beam": "so2-z", "jets-small-input-all": "trivial",
}


def test_every_study_spec_builds_and_keeps_the_group_it_is_listed_under():
    paths = {p.stem: p for p in (STUDY / "specs").glob("*.toml")}
    assert set(paths) == set(STUDY_SPEC_GROUP), "list a new study spec's residual group here"
    for name, path in sorted(paths.items()):
        model = symfw.build_model(symfw.load_spec(path))
        assert model.residual_group.name == STUDY_SPEC_GROUP[name], (name, model.residual_reason)


@pytest.mark.parametrize("row", ["se2", "small"])
def test_the_rows_of_the_spurion_study_match_their_reference_at_the_first_batch(row):
    """The SE(2) pair, and the six residual groups at small size, differ from their reference only
    in the input layer: matched initialisation holds."""
    import torch

    from symfw.core.matching import first_batch_difference
    from symfw.testing import random_events

    names = {"se2": ["invariant-jets", "jets-spurion-beam-plus", "jets-input-Eminus"],
             "small": [f"jets-small-{n}" for n in ("lorentz", "spurion-time", "spurion-beam-axis", "spurion-beam-plus",
                                                   "spurion-beam", "input-all")]}[row]
    specs = [symfw.load_spec(n if n == "invariant-jets" else STUDY / "specs" / f"{n}.toml") for n in names]
    p4 = random_events(32, 128, seed=5, mass=0.14)
    mask = torch.arange(128)[None, :] < torch.randint(20, 60, (32, 1), generator=torch.Generator().manual_seed(5))
    report = first_batch_difference(specs, [1, 2], p4 * mask[..., None], mask, dtype=torch.float64)
    assert report["first_batch_max_difference"] < 1e-6
    assert report["specs"] == names


def test_the_spurion_four_vector_head_is_equivariant_under_so2z_only():
    """Σ w_i p_i with w_i from a latent that sees the beam spurions: rotations about z move the
    output as a four-vector, a transverse boost does not."""
    import torch

    from symfw.core.groups import act, random_elements
    from symfw.testing import random_events

    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec(STUDY / "specs" / "jets-spurions-four-vector.toml")).double().eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    p4 = random_events(16, 128, seed=2, mass=0.14)
    mask = torch.arange(128)[None, :] < torch.randint(20, 80, (16, 1), generator=torch.Generator().manual_seed(2))
    p4 = p4 * mask[..., None]
    with torch.no_grad():
        out = model(p4, mask)
        for group, equivariant in (("so2-z", True), ("so12-z", False)):
            lam = random_elements(group, 16, rapidity=(0.3, 0.6), angle=(0.3, 0.6), rng=torch.Generator().manual_seed(3))
            gap = (model(act(lam, p4, mask), mask) - torch.einsum("bij,bj->bi", lam, out)).abs().max() / out.abs().max()
            assert (gap < 1e-9) if equivariant else (gap > 1e-4), (group, float(gap))
