"""Spurions, the input method and the PELICAN-style encoder: labels, exact residual symmetries."""

import itertools

import pytest
import torch
from conftest import random_events

import symfw
from symfw.core.interfaces import Particles, lorentz_generator
from symfw.core.invariance import assert_invariant, assert_not_invariant
from symfw.plugins.input_method import InputMethod
from symfw.plugins.lorentz_groups import Lorentz
from symfw.plugins.spurions import SPURIONS, Spurions

LORENTZ_NAMES = ("Kx", "Ky", "Kz", "Jx", "Jy", "Jz")
SETS = [["beam"], ["beam-plus"], ["time"], ["beam-axis"], ["time", "beam-axis"], ["beam", "time"], ["beam", "beam-axis"],
        ["beam-plus", "time"]]

#: the physics, written out independently of the code: the generators fixing each set's spurions
#: (N_x = K_x − J_y and N_y = K_y + J_x are the null rotations fixing e+ = (1, 0, 0, 1))
NULL = {"Nx": {"Kx": 1.0, "Jy": -1.0}, "Ny": {"Ky": 1.0, "Jx": 1.0}}
UNBROKEN = {("beam",): ["Jz"], ("beam-plus",): ["Nx", "Ny", "Jz"], ("time",): ["Jx", "Jy", "Jz"],
            ("beam-axis",): ["Kx", "Ky", "Jz"]}
REGISTERED = {("beam",): "so2-z", ("beam-plus",): "se2", ("time",): "so3", ("beam-axis",): "so12-z"}


def unbroken(spurion_set) -> list[str]:
    """Any two of the sets leave SO(2)_z (J_z)."""
    return UNBROKEN.get(tuple(spurion_set), ["Jz"])


def coefficients(name) -> torch.Tensor:
    """(6,) coefficients over LORENTZ_NAMES of a generator named in UNBROKEN."""
    row = torch.zeros(6, dtype=torch.float64)
    for gen, c in NULL.get(name, {name: 1.0}).items():
        row[LORENTZ_NAMES.index(gen)] = c
    return row


def spurions(*names):
    return Spurions(Spurions.Options(set=list(names)))


def model_with(spurion_set, preset="pelican-spurions", dtype=torch.float64):
    spec = symfw.load_spec(preset).model_copy(deep=True)
    spec.inputs[0].options["set"] = list(spurion_set)
    torch.manual_seed(0)
    return symfw.build_model(spec).to(dtype).eval()


# --------------------------------------------------------------------------- the transform


def test_spurions_are_appended_with_one_hot_labels():
    p4 = random_events(3, 2)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    extra = torch.full((3, 2, 1), 7.0, dtype=torch.float64)  # a channel from an earlier transform
    t = spurions("beam", "time")
    out = t(Particles(p4 * mask.unsqueeze(-1), mask, extra, p4.new_zeros(3, 0)))
    assert t.labels == ["particle", "beam+", "beam-", "time"]
    assert out.p4.shape == (3, 5, 4) and out.mask[:, 2:].all()
    expected = torch.tensor([[1, 0, 0, 1], [1, 0, 0, -1], [1, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(out.p4[:, 2:], expected.expand(3, 3, 4))
    torch.testing.assert_close(out.p4[:, :2], p4 * mask.unsqueeze(-1))
    # channels: the earlier one, then one-hot [particle, beam+, beam-, time]
    assert out.channels.shape == (3, 5, 5)
    torch.testing.assert_close(out.channels[0, 0], torch.tensor([7.0, 1, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(out.channels[1, 1], torch.tensor([7.0, 0, 0, 0, 0], dtype=torch.float64))  # padding
    torch.testing.assert_close(out.channels[2, 2:], torch.cat([torch.zeros(3, 2), torch.eye(3)], 1).double())
    # exactly one label per real entry (particle or spurion), none for padding
    torch.testing.assert_close(out.channels[:, :, 1:].sum(-1), out.mask.double())
    assert not out.mask[1, 1]


def test_bad_spurion_sets_are_refused(runner, cli):
    from pydantic import ValidationError

    for bad in ([], ["beam", "beam"], ["beams"]):
        with pytest.raises(ValidationError):
            Spurions.Options(set=bad)
    result = runner.invoke(cli, ["build", "--spurions", "beam,beam"])
    assert result.exit_code == 2 and "inputs[0].options.set: Value error, each spurion set may appear once" in result.stderr


def test_build_spurions_option_writes_the_inputs(runner, cli, tmp_path):
    out = tmp_path / "s.toml"
    result = runner.invoke(cli, ["build", "--preset", "invariant-input", "--spurions", "beam,time", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    spec = symfw.load_spec(out)
    assert [(r.name, r.options) for r in spec.inputs] == [
        ("input", {"quantities": ["E", "pz"], "leading": 0, "log": False}),
        ("spurions", {"set": ["beam", "time"]}),
    ]
    result = runner.invoke(cli, ["build", "--preset", "invariant-spurions", "--spurions", "none", "-q"])
    assert result.exit_code == 0 and 'name = "spurions"' not in result.stdout


# --------------------------------------------------------------------------- which symmetry survives


@pytest.mark.parametrize("spurion_set", SETS, ids=lambda s: "+".join(s))
def test_the_documented_unbroken_generators_are_the_stabiliser_of_the_spurions(spurion_set):
    # independent of the table: solve T s = 0 for T in so(1,3) (T = Σ c_a T_a) by SVD
    vectors = torch.tensor([v for s in spurion_set for _, v in SPURIONS[s]], dtype=torch.float64)
    basis = torch.stack([lorentz_generator(n) for n in LORENTZ_NAMES])  # (6, 4, 4)
    system = torch.einsum("aij,kj->kia", basis, vectors).reshape(-1, 6)  # rows: components of T s_k
    _, sv, vh = torch.linalg.svd(system)
    rank = int((sv > 1e-10).sum())
    null = vh[rank:]  # the stabiliser algebra, as coefficient vectors
    expected = torch.stack([coefficients(n) for n in unbroken(spurion_set)])
    assert null.shape[0] == expected.shape[0]
    # same subspace: projecting the expected basis onto the null space loses nothing
    torch.testing.assert_close(expected @ null.T @ null, expected, atol=1e-10, rtol=0)
    # and the transform's declared group has exactly this algebra
    declared = spurions(*spurion_set).keeps.generators().reshape(-1, 16)
    lorentz = torch.stack([lorentz_generator(n) for n in LORENTZ_NAMES]).reshape(6, 16)
    coef = torch.linalg.lstsq(lorentz.T, declared.T).solution.T  # (k, 6)
    assert coef.shape[0] == null.shape[0]
    torch.testing.assert_close(coef @ null.T @ null, coef, atol=1e-10, rtol=0)


def test_beam_and_beam_plus_together_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'beam' already holds e\\+"):
        Spurions.Options(set=["beam", "beam-plus"])


@pytest.mark.parametrize("preset", ["pelican-spurions", "invariant-spurions"])
@pytest.mark.parametrize("spurion_set", SETS, ids=lambda s: "+".join(s))
def test_a_spurion_model_is_exactly_invariant_under_its_unbroken_subgroup_only(preset, spurion_set):
    model = model_with(spurion_set, preset)
    p4 = random_events(64, 2, seed=1)
    mask = torch.ones(64, 2, dtype=torch.bool)
    lorentz, keep = Lorentz(Lorentz.Options(max_rapidity=1.5)), unbroken(spurion_set)
    rng = torch.Generator().manual_seed(0)
    for name in LORENTZ_NAMES:
        if name in keep:
            assert_invariant(model, lorentz, p4, mask, generator=name, rng=rng)
        else:
            assert_not_invariant(model, lorentz, p4, mask, generator=name, rtol=1e-6, rng=rng)
    kept = spurions(*spurion_set).keeps
    kept.options = kept.Options(max_rapidity=1.5)
    for name in kept.generator_names:  # the null rotations too, which are no single K or J
        assert_invariant(model, kept, p4, mask, generator=name, rng=rng)
    assert_invariant(model, kept, p4, mask, rng=rng)  # finite elements of the whole subgroup


def test_spurions_are_never_transformed_by_the_penalties():
    from symfw.core.interfaces import Batch
    from symfw.plugins.seal_infinitesimal import SealInfinitesimal

    model = model_with(["beam"]).requires_grad_(False)
    p4 = random_events(32, 2)
    b = Batch(p4, torch.ones(32, 2, dtype=torch.bool), torch.zeros(32), torch.ones(32, dtype=torch.float64))
    _, d = SealInfinitesimal(SealInfinitesimal.Options(), Lorentz()).per_generator(model, b)
    per_generator = d.pow(2).mean(1)
    scale = model(p4, b.mask).pow(2).mean()
    assert per_generator[LORENTZ_NAMES.index("Jz")] < 1e-20 * scale
    others = [per_generator[i] for i, n in enumerate(LORENTZ_NAMES) if n != "Jz"]
    assert min(others) > 1e-8 * scale  # were the spurions boosted too, the model would look invariant


# --------------------------------------------------------------------------- the input method


def test_input_method_scalars_are_per_particle_quantities():
    p4 = random_events(4, 3)
    mask = torch.tensor([[True, True, False]] * 4)
    t = InputMethod(InputMethod.Options(quantities=["E", "pz", "pT"]))
    out = t(Particles.from_p4(p4 * mask.unsqueeze(-1), mask))
    assert out.scalars.shape == (4, 9) and out.p4.shape == p4.shape
    torch.testing.assert_close(out.scalars[:, 0], p4[:, 0, 0])
    torch.testing.assert_close(out.scalars[:, 4], p4[:, 1, 3])
    torch.testing.assert_close(out.scalars[:, 5], torch.hypot(p4[:, 1, 1], p4[:, 1, 2]))
    assert (out.scalars[:, 6:] == 0).all()  # padded particle


def test_input_method_leading_and_log():
    p4 = random_events(4, 3)
    mask = torch.ones(4, 3, dtype=torch.bool)
    t = InputMethod(InputMethod.Options(quantities=["E", "pz"], leading=2, log=True))
    out = t(Particles.from_p4(p4, mask))
    assert out.scalars.shape == (4, 4)
    pz = p4[:, 1, 3]
    torch.testing.assert_close(out.scalars[:, 3], torch.sign(pz) * torch.log1p(pz.abs()))


def test_input_and_spurion_models_see_the_same_information_with_the_same_symmetry():
    p4 = random_events(64, 2, seed=2)
    mask = torch.ones(64, 2, dtype=torch.bool)
    lorentz = Lorentz()
    rng = torch.Generator().manual_seed(0)
    for preset in ("invariant-input", "invariant-spurions"):
        torch.manual_seed(0)
        model = symfw.build_model(symfw.load_spec(preset)).double().eval()
        assert_invariant(model, lorentz, p4, mask, generator="Jz", rng=rng)
        for name in ("Kz", "Kx", "Jx"):
            assert_not_invariant(model, lorentz, p4, mask, generator=name, rtol=1e-6, rng=rng)
    # E and pz per particle: the features the beam spurions add are E ∓ pz
    scalars = InputMethod(InputMethod.Options())(Particles.from_p4(p4)).scalars
    torch.testing.assert_close(scalars, p4[..., [0, 3]].flatten(1))


# --------------------------------------------------------------------------- the PELICAN-style encoder


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pelican_is_lorentz_and_permutation_invariant(dtype):
    torch.manual_seed(0)
    spec = symfw.load_spec("pelican").model_copy(update={"n_particles": 4})
    model = symfw.build_model(spec).to(dtype).eval()
    p4 = random_events(64, 4, dtype=dtype, seed=3, mass=5.0)
    mask = torch.ones(64, 4, dtype=torch.bool)
    assert_invariant(model, Lorentz(Lorentz.Options(max_rapidity=2.0)), p4, mask, rng=torch.Generator().manual_seed(0))
    for perm in itertools.islice(itertools.permutations(range(4)), 1, 6):
        torch.testing.assert_close(model(p4[:, list(perm)], mask), model(p4, mask))


def test_pelican_ignores_padded_particles():
    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec("pelican").model_copy(update={"n_particles": 3})).double().eval()
    p4 = random_events(8, 3)
    mask = torch.tensor([[True, True, False]] * 8)
    junk = p4.clone()
    junk[:, 2] = 55.0
    a = model(p4 * mask.unsqueeze(-1), mask)
    torch.testing.assert_close(model(junk, mask), a)
    two = symfw.build_model(symfw.load_spec("pelican")).double().eval()
    two.load_state_dict(model.state_dict())
    torch.testing.assert_close(two(p4[:, :2]), a)  # same as the event without the padding slot
    assert not torch.allclose(model(p4, torch.ones(8, 3, dtype=torch.bool)), a)  # the third particle matters when real


def test_pelican_tells_the_spurions_apart_by_their_labels():
    # the reflection z → −z maps e+ ↔ e−; d_ij are reflection invariant, so only the labels
    # let the encoder see the difference between an event and its mirror image
    flip = torch.diag(torch.tensor([1.0, 1, 1, -1], dtype=torch.float64))
    p4 = random_events(16, 2)
    beam = model_with(["beam"])
    assert (beam(p4 @ flip) - beam(p4)).abs().max() > 1e-6 * beam(p4).abs().max()
    torch.manual_seed(0)
    plain = symfw.build_model(symfw.load_spec("pelican")).double().eval()
    torch.testing.assert_close(plain(p4 @ flip), plain(p4))


# --------------------------------------------------------------------------- declared residual groups

from symfw.core.groups import act  # noqa: E402
from symfw.core.invariance import invariance_deviation  # noqa: E402

#: what the physics says each built-in preset keeps exactly
PRESET_RESIDUAL = {
    "pfn": "trivial",  # a PFN on raw four-vectors
    "pfn-seal-group": "trivial",  # a penalty encourages, it does not enforce
    "pfn-seal-infinitesimal": "trivial",
    "hybrid": "trivial",  # the PFN subnet breaks everything
    "hybrid-large": "trivial",
    "hybrid-concat-weighted": "trivial",
    "hybrid-concat-weight-input": "trivial",
    "hybrid-concat-context-input": "trivial",
    "invariant": "lorentz",  # Minkowski products
    "pelican": "lorentz",  # d_ij
    "longitudinal-invariant": "longitudinal",  # pT, m², Δy, Δφ
    "invariant-spurions": "so2-z",  # e± fix t and z
    "pelican-spurions": "so2-z",
    "invariant-input": "so2-z",  # E and pz are unchanged only by rotations about z
    "invariant-four-vector": "lorentz",  # invariant weights w_i: the output p = Σ w_i p_i is equivariant
    "pfn-jets": "trivial",  # jet-frame features: η, φ and E are frame quantities
    "pfn-jets-regression": "trivial",
    "hybrid-jets": "trivial",
    "hybrid-jets-regression": "trivial",
    "pelican-jets": "lorentz",
    "pelican-jets-four-vector": "lorentz",
    "pfn-jets-four-vector": "trivial",
    "invariant-jets-four-vector": "lorentz",  # invariant latent and w_i: p = Σ w_i p_i is equivariant
    "invariant-jets": "lorentz",
    "pfn-jets-seal-group": "trivial",
    "pfn-jets-seal-infinitesimal": "trivial",
    "invariant-jets-spurions": "so2-z",
    "invariant-jets-input": "so2-z",
    "pelican-jets-spurions": "so2-z",  # e± as labelled particles
    "pelican-jets-input": "so2-z",  # E_i E_j and pz_i pz_j next to d_ij
}


def test_every_builtin_preset_declares_the_residual_group_the_physics_says():
    from symfw.core.registry import BUILTIN_SOURCE, load_registry

    reg = load_registry()  # fresh: other tests add presets to the process-wide registry
    presets = {name for name, source in reg.preset_sources.items() if source == BUILTIN_SOURCE}
    assert presets == set(PRESET_RESIDUAL), f"state the residual group of {presets ^ set(PRESET_RESIDUAL)} here"
    for name, expected in PRESET_RESIDUAL.items():
        model = symfw.build_model(symfw.load_spec(name, registry=reg), reg)
        assert model.residual_group.name == expected, (name, model.residual_reason)
        assert model.residual_reason.startswith(f"{expected} = ")


@pytest.mark.parametrize("preset", sorted(PRESET_RESIDUAL))
def test_each_preset_is_invariant_along_exactly_its_declared_generators(preset):
    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec(preset)).double().eval()
    if model.output_transforms == "four-vector":  # the head starts at w_i = 1 (Σ p_i: equivariant by accident)
        torch.nn.init.normal_(model.head.weights.out.weight, std=0.1)
    kept = model.residual_group.generator_names
    n = model.spec.n_particles if model.spec.n_particles > 2 else 2
    p4 = random_events(64 if n == 2 else 8, n, seed=4, mass=0.105)
    mask = torch.ones(p4.shape[:2], dtype=torch.bool)
    lorentz = Lorentz(Lorentz.Options(max_rapidity=1.0))
    for name in LORENTZ_NAMES:
        if model.output_transforms == "four-vector":  # compare f(Λx) with Λ·f(x)
            lam = lorentz.sample(p4.shape[0], generator=name, rng=torch.Generator().manual_seed(1))
            moved, ref = model(act(lam, p4, mask), mask), act(lam, model(p4, mask)[:, None])[:, 0]
            worst = float(((moved - ref).abs().amax(1) / ref.abs().max()).max())
        else:
            worst = float(invariance_deviation(model, lorentz, p4, mask, generator=name,
                                               rng=torch.Generator().manual_seed(1)).max())
        if name in kept:
            assert worst < 1e-9, (preset, name, worst)  # float64 rounding: 1e-15-1e-12 measured
        else:
            assert worst > 1e-8, (preset, name, worst)  # the claim is not smaller than the truth (2e-7 and up)


@pytest.mark.parametrize("spurion_set", SETS, ids=lambda s: "+".join(s))
def test_spurions_declare_the_registered_stabiliser(spurion_set):
    expected = REGISTERED.get(tuple(spurion_set), "so2-z")
    keeps = spurions(*spurion_set).keeps
    assert keeps.name == expected and set(keeps.generator_names) == set(unbroken(spurion_set))
    assert model_with(spurion_set).residual_group.name == expected


#: the physics of each quantity, written out independently: the generators that leave it unchanged
QUANTITY_KEPT = {"E": ["Jx", "Jy", "Jz"], "px": ["Ky", "Kz", "Jx", "Ny"], "py": ["Kx", "Kz", "Jy", "Nx"], "pz": ["Kx", "Ky", "Jz"],
                 "E-pz": ["Nx", "Ny", "Jz"], "pT": ["Kz", "Jz"], "eta": ["Jz"], "phi": ["Kz"], "y": ["Jz"],
                 "m2": [*LORENTZ_NAMES, "Nx", "Ny"]}


def test_every_quantity_of_the_input_method_has_its_physics_written_here():
    from symfw.plugins.input_method import QUANTITIES

    assert set(QUANTITIES) == set(QUANTITY_KEPT)


@pytest.mark.parametrize("quantity", sorted(QUANTITY_KEPT))
def test_the_input_method_keeps_exactly_what_leaves_its_quantity_unchanged(quantity):
    from symfw.plugins.input_method import QUANTITIES

    p4 = random_events(32, 2, seed=6, mass=3.0)
    lorentz = torch.stack([lorentz_generator(n) for n in LORENTZ_NAMES])
    for name in [*LORENTZ_NAMES, *NULL]:
        generator = torch.einsum("a,aij->ij", coefficients(name), lorentz)
        lam = torch.linalg.matrix_exp(0.3 * generator)
        change = (QUANTITIES[quantity](p4 @ lam.T) - QUANTITIES[quantity](p4)).abs().max()
        if name in QUANTITY_KEPT[quantity]:
            assert change < 1e-10, (quantity, name)
        else:
            assert change > 1e-3, (quantity, name)
    # the declared group: every one of its generators leaves the quantity unchanged, and it has as many as the physics
    kept = InputMethod(InputMethod.Options(quantities=[quantity])).keeps
    dimension = int(torch.linalg.matrix_rank(torch.stack([coefficients(n) for n in QUANTITY_KEPT[quantity]])))
    assert len(kept.generator_names) == dimension, kept.name
    for generator in kept.generators():
        lam = torch.linalg.matrix_exp(0.3 * generator)
        assert (QUANTITIES[quantity](p4 @ lam.T) - QUANTITIES[quantity](p4)).abs().max() < 1e-10, (quantity, kept.name)


def test_the_input_method_declares_the_intersection_of_its_quantities():
    def keeps(*quantities):
        return InputMethod(InputMethod.Options(quantities=list(quantities))).keeps.name

    assert keeps("E", "pz") == "so2-z"
    assert keeps("E") == "so3" and keeps("pz") == "so12-z" and keeps("pT") == "longitudinal"
    assert keeps("m2") == "lorentz" and keeps("phi") == "boost-z" and keeps("E", "phi") == "trivial"
    assert keeps("px") == "subgroup(Ky, Kz, Jx)"  # no registered group fixes the x axis
    assert keeps("E-pz") == "se2" and keeps("E-pz", "E") == "so2-z" and keeps("E-pz", "pT") == "so2-z"
