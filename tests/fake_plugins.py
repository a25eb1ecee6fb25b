"""Fake entry points for plugin-system tests (no installation needed)."""

import types

import symfw.core.registry as registry_module


class FakeEntryPoint:
    def __init__(self, name, loader, version="9.9"):
        self.name = name
        self.value = f"fake_{name}:plugin"
        self._loader = loader
        self.dist = types.SimpleNamespace(metadata={"Name": f"fake-{name}"}, version=version)

    def load(self):
        return self._loader()


def install(monkeypatch, *entry_points):
    """Make importlib.metadata.entry_points(group='symfw') return these, and reset the registry."""
    real = registry_module.importlib.metadata.entry_points

    def fake(**kwargs):
        if kwargs.get("group") == registry_module.ENTRY_POINT_GROUP:
            return list(entry_points)
        return real(**kwargs)

    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", fake)
    registry_module.reset_registry()
    monkeypatch.setattr(registry_module, "_REGISTRY", None)
