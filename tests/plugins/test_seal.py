"""SEAL penalties: Γ_G ≈ ε²·Γ_δ, exact derivatives, masks, weights, vmap, any group, bad options."""

import math

import pytest
import torch
from conftest import random_events
from torch import nn

import symfw
from symfw.core.errors import UsageError
from symfw.core.interfaces import Batch, SymmetryGroup
from symfw.core.kinematics import mdot, metric
from symfw.plugins.lorentz_groups import Lorentz
from symfw.plugins.seal_group import SPREAD_FLOOR, SealGroup
from symfw.plugins.seal_infinitesimal import SealInfinitesimal

LORENTZ = Lorentz()
NAMES = list(LORENTZ.generator_names)


def gamma_g(group=LORENTZ, **options):
    return SealGroup(SealGroup.Options(**options), group=group)


def gamma_d(group=LORENTZ, **options):
    return SealInfinitesimal(SealInfinitesimal.Options(**options), group=group)


def batch(n=48, n_particles=3, dtype=torch.float64, seed=0, weight=None):
    p4 = random_events(n, n_particles, dtype=dtype, seed=seed)
    mask = torch.ones(n, n_particles, dtype=torch.bool)
    w = torch.ones(n, dtype=dtype) if weight is None else weight
    return Batch(p4, mask, torch.zeros(n, dtype=dtype), w)


class Smooth(nn.Module):
    """A smooth, non-invariant test function of the (masked) particles: tanh MLP on p4/50."""

    def __init__(self, n_particles=3):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(4 * n_particles, 16), nn.Tanh(), nn.Linear(16, 1)).double()
        self.requires_grad_(False)

    def forward(self, p4, mask):
        return self.net((p4 * mask.unsqueeze(-1) / 50).flatten(1)).squeeze(-1)


def pfn64():
    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec("pfn").model_copy(update={"n_particles": 3}))
    return model.double().eval().requires_grad_(False)


# --------------------------------------------------------------------------- Γ_δ is the exact orbit derivative


def test_gamma_delta_of_the_energy_sum_is_analytic():
    # f = Σ E; K_x moves (E, px) → (E + θ px, px + θ E): ∂f/∂θ = Σ px
    b = batch()
    fn = lambda p4, mask: (p4[..., 0] * mask).sum(-1)  # noqa: E731
    expected = b.p4[..., 1].sum(-1).pow(2).mean()
    torch.testing.assert_close(gamma_d(generators=["Kx"])(fn, b), expected)
    # the energy is unchanged by rotations
    assert gamma_d(generators=["Jx", "Jy", "Jz"])(fn, b) < 1e-20


def test_gamma_delta_matches_central_finite_differences_per_generator():
    b, model = batch(), Smooth()
    names, derivs = gamma_d().per_generator(model, b)
    assert names == NAMES and derivs.shape == (6, b.p4.shape[0])
    eps = 1e-6
    for a, T in enumerate(LORENTZ.generators()):
        plus = model(b.p4 @ torch.linalg.matrix_exp(eps * T).T, b.mask)
        minus = model(b.p4 @ torch.linalg.matrix_exp(-eps * T).T, b.mask)
        torch.testing.assert_close(derivs[a], (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_gamma_g_is_eps_squared_gamma_delta_to_leading_order(name):
    b, model = batch(), Smooth()
    delta = gamma_d(generators=[name])(model, b)
    ratios = []
    for eps in (1e-2, 1e-4):
        g = gamma_g(generators=[name], rapidity=(eps, eps), angle=(eps, eps))(model, b)
        ratios.append(float(g / (eps**2 * delta)))
    assert abs(ratios[1] - 1) < 1e-3
    assert abs(ratios[1] - 1) < abs(ratios[0] - 1) + 1e-12  # converges as ε → 0


@pytest.mark.parametrize("name", ["Kx", "Kz", "Jy"])
def test_gamma_g_over_gamma_delta_on_the_pfn(name):
    b, model = batch(), pfn64()
    eps = 1e-5
    g = gamma_g(generators=[name], rapidity=(eps, eps), angle=(eps, eps))(model, b)
    assert g / (eps**2 * gamma_d(generators=[name])(model, b)) == pytest.approx(1, rel=2e-2)  # ReLU kinks


@pytest.mark.parametrize("model", [Smooth(), pfn64()], ids=["smooth", "pfn"])
def test_double_vjp_and_the_per_event_gradient_give_the_same_products_as_jvp(model):
    b = batch(n=24) if isinstance(model, Smooth) else batch(n=24, n_particles=3)
    _, forward = gamma_d().per_generator(model, b)
    for method in ("double-vjp", "gradient"):
        _, reverse = gamma_d(method=method).per_generator(model, b)
        torch.testing.assert_close(reverse, forward, rtol=1e-10, atol=1e-12)
    torch.manual_seed(2)
    a = gamma_d(estimator="random")(model, b)
    torch.manual_seed(2)
    torch.testing.assert_close(gamma_d(estimator="random", method="double-vjp")(model, b), a)


def test_reductions_and_the_probability_output():
    b, model = batch(), Smooth()
    total, mean = gamma_d()(model, b), gamma_d(reduction="mean")(model, b)
    torch.testing.assert_close(mean, total / 6)
    _, d_logit = gamma_d().per_generator(model, b)
    p = torch.sigmoid(model(b.p4, b.mask))
    expected = ((p * (1 - p)) ** 2 * d_logit.pow(2).sum(0)).mean()  # dσ(f) = σ(1 − σ) df
    torch.testing.assert_close(gamma_d(on="probability")(model, b), expected)


def test_random_estimator_is_unbiased():
    b, model = batch(n=16), Smooth()
    exact = gamma_d()(model, b)
    torch.manual_seed(0)
    penalty = gamma_d(estimator="random")
    draws = torch.stack([penalty(model, b) for _ in range(200)])
    stderr = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - exact) < 4 * stderr
    assert draws.std() > 0  # it is random


# --------------------------------------------------------------------------- invariant models are not penalised


@pytest.mark.parametrize("preset", ["invariant", "pelican"])
def test_lorentz_invariant_models_have_zero_penalties(preset):
    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec(preset)).double().eval()
    b = batch(n_particles=2)
    scale = model(b.p4, b.mask).pow(2).mean()
    assert gamma_d()(model, b) < 1e-16 * scale * 1e4
    assert gamma_g()(model, b) < 1e-20 * scale * 1e4
    general = symfw.build_model(symfw.load_spec("pfn")).double().eval()
    assert gamma_d()(general, b) > 1e-6 and gamma_g()(general, b) > 1e-6


# --------------------------------------------------------------------------- masks, weights, purity


def test_padded_particles_are_never_moved_and_their_content_does_not_matter():
    b = batch(n_particles=4)
    mask = b.mask.clone()
    mask[::2, 3] = False
    clean = Batch(b.p4 * mask.unsqueeze(-1), mask, b.label, b.weight)
    junk_p4 = torch.where(mask.unsqueeze(-1), b.p4, torch.full_like(b.p4, 123.0))
    junk = Batch(junk_p4, mask, b.label, b.weight)
    model = pfn64()
    model4 = symfw.build_model(symfw.load_spec("pfn").model_copy(update={"n_particles": 4})).double().eval()
    model4.load_state_dict(model.state_dict())
    torch.testing.assert_close(gamma_d()(model4, junk), gamma_d()(model4, clean))
    torch.manual_seed(1)
    a = gamma_g()(model4, junk)
    torch.manual_seed(1)
    torch.testing.assert_close(a, gamma_g()(model4, clean))
    # the tangent of a padded particle is zero, even for a function that reads padded entries
    reads_all = lambda p4, m: p4[..., 0].sum(-1)  # noqa: E731
    _, d = gamma_d(generators=["Kx"]).per_generator(reads_all, junk)
    torch.testing.assert_close(d[0], (junk_p4[..., 1] * mask).sum(-1))


@pytest.mark.parametrize("penalty", [gamma_d(), gamma_g(rapidity=(0.5, 0.5), angle=(0.0, 0.0), generators=["Kx"])])
def test_sample_weights_are_honoured(penalty):
    b, model = batch(n=40), Smooth()
    weight = torch.zeros(40, dtype=torch.float64)
    weight[:10] = 2.0
    sub = Batch(b.p4[:10], b.mask[:10], b.label[:10], torch.ones(10, dtype=torch.float64))
    torch.manual_seed(4)
    weighted = penalty(model, Batch(b.p4, b.mask, b.label, weight))
    torch.manual_seed(4)
    alone = penalty(model, sub)
    if isinstance(penalty, SealInfinitesimal):
        torch.testing.assert_close(weighted, alone)
    else:  # the same elements need not be drawn for the subset: compare with the unweighted option
        torch.manual_seed(4)
        ignoring = SealGroup(penalty.options.model_copy(update={"weighted": False}), LORENTZ)(
            model, Batch(b.p4, b.mask, b.label, weight)
        )
        assert weighted != ignoring
        assert weighted > 0 and alone > 0


def test_penalties_leave_the_batch_untouched_and_give_gradients():
    b = batch(dtype=torch.float32, n_particles=2)
    before = b.p4.clone()
    model = symfw.build_model(symfw.load_spec("pfn")).train()
    for penalty in (gamma_g(), gamma_d(), gamma_d(estimator="random"), gamma_d(method="double-vjp")):
        model.zero_grad()
        value = penalty(model, b)
        value.backward()
        assert torch.isfinite(value) and value > 0
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.general.parameters())
    assert torch.equal(b.p4, before)


def test_train_mode_batchnorm_falls_back_to_dual_tensors_with_the_same_value():
    # a model updating running statistics in place cannot be traced by torch.func.jvp
    b = batch(n=32, dtype=torch.float32, n_particles=2)
    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec("pfn")).train()
    penalty = gamma_d(generators=["Kx", "Jy"])
    torch.manual_seed(5)
    mutating = penalty(model, b)
    for m in model.modules():
        if hasattr(m, "track_running_stats"):
            m.track_running_stats = False  # same batch statistics, no update: the torch.func path
    for method in ("jvp", "double-vjp"):
        torch.manual_seed(5)  # the same random signs
        frozen = gamma_d(generators=["Kx", "Jy"], method=method)(model, b)
        torch.testing.assert_close(frozen, mutating, rtol=1e-4, atol=0)


def test_random_signs_keep_batch_statistics_from_absorbing_a_boost():
    # batch norm in training mode subtracts what the whole batch does together; a boost raises
    # every energy, so moving all events along +T hides much of the model's dependence on E
    b = batch(n=512, dtype=torch.float64, n_particles=2)
    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec("pfn")).double().train()
    norms = [m for m in model.modules() if hasattr(m, "running_mean")]
    for m in norms:
        m.momentum = 1.0  # one pass stores this batch's statistics as the running ones
    with torch.no_grad():
        model(b.p4, b.mask)
    model.eval()  # reference: the per-event derivative with the batch statistics held fixed
    reference = gamma_d(generators=["Kx", "Kz"], random_signs=False)(model, b)
    model.train()
    for m in norms:
        m.track_running_stats = False  # batch statistics, as a model called in training mode
    torch.manual_seed(1)
    signed = gamma_d(generators=["Kx", "Kz"])(model, b)
    coherent = gamma_d(generators=["Kx", "Kz"], random_signs=False)(model, b)
    assert abs(signed / reference - 1) < 0.05  # measured: 1.3 %
    assert coherent < 0.5 * reference  # measured: 22 % of it


def test_penalties_compose_with_vmap_over_ensemble_members():
    from torch.func import functional_call, stack_module_state, vmap

    models = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(symfw.build_model(symfw.load_spec("pfn")).double().eval())
    params, buffers = stack_module_state(models)
    base = symfw.build_model(symfw.load_spec("pfn")).double().eval().to("meta")
    b = batch(n=16, n_particles=2)

    def member(penalty):
        return lambda p, bu: penalty(lambda x, m: functional_call(base, (p, bu), (x, m)), b)

    sequential = torch.stack([gamma_d()(m, b) for m in models])  # eval mode: random signs change nothing
    for method in ("jvp", "double-vjp", "gradient"):
        vmapped = vmap(member(gamma_d(method=method)), randomness="different")(params, buffers)
        torch.testing.assert_close(vmapped, sequential)
    torch.testing.assert_close(vmap(member(gamma_d(random_signs=False)))(params, buffers), sequential)
    group_values = vmap(member(gamma_g()), randomness="different")(params, buffers)
    assert group_values.shape == (3,) and (group_values > 0).all()


# --------------------------------------------------------------------------- any group, and the sampler


class Dilations(SymmetryGroup):
    """A third-party group that is not Lorentz: x → e^θ x, generator D = identity."""

    name = "dilations"
    generator_names = ("D",)

    def generators(self, dtype=torch.float64, device=None):
        return torch.eye(4, dtype=dtype, device=device)[None]


def test_a_third_party_group_gets_both_penalties_for_free():
    b = batch()
    ratio = lambda p4, m: p4[..., 0].sum(-1) / p4[..., 3].abs().sum(-1)  # noqa: E731 - scale invariant
    energy = lambda p4, m: p4[..., 0].sum(-1)  # noqa: E731 - degree 1: ∂f/∂θ = f
    group = Dilations()
    assert gamma_d(group)(ratio, b) < 1e-20
    torch.testing.assert_close(gamma_d(group)(energy, b), energy(b.p4, b.mask).pow(2).mean())
    g = gamma_g(group, rapidity=(0.1, 0.1))(energy, b)  # e^{±0.1} scaling
    f = energy(b.p4, b.mask).pow(2).mean()
    assert min(abs(g - f * (math.exp(0.1) - 1) ** 2), abs(g - f * (math.exp(-0.1) - 1) ** 2)) < g  # a mix of both signs
    assert f * (math.exp(-0.1) - 1) ** 2 <= g <= f * (math.exp(0.1) - 1) ** 2


def test_sampled_elements_are_lorentz_and_follow_the_options():
    eta = metric()
    torch.manual_seed(0)
    lam = gamma_g(rapidity=(0.2, 1.5)).sample(300)
    assert (lam.transpose(1, 2) @ eta @ lam - eta).abs().amax() < 1e-9
    boost = gamma_g(generators=["Kz"], rapidity=(0.7, 0.7)).sample(50)
    y = torch.atanh(boost[:, 0, 3] / boost[:, 0, 0])
    torch.testing.assert_close(y.abs(), torch.full((50,), 0.7, dtype=torch.float64))
    assert (y > 0).any() and (y < 0).any()
    axis = gamma_g(generators=["Kx", "Ky", "Kz"], direction="axis", rapidity=(1.0, 1.0)).sample(60)
    moved = (axis[:, 0, 1:].abs() > 1e-12).sum(1)
    assert (moved == 1).all()  # each element boosts along exactly one axis
    rotations = gamma_g(generators=["Jx", "Jy", "Jz"]).sample(20)
    torch.testing.assert_close(rotations[:, 0], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(20, 4))
    # a β range: |β| = tanh|y| uniform in it (its quartiles, not those of the rapidity)
    beta = gamma_g(generators=["Kz"], beta=(0.2, 0.9)).sample(4000)
    b = (beta[:, 0, 3] / beta[:, 0, 0]).abs()
    assert b.min() >= 0.2 - 1e-12 and b.max() <= 0.9 + 1e-12
    torch.testing.assert_close(b.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)),
                               torch.tensor([0.375, 0.55, 0.725], dtype=torch.float64), atol=0.02, rtol=0)


# --------------------------------------------------------------------------- bad options


def test_unknown_generator_is_a_usage_error_listing_the_known_ones():
    with pytest.raises(UsageError, match="group 'lorentz' has no generator 'Kq'; known: Kx, Ky, Kz, Jx, Jy, Jz"):
        gamma_d(generators=["Kq"])
    with pytest.raises(UsageError, match="no generator 'Jq'"):
        gamma_g(generators=["Kx", "Jq"])


def test_bad_ranges_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SealGroup.Options(rapidity=(2.0, 1.0))
    with pytest.raises(ValidationError):
        SealGroup.Options(angle=(-1.0, 1.0))
    with pytest.raises(ValidationError, match="beta"):
        SealGroup.Options(beta=(0.5, 1.0))  # β = 1 is no Lorentz boost


def test_negative_lambda_through_the_cli_is_exit_2(runner, cli):
    result = runner.invoke(cli, ["build", "--preset", "pfn", "--penalty", "seal-infinitesimal", "--lam", "-1"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: build: penalties[0].lam: Input should be greater than or equal to 0"


def test_unknown_generator_through_the_cli_is_exit_2(runner, cli, tmp_path):
    reg = tmp_path / "reg.toml"
    reg.write_text(
        '[presets.bad]\ngeneral = { encoder = { name = "pfn" } }\n'
        'penalties = [{ name = "seal-group", options = { generators = ["Kx", "Kq"] } }]\n'
    )
    result = runner.invoke(cli, ["build", "--registry", str(reg), "--preset", "bad"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: build: penalties[0].options: group 'lorentz' has no generator 'Kq'")
    assert "Traceback" not in result.output


def test_the_seal_presets_build_with_their_penalty(runner, cli):
    for preset, penalty in (("pfn-seal-group", "seal-group"), ("pfn-seal-infinitesimal", "seal-infinitesimal")):
        spec = symfw.load_spec(preset)
        assert [(p.name, p.lam) for p in spec.penalties] == [(penalty, 1.0)]
        assert spec.general.encoder.options == symfw.load_spec("pfn").general.encoder.options
    result = runner.invoke(cli, ["build", "--preset", "pfn", "--penalty", "seal-group", "--lam", "0.5", "--quiet"])
    assert result.exit_code == 0 and 'name = "seal-group"' in result.stdout and "lam = 0.5" in result.stdout


# --------------------------------------------------------------------------- reuse of the training pass, relative


def test_gamma_g_with_the_training_logits_equals_the_concatenated_evaluation():
    b, model = batch(), Smooth()
    torch.manual_seed(4)
    concatenated = gamma_g()(model, b)
    given = Batch(b.p4, b.mask, b.label, b.weight, logits=model(b.p4, b.mask))
    torch.manual_seed(4)  # the same group elements
    torch.testing.assert_close(gamma_g()(model, given), concatenated, rtol=1e-12, atol=0)


@pytest.mark.parametrize("make", [gamma_g, gamma_d, lambda **o: gamma_d(estimator="random", **o)])
def test_relative_penalty_does_not_fall_when_the_output_shrinks(make):
    b, model = batch(), Smooth()
    c = 0.1
    scaled = lambda p4, mask: c * model(p4, mask)  # noqa: E731 - the same function, flattened

    def value(fn, **options):
        torch.manual_seed(6)
        return float(make(**options)(fn, b))

    # plain: flattening the output 10x lowers the penalty 100x; relative: only through the variance floor
    assert value(scaled) == pytest.approx(c**2 * value(model), rel=1e-9)
    var = float(model(b.p4, b.mask).var(unbiased=False))
    expected = value(model, relative=True) * c**2 * (var + SPREAD_FLOOR) / (c**2 * var + SPREAD_FLOOR)
    assert value(scaled, relative=True) == pytest.approx(expected, rel=1e-9)
    assert value(scaled, relative=True) > 0.5 * value(model, relative=True)  # var = 0.004 here


def test_orbit_points_move_the_derivatives_to_random_boosts_of_the_events():
    b, model = batch(), Smooth()
    at_data = gamma_d()
    torch.manual_seed(8)
    on_orbit = gamma_d(orbit_rapidity=(0.5, 0.5))
    points = on_orbit.points(b)
    # every point is a Lorentz transform of its event: same masses, different momenta
    torch.testing.assert_close(mdot(points, points), mdot(b.p4, b.p4), rtol=1e-9, atol=1e-6)
    assert (points - b.p4).abs().amax() > 1.0
    torch.manual_seed(8)
    value = on_orbit(model, b)
    moved = Batch(points, b.mask, b.label, b.weight)
    torch.testing.assert_close(value, at_data(model, moved))  # Γ_δ at the moved events
    assert at_data.points(b) is b.p4


def test_bad_orbit_range_is_a_validation_error():
    with pytest.raises(ValueError, match="orbit_rapidity"):
        SealInfinitesimal.Options(orbit_rapidity=(1.0, 0.5))


@pytest.mark.parametrize("make", [gamma_g, gamma_d])
def test_event_fraction_evaluates_the_first_events_only(make):
    b, model = batch(n=40), Smooth()
    head = Batch(b.p4[:10], b.mask[:10], b.label[:10], b.weight[:10])
    torch.manual_seed(9)
    part = make(event_fraction=0.25)(model, b)
    torch.manual_seed(9)
    torch.testing.assert_close(part, make()(model, head))
    torch.manual_seed(9)
    assert not torch.allclose(make()(model, b), part)
    with pytest.raises(ValueError, match="event_fraction"):
        make(event_fraction=0.0)
