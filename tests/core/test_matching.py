"""Matched initialisation: compared models that differ only in their input layer start as one function."""

import json

import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture
from typer.testing import CliRunner

import symfw
from symfw.cli.app import app
from symfw.core.compare import run_compare
from symfw.core.errors import SpecError, UsageError
from symfw.core.matching import first_batch_difference, matched_models
from symfw.core.training import RunSettings, run_training, with_training_overrides


def small(preset, hidden=(16, 8), **training):
    spec = symfw.load_spec(preset)
    inv = spec.invariant.model_copy(update={"encoder": spec.invariant.encoder.model_copy(
        update={"options": {"hidden": list(hidden)}})})
    spec = spec.model_copy(update={"invariant": inv})
    return with_training_overrides(spec, **training) if training else spec


@pytest.fixture(scope="module")
def probe():
    t = toy_events(256, seed=3).tensors(dtype=torch.float64)
    return t["p4"], t["mask"]


SPECS = ("invariant", "invariant-input", "invariant-spurions")


def test_matched_models_output_the_same_on_the_first_batch_in_float64(probe):
    specs = [small(n) for n in SPECS]
    report = first_batch_difference(specs, [11, 12], *probe, dtype=torch.float64)
    assert report["first_batch_max_difference"] < 1e-6
    assert report["reference"] == "invariant"
    (layer,) = report["input_layers"]
    assert layer["inputs"] == {"invariant": 3, "invariant-input": 7, "invariant-spurions": 10}
    assert layer["common_features"] == 3  # the three muon-pair products; E, pz and p·e± start at zero weight


def test_without_matching_the_same_seed_gives_different_outputs(probe):
    """The check above can fail: unmatched models with the same seed disagree."""
    from symfw.core.model import build_model

    outs = [build_model(small(n), seed=11).to(torch.float64).eval()(*probe) for n in SPECS[:2]]
    assert (outs[0] - outs[1]).abs().max() > 1e-3


def test_weights_beyond_the_input_layer_are_the_references_and_extra_columns_zero(probe):
    models, (match,) = matched_models([small(n) for n in SPECS[:2]], 5, *probe)
    ref, other = (m.state_dict() for m in models)
    for key, value in ref.items():
        if key != f"{match.name}.weight":
            torch.testing.assert_close(other[key], value, rtol=0, atol=0)
    w = other[f"{match.name}.weight"]
    common = match.columns[1]
    torch.testing.assert_close(w[:, common], ref[f"{match.name}.weight"], rtol=0, atol=0)
    extra = [c for c in range(w.shape[1]) if c not in common]
    assert extra and torch.all(w[:, extra] == 0)


def spec_for(name):
    """Small versions of the MLP-encoder presets (fast); ``invariant-wide``: a wider first hidden layer."""
    if name == "invariant-wide":
        return small("invariant", hidden=(32, 8))
    spec = symfw.load_spec(name)
    return small(name) if spec.invariant is not None and spec.invariant.encoder.name == "mlp" else spec


@pytest.mark.parametrize("pair, message", [
    (("pfn", "invariant"), "is not in every model"),
    (("invariant", "invariant-wide"), "differ beyond their input layers"),
    (("pelican", "pelican-spurions"), "sees a different number of rows"),  # spurions are extra particles
    (("invariant", "invariant"), "nothing to match"),
])
def test_specs_that_cannot_be_matched_are_refused(probe, pair, message):
    with pytest.raises(SpecError, match=message):
        first_batch_difference([spec_for(n) for n in pair], [1], *probe)


def test_compare_trains_from_the_matched_state_and_records_the_difference(tmp_path):
    """An almost-zero learning rate keeps the trained members at their initial state: after one
    epoch the layers beyond the input layer still agree between the specs."""
    specs = [small(n, epochs=1, lr=1e-12, weight_decay=0.0) for n in SPECS[:2]]
    settings = RunSettings(data="toy", seed=4, seeds=2, matched_init=True)
    summary = run_compare(specs, toy_events(400, seed=4), settings, tmp_path / "cmp", plots=False,
                          dtype=torch.float64)
    assert summary["matched_init"]["first_batch_max_difference"] < 1e-6
    on_disk = json.loads((tmp_path / "cmp" / "compare.json").read_text())["matched_init"]
    assert on_disk["specs"] == list(SPECS[:2])
    states = [torch.load(tmp_path / "cmp" / n / "fraction-1" / "checkpoint.pt", weights_only=False)
              for n in SPECS[:2]]
    params = [s["params"] for s in states]
    shared = [k for k in params[0] if params[0][k].shape == params[1][k].shape]
    assert len(shared) > 4
    for k in shared:
        torch.testing.assert_close(params[0][k], params[1][k], rtol=0, atol=1e-9)


def test_matched_init_outside_compare_is_refused():
    with pytest.raises(UsageError, match="compare --matched-init"):
        run_training(small("invariant", epochs=1), toy_events(200), RunSettings(data="toy", matched_init=True), None)


def test_cli_matched_init_refuses_unmatchable_specs_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", "pfn", "invariant", "--events", "300", "--epochs", "1",
                                      "--matched-init", "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.splitlines() == [err] and "--matched-init" in err and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_the_jet_invariant_family_is_matched_on_jets():
    """invariant-jets and its spurion / input-method versions differ only in the input layer: the
    136 products of the 16 hardest constituents, J² and the 16 p_i·J are common."""
    rng = torch.Generator().manual_seed(0)
    pt = torch.rand(64, 128, generator=rng, dtype=torch.float64) * 50 + 1
    eta, phi = torch.randn(64, 128, generator=rng, dtype=torch.float64) * 0.3, torch.randn(64, 128, generator=rng,
                                                                                        dtype=torch.float64) * 0.3
    p4 = torch.stack([pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)], -1)
    mask = torch.arange(128)[None, :] < torch.randint(20, 128, (64, 1), generator=rng)
    p4 = p4 * mask[..., None]
    specs = [symfw.load_spec(n) for n in ("invariant-jets", "invariant-jets-spurions", "invariant-jets-input")]
    report = first_batch_difference(specs, [3], p4, mask, dtype=torch.float64)
    assert report["first_batch_max_difference"] < 1e-6
    assert report["input_layers"][0]["common_features"] == 136 + 1 + 16
