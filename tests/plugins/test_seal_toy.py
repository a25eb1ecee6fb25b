"""The seal-toy dataset (SEAL Fig. 1): the target's symmetry, exact and broken by the spurion;
seeds; refused options; the regression it feeds, through the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from symfw.core.data import resolve_data
from symfw.core.errors import DataError
from symfw.core.groups import act, random_elements
from symfw.plugins import seal_toy as T

EPS = 1e-3
SPECS = Path(__file__).resolve().parents[2] / "study" / "specs"


def generate(n=2000, seed=5, **options):
    return T.SealToy(T.SealToyOptions(**options)).generate(n, seed)


def y(p4, spurion):
    p4 = torch.as_tensor(p4, dtype=torch.float64)
    return T.target(p4, torch.ones(p4.shape[:2], dtype=torch.bool), spurion).numpy()


def test_the_stored_target_is_the_function_of_the_stored_four_vectors():
    data = generate(boost=2.0, spurion=EPS, particles=3)
    assert data.p4.shape == (2000, 3, 4) and data.p4.dtype == np.float32 and data.target.shape == (2000, 1)
    total = data.p4.astype(np.float64).sum(1)
    expected = total[:, 0] ** 2 - (total[:, 1:] ** 2).sum(-1) + (EPS * total[:, 3]) ** 2  # P·P + (s·P)²
    np.testing.assert_allclose(data.target[:, 0], expected, rtol=1e-12)
    assert np.all(data.p4[..., 0] ** 2 >= (data.p4[..., 1:] ** 2).sum(-1))  # massive, physical particles


def test_exact_case_the_target_is_lorentz_invariant_and_the_same_at_every_boost():
    data = generate()
    p4 = torch.as_tensor(data.p4, dtype=torch.float64)
    moved = act(random_elements("lorentz", len(p4), rng=torch.Generator().manual_seed(1)), p4)
    assert not torch.allclose(moved, p4)
    np.testing.assert_allclose(y(moved, 0.0), data.target[:, 0], rtol=1e-9, atol=1e-9)
    # one seed, the same base-frame events: only the inputs move with the boost, not the targets
    boosted = generate(boost=4.0)
    assert np.abs(boosted.p4[..., 3]).mean() > 20 * np.abs(data.p4[..., 3]).mean()
    # (up to the float32 rounding of the boosted inputs: E ≈ p_z ≈ 50 here, P·P ≈ 10 cancels between them)
    np.testing.assert_allclose(boosted.target, data.target, rtol=0, atol=0.05)
    assert not np.allclose(generate(boost=4.0, seed=6).target, data.target, atol=0.05)


def test_broken_case_only_the_spurions_little_group_leaves_the_target_unchanged():
    data = generate(spurion=EPS)
    p4 = torch.as_tensor(data.p4, dtype=torch.float64)
    rng = torch.Generator().manual_seed(2)
    kept = act(random_elements("so12-z", len(p4), rng=rng, rapidity=(0.0, 3.0)), p4)  # K_x, K_y, J_z fix s
    np.testing.assert_allclose(y(kept, EPS), data.target[:, 0], rtol=1e-9, atol=1e-9)
    boosted = act(T.boost_z(5.0), p4)  # a z-boost moves s·P = −ε P_z
    pz, pz_boosted = p4.sum(1)[:, 3].numpy(), boosted.sum(1)[:, 3].numpy()
    np.testing.assert_allclose(y(boosted, EPS) - data.target[:, 0], EPS**2 * (pz_boosted**2 - pz**2),
                               rtol=1e-6, atol=1e-9)
    assert np.median(np.abs(y(boosted, EPS) - data.target[:, 0])) > 1e-3
    # the breaking term grows with the boost applied to the data: ε² P_z² on top of the invariant
    for boost in (0.0, 6.0):
        broken, exact = generate(boost=boost, spurion=EPS), generate(boost=boost)
        term = EPS**2 * broken.p4.astype(np.float64).sum(1)[:, 3] ** 2
        np.testing.assert_allclose(broken.target[:, 0] - exact.target[:, 0], term, rtol=1e-6, atol=1e-6)
    assert np.median(term) > 0.05 * np.median(np.abs(exact.target))  # at η = 6 the breaking matters


def test_the_same_seed_gives_the_same_events_and_another_seed_others():
    a, b, c = generate(seed=3, spurion=EPS), generate(seed=3, spurion=EPS), generate(seed=4, spurion=EPS)
    np.testing.assert_array_equal(a.p4, b.p4)
    np.testing.assert_array_equal(a.target, b.target)
    assert not np.allclose(a.p4, c.p4)
    assert a.meta["spurion"] == EPS and a.meta["source"] == "seal-toy"


@pytest.mark.parametrize("options, message", [
    ({"boost": -1.0}, "boost"),
    ({"boost": 10.5}, "boost"),
    ({"boost": float("nan")}, "boost"),
    ({"spurion": -1e-3}, "spurion"),
    ({"spurion": float("inf")}, "spurion"),
    ({"spurion": float("nan")}, "spurion"),
    ({"particles": 0}, "particles"),
    ({"momentum_width": 0.0}, "momentum_width"),
    ({"mass_range": [1.0, 0.5]}, "mass_range must be 0 <= low < high"),
    ({"mass_range": [-1.0, 0.5]}, "mass_range must be 0 <= low < high"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(DataError) as err:
        resolve_data("seal-toy", n_events=10, options=options)
    assert str(err.value).startswith("dataset 'seal-toy': ") and message in str(err.value)


def test_bad_options_through_the_cli_are_one_line_and_write_nothing(runner, cli, tmp_path):
    out = tmp_path / "toy.npz"
    result = runner.invoke(cli, ["data", "generate", "seal-toy", "--set", "spurion=-1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "spurion" in result.stderr
    assert not out.exists()


def test_the_regression_runs_from_the_cli_and_the_invariant_model_learns_the_exact_target(runner, cli, tmp_path):
    specs = [str(SPECS / f"seal-toy-{name}.toml") for name in ("pfn-seal-group", "invariant")]
    data = tmp_path / "toy.npz"
    made = runner.invoke(cli, ["data", "generate", "seal-toy", "--events", "1500", "--set", "boost=2", "--out",
                               str(data), "--quiet"])
    assert made.exit_code == 0, made.output
    out = tmp_path / "cmp"
    result = runner.invoke(cli, ["compare", *specs, "--data", str(data), "--epochs", "4", "--seeds", "1",
                                 "--lam-grid", "0.1,1", "--device", "cpu", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    assert summary["primary"] == "loss" and summary["selection"]["budget"]["trials_per_spec"] == 2
    rows = {r["spec"]: r for r in summary["rows"]}
    # y = P·P is a linear function of the Minkowski products: the invariant MLP fits it far better than chance
    assert rows["seal-toy-invariant"]["final_test_loss"]["mean"] < 0.1
    assert rows["seal-toy-pfn-seal-group"]["lam"] in (0.1, 1.0)
