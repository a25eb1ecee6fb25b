"""PELICAN's input method: the input method's per-particle components enter the PELICAN encoder as
pair channels slog(c_a(p_i) c_a(p_j)) next to slog(d_ij), and the model keeps the stabiliser of
the components, like the spurion model of the same stabiliser."""

from pathlib import Path

import numpy as np
import pytest
import torch
import vector
from conftest import random_events

import symfw
from symfw.core.data import EventData, save_events
from symfw.core.invariance import assert_invariant, assert_not_invariant
from symfw.core.interfaces import Particles
from symfw.plugins.input_method import InputMethod
from symfw.plugins.lorentz_groups import Lorentz
from symfw.plugins.pelican import Pelican
from symfw.plugins.spurions import Spurions

LORENTZ_NAMES = ("Kx", "Ky", "Kz", "Jx", "Jy", "Jz")
SPECS = Path(__file__).parents[2] / "study" / "specs"

#: spec -> (residual group, its generators): the input method and the spurions of each stabiliser
STABILISERS = {
    "pelican-jets-input": ("so2-z", ("Jz",)),
    "pelican-jets-spurions": ("so2-z", ("Jz",)),
    str(SPECS / "pelican-jets-input-E.toml"): ("so3", ("Jx", "Jy", "Jz")),
    str(SPECS / "pelican-jets-spurion-time.toml"): ("so3", ("Jx", "Jy", "Jz")),
    str(SPECS / "pelican-jets-input-pz.toml"): ("so12-z", ("Kx", "Ky", "Jz")),
    str(SPECS / "pelican-jets-spurion-beam-axis.toml"): ("so12-z", ("Kx", "Ky", "Jz")),
}


def slog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def jets(n_events=16, n=10, seed=3, dtype=torch.float64, mass=0.105):
    p4 = random_events(n_events, n, seed=seed, mass=mass).to(dtype)
    mask = torch.ones(n_events, n, dtype=torch.bool)
    mask[::2, 7:] = False  # some padded constituents
    return p4 * mask.unsqueeze(-1), mask


def model(name, n=10, dtype=torch.float64, **pelican_options):
    spec = symfw.load_spec(name).model_copy(update={"n_particles": n}, deep=True)
    spec.invariant.encoder.options.update(pelican_options)
    torch.manual_seed(0)
    return symfw.build_model(spec).to(dtype).eval()


def pair_features(m, p4, mask):
    particles = m.invariant.transform(m.transform_inputs(p4, mask))
    return m.invariant.encoder.pair_features(particles)


# --------------------------------------------------------------------------- the pair channels


def test_the_pair_channels_are_the_products_of_E_and_pz_next_to_d_ij_as_vector_computes_them():
    p4, mask = jets()
    x = pair_features(model("pelican-jets-input"), p4, mask).numpy()
    # channels: slog d_ij, slog E_i E_j, slog pz_i pz_j, δ_ij (no labels: no spurions)
    assert x.shape == (16, 10, 10, 4)
    v = vector.array({k: p4[..., i].numpy() for i, k in enumerate(("E", "px", "py", "pz"))})
    d = v[:, :, None].dot(v[:, None, :])  # scikit-hep vector's Minkowski product
    pair = (mask[:, :, None] & mask[:, None, :]).numpy()
    # the diagonal m² = E² − |p|² cancels: rounding of E² (~1e4 GeV²) in either computation
    np.testing.assert_allclose(x[..., 0][pair], slog(d)[pair], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(x[..., 1], slog(v.E[:, :, None] * v.E[:, None, :]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x[..., 2], slog(v.pz[:, :, None] * v.pz[:, None, :]), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(x[..., 3], np.broadcast_to(np.eye(10), (16, 10, 10)))
    assert (x[~pair][:, 1:3] == 0).all()  # padded constituents have no components


def test_every_product_of_two_components_with_products_all():
    p4, mask = jets()
    x = pair_features(model("pelican-jets-input", products="all"), p4, mask)
    assert x.shape[-1] == 1 + 4 + 1  # d, then E E, E pz, pz E, pz pz, then δ
    e, pz = p4[..., 0], p4[..., 3]
    for channel, (a, b) in enumerate([(e, e), (e, pz), (pz, e), (pz, pz)], start=1):
        torch.testing.assert_close(x[..., channel], torch.sign(a[:, :, None] * b[:, None, :]) * torch.log1p(
            (a[:, :, None] * b[:, None, :]).abs()), rtol=1e-12, atol=1e-12)
    assert model("pelican-jets-input", products="all").residual_group.name == "so2-z"


def test_spurions_after_the_input_method_get_zero_components_and_keep_the_labels():
    p4, mask = jets(4, 3)
    method = InputMethod(InputMethod.Options(quantities=["E", "pz"]))
    out = Spurions(Spurions.Options(set=["beam"]))(method(Particles.from_p4(p4, mask)))
    assert out.components.shape == (4, 5, 2) and out.channels.shape == (4, 5, 3)
    torch.testing.assert_close(out.components[:, :3], p4[..., [0, 3]])
    assert (out.components[:, 3:] == 0).all()
    both = symfw.load_spec("pelican-jets-input").model_copy(update={"n_particles": 3}, deep=True)
    both.inputs.append(symfw.load_spec("pelican-jets-spurions").inputs[0])
    m = symfw.build_model(both).double().eval()
    assert pair_features(m, p4, mask).shape[-1] == 1 + 2 + 2 * 3 + 1
    assert m.residual_group.name == "so2-z"


def test_the_leading_option_zeroes_the_other_particles_components():
    p4, mask = jets(4, 6)
    out = InputMethod(InputMethod.Options(quantities=["E"], leading=2))(Particles.from_p4(p4, mask))
    assert out.components.shape == (4, 6, 1) and out.scalars.shape == (4, 2)
    torch.testing.assert_close(out.components[:, :2, 0], p4[:, :2, 0])
    assert (out.components[:, 2:] == 0).all()


# --------------------------------------------------------------------------- the symmetry


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(STABILISERS), ids=lambda n: Path(n).stem)
def test_pelican_keeps_exactly_its_stabiliser_and_not_the_lorentz_group(name, dtype):
    group, generators = STABILISERS[name]
    m = model(name, dtype=dtype)
    assert m.residual_group.name == group and set(m.residual_group.generator_names) == set(generators)
    # float32: massive particles, as the plain pelican's float32 test (d_ij of nearly collinear
    # massless float32 momenta cancels to ~1e-3 relative, whatever the model)
    p4, mask = jets(dtype=dtype, mass=0.105 if dtype == torch.float64 else 5.0)
    lorentz, rng = Lorentz(Lorentz.Options(max_rapidity=1.0)), torch.Generator().manual_seed(0)
    for g in LORENTZ_NAMES:
        if g in generators:  # the shipped checker's per-dtype tolerance (1e-10 float64, 1e-4 float32)
            assert_invariant(m, lorentz, p4, mask, generator=g, rng=rng)
        else:
            assert_not_invariant(m, lorentz, p4, mask, generator=g, rtol=1e-6 if dtype == torch.float64 else 1e-3, rng=rng)
    assert_invariant(m, m.residual_group, p4, mask, rng=rng)  # finite elements of the whole group


def test_padded_constituents_change_nothing():
    p4, mask = jets(8, 6)
    small = model("pelican-jets-input", n=6)
    big_p4 = torch.cat([p4, torch.zeros(8, 4, 4, dtype=p4.dtype)], 1)
    big_mask = torch.cat([mask, torch.zeros(8, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(small(big_p4, big_mask), small(p4, mask), rtol=1e-12, atol=1e-12)


def test_the_components_reach_the_output():
    """The input method's channels matter: zeroing their first-layer weights changes the output."""
    p4, mask = jets()
    m = model("pelican-jets-input")
    before = m(p4, mask)
    with torch.no_grad():
        w = m.invariant.encoder.layers.linears[0].weight.view(16, 10, 4)  # (H, aggregation, channel)
        w[:, :, 1:3] = 0
    assert (m(p4, mask) - before).abs().max() > 1e-4


# --------------------------------------------------------------------------- bad input


def test_bad_pelican_options_are_refused_with_one_line(runner, cli, tmp_path):
    spec = tmp_path / "bad.toml"
    text = (SPECS / "pelican-jets-input-E.toml").read_text().replace("hidden = [16, 16]", 'hidden = [16], products = "some"')
    spec.write_text(text)
    result = runner.invoke(cli, ["train", str(spec), "--epochs", "1"])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err == err.splitlines()[0] and "invariant.encoder.options.products" in err and "'matching' or 'all'" in err, err


def test_an_encoder_built_for_other_components_refuses_them():
    enc = Pelican(Pelican.Options(hidden=[4]), in_features=4, latent_dim=3, components=2)
    p4, mask = jets(2, 3)
    with pytest.raises(ValueError, match="built for 2 input-method components, got 1"):
        enc(Particles.from_p4(p4.float(), mask).replace(components=p4[..., :1].float()))


def test_the_encoder_passes_the_plugin_kit():
    from symfw.testing import check_encoder

    assert check_encoder(Pelican, {"hidden": [4]})["parameters"] > 0


def test_matched_init_starts_pelican_with_and_without_the_input_method_as_one_function():
    from symfw.core.errors import SpecError
    from symfw.core.matching import first_batch_difference, matched_models

    specs = [symfw.load_spec(n).model_copy(update={"n_particles": 6}) for n in ("pelican-jets", "pelican-jets-input")]
    p4, mask = jets(32, 6, mass=1.0)
    models, [match] = matched_models(specs, 0, p4, mask)
    assert match.name == "invariant.encoder.layers.linears.0" and match.widths == [2, 4]
    assert match.columns == [[0, 1], [0, 3]]  # d_ij and δ_ij; E_i E_j and pz_i pz_j are new
    w = models[1].invariant.encoder.layers.linears[0].weight.view(16, 10, 4)  # (H, aggregation, channel)
    ref = models[0].invariant.encoder.layers.linears[0].weight.view(16, 10, 2)
    assert torch.equal(w[:, :, [0, 3]], ref) and (w[:, :, 1:3] == 0).all()  # every aggregation's block
    with torch.no_grad():
        first = [m.train()(p4, mask) for m in models]
    torch.testing.assert_close(first[1], first[0], rtol=1e-12, atol=1e-12)  # one function in float64
    assert first_batch_difference(specs, [0, 1], p4.float(), mask)["first_batch_max_difference"] < 1e-4
    spurions = [specs[0], symfw.load_spec("pelican-jets-spurions").model_copy(update={"n_particles": 6})]
    with pytest.raises(SpecError, match="sees a different number of rows"):  # two more particles
        matched_models(spurions, 0, p4, mask)


# --------------------------------------------------------------------------- from the CLI


@pytest.fixture(scope="module")
def jet_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, n_part = 64, 16
    p3 = rng.normal(size=(n, n_part, 3)) * np.array([5.0, 5.0, 50.0])
    p4 = np.concatenate([np.linalg.norm(p3, axis=-1, keepdims=True), p3], -1)
    mask = np.arange(n_part)[None] < rng.integers(4, n_part + 1, n)[:, None]
    data = EventData(p4=(p4 * mask[..., None]).astype(np.float32), label=rng.integers(0, 2, n), mask=mask,
                     weight=np.ones(n))
    path = tmp_path_factory.mktemp("jets") / "jets.npz"
    save_events(data, path)
    return path


def test_cli_compares_pelican_with_and_without_the_input_method_matched(runner, cli, tmp_path, jet_file):
    import json

    result = runner.invoke(cli, ["compare", "pelican-jets", "pelican-jets-input", "--data", str(jet_file), "--epochs", "1",
                                 "--batch-size", "16", "--matched-init", "--out", str(tmp_path / "cmp"), "--quiet"])
    assert result.exit_code == 0, result.output
    matched = json.loads((tmp_path / "cmp" / "compare.json").read_text())["matched_init"]
    assert matched["first_batch_max_difference"] < 1e-4 and matched["input_layers"][0]["common_features"] == 2


def test_cli_trains_pelican_jets_input_on_a_jet_file(runner, cli, tmp_path, jet_file):
    result = runner.invoke(cli, ["train", "pelican-jets-input", "--data", str(jet_file), "--epochs", "1",
                                 "--batch-size", "16", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test AUC" in result.stdout
    result = runner.invoke(cli, ["build", "--preset", "pelican-jets-input"])
    line = [x for x in result.stderr.splitlines() if x.startswith("residual group: ")][0]
    assert line == ("residual group: so2-z = lorentz (the spec's group) ∩ lorentz (invariant subnet pelican) "
                    "∩ so2-z (input transform input)")


def test_a_transform_that_adds_particles_without_components_works_alone_and_is_named_after_the_input_method():
    from symfw.core.errors import SpecError
    from symfw.core.interfaces import InputTransform
    from symfw.core.registry import load_registry

    class AddTime(InputTransform):  # written before Particles had components: extends p4, mask, channels only
        name = "add-time-test"

        def __call__(self, particles):
            b, n = particles.p4.shape[:2]
            return particles.replace(
                p4=torch.cat([particles.p4, particles.p4.new_tensor([1.0, 0, 0, 0]).expand(b, 1, 4)], 1),
                mask=torch.cat([particles.mask, particles.mask.new_ones(b, 1)], 1),
                channels=torch.cat([particles.channels, particles.channels.new_zeros(b, 1, particles.channels.shape[-1])], 1),
            )

    reg = load_registry()
    reg.add("inputs", AddTime, "test", "test")
    spec = symfw.load_spec("pelican-jets", registry=reg).model_copy(update={"n_particles": 4}, deep=True)
    spec = symfw.resolve_spec({**spec.model_dump(), "inputs": [{"name": "add-time-test"}]}, registry=reg)
    p4, mask = jets(4, 4)
    assert symfw.build_model(spec, reg).double()(p4, mask).shape == (4,)  # empty components are resized
    spec = symfw.resolve_spec({**spec.model_dump(), "inputs": [{"name": "input"}, {"name": "add-time-test"}]}, registry=reg)
    with pytest.raises(SpecError, match="input transform 'add-time-test' hands on 5 particles but 4 rows of Particles.components"):
        symfw.build_model(spec, reg)


def test_no_tensor_of_a_training_step_is_larger_than_a_few_pair_planes_per_channel():
    """Memory stays bounded at jet size: the largest tensor any operation of a forward and backward
    pass produces has at most B·N·N·max(F, H) entries (F input pair channels, H the widest layer),
    never the B·N·N·10·F of the concatenated aggregations."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    B, N = 4, 32
    m = model("pelican-jets-input", n=N, dtype=torch.float32, products="all").train()
    p4, mask = jets(B, N, dtype=torch.float32, mass=5.0)
    F, H = 1 + 4 + 1, max(m.invariant.encoder.options.hidden)
    with Largest():
        m(p4, mask).sum().backward()
    assert Largest.numel <= B * N * N * max(F, H), Largest.numel
    assert Largest.numel >= B * N * N * H  # the bound is tight: the layer's own output
