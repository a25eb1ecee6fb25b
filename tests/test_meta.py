"""Meta-tests: every hook has a test and documentation; registry.toml agrees with the plugin manager."""

from pathlib import Path

import pytest

from symfw.core import hookspecs
from symfw.core.registry import BUILTIN_SOURCE, REGISTRY_FILE, load_registry, read_toml

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(hookspecs.HOOK_KINDS)


def test_hook_kinds_cover_every_hookspec():
    specs = {n for n in dir(hookspecs) if n.startswith("register_") and callable(getattr(hookspecs, n))}
    assert specs == set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    source = (ROOT / "tests" / "core" / "test_hooks.py").read_text()
    assert f"def test_hook_{hook}(" in source, f"add test_hook_{hook} to tests/core/test_hooks.py"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{hook}(register)`" in doc, f"document {hook} in docs/plugins.md"


def test_registry_toml_lists_exactly_the_plugin_modules():
    listed = set(read_toml(REGISTRY_FILE)["plugins"]["builtin"])
    files = {f"symfw.plugins.{p.stem}" for p in (ROOT / "plugins").glob("*.py") if p.stem != "__init__"}
    assert listed == files


def test_registry_toml_agrees_with_the_plugin_manager(monkeypatch):
    monkeypatch.setenv("SYMFW_LOAD_PLUGINS", "")
    reg = load_registry()
    listed = set(read_toml(REGISTRY_FILE)["plugins"]["builtin"])
    assert {name for name, source in reg.plugins if source == BUILTIN_SOURCE} == listed
    for kind, entries in reg.entries.items():
        for entry in entries.values():
            assert entry.source == BUILTIN_SOURCE
            assert entry.cls.__module__ in listed, f"{kind} {entry.name} comes from an unlisted module"
            assert entry.description, f"{kind} {entry.name} has no docstring"
    assert reg.failures == []


def test_every_preset_resolves():
    import symfw

    reg = load_registry()
    for name in reg.presets:
        spec = symfw.load_spec(name, registry=reg)
        assert spec.name == name


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "examples" / "specs").glob("*.toml")), ids=lambda p: p.name)
def test_example_specs_in_the_docs_load_and_build(path):
    import symfw

    spec = symfw.load_spec(path)
    assert spec.name == path.stem
    assert symfw.build_model(spec).hidden_neuron_counts()["total"] == 1152  # the paper's PFN


def test_every_components_default_options_can_be_written_to_a_spec_file():
    """Resolved options land in spec.toml; TOML has no null, so no default may be None (a
    dataset's options go to data.json, not into the spec)."""
    import tomli_w

    reg = load_registry()
    for kind, entries in reg.entries.items():
        if kind == "dataset":
            continue
        for entry in entries.values():
            options = getattr(entry.cls, "Options", None)
            if options is None:
                continue
            try:
                defaults = options().model_dump()
            except Exception:  # noqa: BLE001 - options with required fields have no defaults to write
                continue
            try:
                tomli_w.dumps({"options": defaults})
            except TypeError as exc:
                pytest.fail(f"{kind} {entry.name}: default options cannot be written to TOML ({exc})")
