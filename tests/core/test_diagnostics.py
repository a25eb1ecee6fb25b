"""Invariance diagnostics: |Δf| per generator against analytic values, invariant models, the figure."""

import math

import numpy as np
import pytest
import torch
from conftest import random_events

import symfw
from symfw.core.diagnostics import (
    RANDOM_BOOST,
    diagnostic_directions,
    invariance_curves,
    invariance_lines,
    plot_invariance,
    summary_ratios,
)
from symfw.core.errors import UsageError
from symfw.plugins.lorentz_groups import BoostZ, Lorentz


def transverse_events(n=200):
    """Massless particles with pz = 0, so that a z-boost by ±θ changes E by the factor cosh θ."""
    p4 = random_events(n, 2, seed=5)
    p4[..., 3] = 0
    p4[..., 0] = p4[..., 1:3].norm(dim=-1)
    return p4, torch.ones(n, 2, dtype=torch.bool)


def test_delta_f_matches_the_analytic_change_of_the_energy_sum():
    p4, mask = transverse_events()
    energy = lambda x, m: (x[..., 0] * m).sum(-1) / 100  # noqa: E731
    grid = [0.0, 0.5, 1.0, 2.0]
    curves = invariance_curves([energy], Lorentz(), p4, mask, parameters=grid)
    total = energy(p4, mask)
    for k, theta in enumerate(grid):
        assert curves.dlogit["Kz"][k] == pytest.approx(float(total.mean()) * (math.cosh(theta) - 1), rel=1e-10)
        assert curves.dlogit["Jz"][k] < 1e-12  # energy is rotation invariant
        assert curves.dlogit["Jx"][k] < 1e-12
    assert curves.dlogit["Kx"][1] > 0 and curves.dlogit["Kx"][0] == 0
    assert curves.logit_std == pytest.approx(float(total.std(unbiased=False)), rel=1e-10)
    sig = torch.sigmoid
    expected = (sig(total * math.cosh(1.0)) - sig(total)).abs().mean()
    assert curves.dprob["Kz"][2] == pytest.approx(float(expected), rel=1e-10)


def test_weights_define_the_average():
    p4, mask = transverse_events(100)
    energy = lambda x, m: (x[..., 0] * m).sum(-1)  # noqa: E731
    w = torch.zeros(100, dtype=torch.float64)
    w[:7] = 3.0
    curves = invariance_curves([energy], BoostZ(), p4, mask, weight=w, parameters=[1.0])
    expected = float(energy(p4[:7], mask[:7]).mean()) * (math.cosh(1.0) - 1)
    assert curves.dlogit["Kz"][0] == pytest.approx(expected, rel=1e-10)


def test_invariant_model_has_zero_change_and_a_general_one_does_not():
    torch.manual_seed(0)
    invariant = symfw.build_model(symfw.load_spec("invariant")).double().eval()
    general = symfw.build_model(symfw.load_spec("pfn")).double().eval()
    p4 = random_events(300, 2, seed=2)
    mask = torch.ones(300, 2, dtype=torch.bool)
    grid = [0.0, 0.5, 1.5]
    inv = invariance_curves([invariant], Lorentz(), p4, mask, parameters=grid, label="inv")
    gen = invariance_curves([general], Lorentz(), p4, mask, parameters=grid, label="gen")
    assert inv.rows == ["Kx", "Ky", "Kz", "Jx", "Jy", "Jz", RANDOM_BOOST]
    scale = float(invariant(p4, mask).abs().mean())
    assert max(max(v) for v in inv.dlogit.values()) < 1e-9 * scale
    assert min(gen.dlogit[r][2] for r in gen.rows) > 1e-4
    assert gen.dlogit["Kx"][2] > gen.dlogit["Kx"][1]  # grows with the rapidity
    ratios = summary_ratios([gen, inv])
    assert set(ratios) == {"inv"} and min(ratios["inv"].values()) > 1e5
    # relative to each model's logit spread: a model scaled by 10 is not "more invariant"
    scaled = invariance_curves([lambda x, m: 10 * general(x, m)], Lorentz(), p4, mask, parameters=grid, label="x10")
    assert summary_ratios([gen, scaled])["x10"]["Kx"] == pytest.approx(0.1)
    assert summary_ratios([gen, scaled], relative=True)["x10"]["Kx"] == pytest.approx(1.0)
    # the output-quantile shift is unchanged by any increasing map of the output (here tanh(f/10))
    squashed = invariance_curves([lambda x, m: torch.tanh(general(x, m) / 10)], Lorentz(), p4, mask, parameters=grid,
                                 label="tanh")
    assert summary_ratios([gen, squashed], key="dquantile")["tanh"]["Kx"] == pytest.approx(1.0)
    assert summary_ratios([gen, squashed])["tanh"]["Kx"] > 2  # the raw |Δ logit| would call it more invariant
    assert 0 < gen.dquantile["Kx"][2] <= 1 and max(max(v) for v in inv.dquantile.values()) == 0


def test_ensembles_average_members_and_keep_their_spread():
    p4, mask = transverse_events(50)
    a = lambda x, m: x[..., 0].sum(-1)  # noqa: E731
    b = lambda x, m: 3 * x[..., 0].sum(-1)  # noqa: E731
    both = invariance_curves([a, b], BoostZ(), p4, mask, parameters=[1.0])
    one = invariance_curves([a], BoostZ(), p4, mask, parameters=[1.0])
    assert both.n_members == 2
    assert both.dlogit["Kz"][0] == pytest.approx(2 * one.dlogit["Kz"][0])
    assert both.dlogit_std["Kz"][0] == pytest.approx(one.dlogit["Kz"][0])


def test_directions_and_unknown_generators():
    rows = diagnostic_directions(Lorentz(), ["Kx", "Kz"])
    assert rows == {"Kx": ("Kx",), "Kz": ("Kz",), RANDOM_BOOST: ("Kx", "Kz")}
    assert list(diagnostic_directions(BoostZ())) == ["Kz"]  # one boost: no random direction
    with pytest.raises(UsageError, match="no generator 'Kw'"):
        diagnostic_directions(Lorentz(), ["Kw"])


def test_the_figure_is_a_png(tmp_path):
    p4, mask = transverse_events(40)
    fns = [lambda x, m: x[..., 0].sum(-1) / 50, lambda x, m: x[..., 1].sum(-1) / 50]
    curves = [invariance_curves([f], Lorentz(), p4, mask, parameters=[0, 0.5, 1], label=f"m{i}") for i, f in enumerate(fns)]
    path = tmp_path / "inv.png"
    plot_invariance(curves, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert np.isfinite(curves[1].mean_over_parameters("Kx"))


def test_many_models_are_told_apart_by_colour_along_the_random_direction(tmp_path):
    """Beyond four models the line styles would repeat: one colour per model, K·n̂ only."""
    p4, mask = transverse_events(40)
    fns = [lambda x, m, k=k: x[..., 0].sum(-1) / (50 + k) + k * x[..., 1].sum(-1) / 500 for k in range(6)]
    curves = [invariance_curves([f], Lorentz(), p4, mask, parameters=[0, 0.5, 1], label=f"m{i}") for i, f in enumerate(fns)]
    colour_by, lines = invariance_lines(curves)
    assert colour_by == "model" and [(m, r) for m, r, _, _ in lines] == [(m, RANDOM_BOOST) for m in range(6)]
    assert len({colour for _, _, colour, _ in lines}) == 6
    few_by, few = invariance_lines(curves[:2])
    assert few_by == "generator" and len(few) == 2 * len(curves[0].rows) and {s for *_, s in few} == {"-", "--"}
    path = tmp_path / "inv.png"
    plot_invariance(curves, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("preset", ["invariant-spurions", "pelican-spurions"])
def test_a_spurion_model_holds_its_claimed_group_to_float64_precision_and_not_the_full_one(preset, tmp_path):
    from symfw.core.diagnostics import invariance_summary

    torch.manual_seed(0)
    spurion_model, pfn = (symfw.build_model(symfw.load_spec(name)) for name in (preset, "pfn"))
    p4 = random_events(200, 2, seed=7, mass=0.105)
    mask = torch.ones(200, 2, dtype=torch.bool)
    out = invariance_summary([[pfn], [spurion_model]], ["pfn", preset], p4, mask, plot=tmp_path / "invariance.png")
    assert out["group"] == "lorentz"
    claimed = out["claimed"][preset]
    assert claimed["group"] == "so2-z" and list(claimed["dlogit"]) == ["Jz"]
    assert claimed["reason"] == spurion_model.residual_reason and "so2-z (input transform spurions)" in claimed["reason"]
    scale = claimed["logit_std"]
    assert claimed["max_dlogit"] < 1e-12 * max(scale, 1.0)  # exact under SO(2)_z
    full = out["models"][preset]["summary"]
    assert min(full[g]["dlogit"] for g in ("Kx", "Ky", "Kz", "Jx", "Jy")) > 1e-4 * scale  # not under the Lorentz group
    assert full["Jz"]["dlogit"] < 1e-12 * max(scale, 1.0)
    assert out["claimed"]["pfn"] == {"group": "trivial", "reason": pfn.residual_reason,
                                     "skipped": "claims no symmetry (trivial group)"}
    assert (tmp_path / "invariance-claimed.png").read_bytes()[:4] == b"\x89PNG"
    assert out["claimed_plot"] == str(tmp_path / "invariance-claimed.png")


def test_an_equivariant_four_vector_output_is_not_measured_as_an_invariance():
    from symfw.core.diagnostics import claimed_curves, claimed_entry

    model = symfw.build_model(symfw.load_spec("invariant-four-vector")).double().eval()
    p4, mask = random_events(20, 2), torch.ones(20, 2, dtype=torch.bool)
    assert model.residual_group.name == "lorentz" and model.output_transforms == "four-vector"
    assert model.residual_reason.endswith("the output is a four-vector: f(Λx) = Λ·f(x)")
    assert claimed_curves([model], p4, mask) is None
    assert claimed_entry(model, None)["skipped"].startswith("four-vector output: equivariant")
