"""The plugin manager: entry points, SYMFW_LOAD_PLUGINS, failures and clashes are reported, not fatal."""

import types

import pytest
from fake_plugins import FakeEntryPoint, install

import symfw
from symfw.core.interfaces import BreakingContext, Combiner
from symfw.core.registry import get_registry, load_registry


class Boom(Exception):
    pass


def broken_import():
    raise Boom("the plugin's import failed")


class FakeWeightedPt(Combiner):
    """A clash with the built-in weighted-pt."""

    name = "weighted-pt"


class Ht(BreakingContext):
    """Scalar sum of pT."""

    name = "ht"

    def __call__(self, p4, mask):
        return (p4[..., 1:3].norm(dim=-1) * mask).sum(1, keepdim=True)


def plugin_with(**hooks):
    return types.SimpleNamespace(**{k: symfw.hookimpl(v) for k, v in hooks.items()})


def good_plugin():
    return plugin_with(register_contexts=lambda register: register(Ht))


def clashing_plugin():
    return plugin_with(register_combiners=lambda register: register(FakeWeightedPt))


def test_entry_point_components_are_registered_with_their_source(monkeypatch):
    install(monkeypatch, FakeEntryPoint("ht", good_plugin, version="1.2"))
    reg = load_registry()
    entry = reg.entries["context"]["ht"]
    assert entry.source == "fake-ht 1.2" and entry.cls is Ht
    assert reg.failures == []


def test_import_failure_is_reported_and_nothing_else_breaks(monkeypatch, runner, cli):
    install(monkeypatch, FakeEntryPoint("broken", broken_import), FakeEntryPoint("ht", good_plugin))
    reg = get_registry()
    assert [f.plugin for f in reg.failures] == ["broken"]
    assert "failed to load: Boom: the plugin's import failed" in reg.failures[0].error
    assert "ht" in reg.entries["context"]
    listing = runner.invoke(cli, ["plugins", "list"])
    assert listing.exit_code == 0
    assert "the plugin's import failed" in listing.stdout
    assert runner.invoke(cli, ["build", "--preset", "hybrid", "--quiet"]).exit_code == 0


def test_name_clash_names_both_sources_and_keeps_the_builtin(monkeypatch, runner, cli):
    install(monkeypatch, FakeEntryPoint("clash", clashing_plugin, version="0.1"))
    reg = get_registry()
    assert reg.entries["combiner"]["weighted-pt"].source == "symfw (built-in)"
    (failure,) = reg.failures
    assert failure.error == (
        "combiner 'weighted-pt' from fake-clash 0.1 clashes with the one from symfw (built-in); "
        "kept the one from symfw (built-in)"
    )
    listing = runner.invoke(cli, ["plugins", "list", "--json"])
    assert "clashes with the one from symfw (built-in)" in listing.stdout
    assert runner.invoke(cli, ["build", "--preset", "hybrid", "--quiet"]).exit_code == 0


@pytest.mark.parametrize("setting, loaded", [("", set()), ("ht", {"ht"}), ("other", set()), (None, {"ht"})])
def test_symfw_load_plugins_restricts_entry_points(monkeypatch, setting, loaded):
    install(monkeypatch, FakeEntryPoint("ht", good_plugin))
    if setting is None:
        monkeypatch.delenv("SYMFW_LOAD_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("SYMFW_LOAD_PLUGINS", setting)
    reg = load_registry()
    assert {n for n in ("ht",) if n in reg.entries["context"]} == loaded
    assert "lorentz" in reg.entries["group"]  # built-ins always load


def test_a_hook_that_raises_or_registers_junk_is_reported(monkeypatch):
    def raising(register):
        raise RuntimeError("bad hook")

    def junk(register):
        register(object)

    install(
        monkeypatch,
        FakeEntryPoint("raiser", lambda: plugin_with(register_groups=raising)),
        FakeEntryPoint("junk", lambda: plugin_with(register_encoders=junk)),
    )
    errors = {f.plugin: f.error for f in load_registry().failures}
    assert errors["raiser"] == "register_groups raised RuntimeError: bad hook"
    assert "is not a Encoder subclass" in errors["junk"]


def test_user_registry_adds_presets(tmp_path, runner, cli):
    extra = tmp_path / "mine.toml"
    extra.write_text('[presets.tiny]\ngeneral = { encoder = { name = "pfn", options = { phi = [8] } } }\nhead = { hidden = [8] }\n')
    result = runner.invoke(cli, ["build", "--preset", "tiny", "--registry", str(extra), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "phi = [\n    8,\n]" in result.stdout
