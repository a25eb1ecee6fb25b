"""Spec validation: names against the registry, extra keys, types, coherence."""

import pytest

import symfw
from symfw.core.spec import resolve_spec


def base():
    return dict(symfw.get_registry().preset("hybrid"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"combiner": {"name": "weigted-pt"}}, "x.toml: combiner.name: unknown combiner 'weigted-pt'; known: concat, sum, weighted-pt"),
        ({"group": {"name": "poincare"}}, "x.toml: group.name: unknown group 'poincare'"),
        ({"colour": "red"}, "x.toml: colour: unknown key"),
        ({"latent_dim": "sixteen"}, "x.toml: latent_dim: Input should be a valid integer"),
        ({"combiner": {"name": "weighted-pt", "options": {"hiden": [3]}}}, "x.toml: combiner.options.hiden: unknown key"),
        ({"training": {"lr": -1}}, "x.toml: training.lr: Input should be greater than 0"),
        ({"combiner": None, "context": None}, "x.toml: combiner: a model with two subnets needs a combiner"),
        ({"context": None}, "x.toml: context: combiner 'weighted-pt' needs a context"),
        ({"general": None, "invariant": None, "combiner": None}, "x.toml: general: a model needs a general or an invariant subnet"),
        ({"general": None}, "x.toml: combiner: a combiner pools two subnets, but the model has one"),
        ({"invariant": {"encoder": {"name": "mlp"}}}, "x.toml: invariant.invariants: encoder 'mlp' consumes features"),
        ({"head": {"hidden": [0]}}, "x.toml: head.hidden: Value error, layer sizes must be >= 1"),
    ],
)
def test_bad_specs_give_one_line_naming_the_field(change, message):
    data = {k: v for k, v in {**base(), **change}.items() if v is not None}
    with pytest.raises(symfw.SpecError) as info:
        resolve_spec(data, origin="x.toml")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_resolved_spec_fills_every_default_and_roundtrips(tmp_path):
    spec = symfw.load_spec("hybrid")
    assert spec.combiner.options == {"hidden": [64, 64], "batchnorm": True}
    assert spec.general.encoder.options["f"] == []
    path = tmp_path / "x.toml"
    symfw.write_spec(spec, path)
    assert symfw.load_spec(path) == spec


def test_unknown_preset_or_missing_file():
    with pytest.raises(symfw.SpecError, match="neither a spec file nor a preset; presets: "):
        symfw.load_spec("hybird")
    with pytest.raises(symfw.UsageError, match="nope.toml: no such file"):
        symfw.load_spec("nope.toml")
