"""Model assembly from presets: shapes, the paper's neuron budget, parameter counts."""

import pytest
import torch
from conftest import random_events

import symfw


@pytest.mark.parametrize("preset", ["pfn", "invariant", "hybrid", "hybrid-large", "hybrid-concat-weighted",
                                    "hybrid-concat-weight-input", "hybrid-concat-context-input",
                                    "longitudinal-invariant"])
def test_presets_build_and_give_one_logit_per_event(preset):
    model = symfw.build_model(symfw.load_spec(preset))
    p4 = random_events(7, 2, dtype=torch.float32)
    out = model(p4)
    assert out.shape == (7,) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("preset", ["pfn", "invariant", "hybrid"])
def test_paper_models_have_1152_hidden_neurons(preset):
    model = symfw.build_model(symfw.load_spec(preset))
    assert model.hidden_neuron_counts()["total"] == 1152


def test_hybrid_breakdown_matches_appendix_b():
    counts = symfw.build_model(symfw.load_spec("hybrid")).hidden_neuron_counts()
    assert counts == {"general": 64, "invariant": 64, "combiner": 128, "head": 896, "total": 1152}


def test_parameter_counts_add_up():
    model = symfw.build_model(symfw.load_spec("hybrid"))
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_padded_particles_do_not_change_the_output():
    model = symfw.build_model(symfw.load_spec("hybrid")).eval()
    p4 = random_events(5, 2, dtype=torch.float32)
    padded = torch.cat([p4, 100 * torch.ones(5, 1, 4)], 1)
    mask = torch.tensor([[True, True, False]] * 5)
    spec3 = symfw.load_spec("hybrid").model_copy(update={"n_particles": 3})
    model3 = symfw.build_model(spec3).eval()
    # same weights: the hybrid's layer shapes depend on N only through the invariant map
    state = {k: v for k, v in model.state_dict().items() if "invariant.encoder.net.0" not in k}
    model3.load_state_dict(state, strict=False)
    a = model3(padded, mask)
    b = model3(torch.cat([p4, torch.zeros(5, 1, 4)], 1), mask)
    torch.testing.assert_close(a, b)


def test_weighted_pt_weight_is_a_probability_of_the_context():
    model = symfw.build_model(symfw.load_spec("hybrid"), seed=0).eval()  # seeded: some initialisations saturate w to 1.0 in float32
    w = model.general_weight(random_events(9, 2, dtype=torch.float32))
    assert w.shape == (9,) and ((w > 0) & (w < 1)).all()


def test_weighted_pt_pools_as_the_paper_says():
    from symfw.plugins.weighted_pt import WeightedPt

    comb = WeightedPt(WeightedPt.Options(), latent_dim=3, context_dim=1).eval()
    g, s, ctx = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4, 1) * 50
    w = comb.weight(ctx).unsqueeze(-1)
    torch.testing.assert_close(comb(g, s, ctx), w * g + (1 - w) * s)


def test_a_model_sees_its_first_n_particles_slots_only():
    """Events with more slots than the spec's n_particles are cut to the first ones (jets: the
    hardest constituents), so a PFN or PELICAN built for 4 particles gives the same output on the
    first 4 slots as on 7."""
    from symfw.core.spec import resolve_spec

    g = torch.Generator().manual_seed(0)
    p3 = torch.randn(5, 7, 3, generator=g, dtype=torch.float64) * 20
    p4 = torch.cat([p3.norm(dim=-1, keepdim=True) + 1.0, p3], -1)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[0, 3:] = False
    for preset in ("pfn-jets", "pelican-jets", "hybrid-jets"):
        spec = resolve_spec({**symfw.load_spec(preset).model_dump(), "n_particles": 4})
        model = symfw.build_model(spec).double().eval()
        with torch.no_grad():
            torch.testing.assert_close(model(p4, mask), model(p4[:, :4], mask[:, :4]), rtol=0, atol=0)
            assert not torch.equal(model(p4, mask), model(p4[:, 1:5], mask[:, 1:5]))
