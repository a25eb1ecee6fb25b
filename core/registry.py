"""The plugin manager and the catalogue of components and presets.

Built-in plugin modules are named in ``registry.toml`` (shipped in the package) and are
registered through the same pluggy path as third-party plugins, which come from the
``symfw`` entry-point group. Loading happens once, lazily, on the first
:func:`get_registry` call. ``SYMFW_LOAD_PLUGINS=a,b`` restricts which entry points load
(empty: none); built-ins always load.

A plugin that fails to import, whose hook raises (anything but ``KeyboardInterrupt``, even
``SystemExit``), or that registers a name already taken is recorded in
:attr:`Registry.failures` (shown by ``symfw plugins list``); it never breaks other commands. On a name clash the first registration (built-ins first) is kept.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import SpecError, UnknownComponentError, UsageError
from .interfaces import COMPONENT_KINDS, Component

ENTRY_POINT_GROUP = "symfw"
BUILTIN_SOURCE = "symfw (built-in)"
REGISTRY_FILE = Path(__file__).resolve().parent.parent / "registry.toml"

KIND_LABELS = {
    "group": "group",
    "invariants": "invariant map",
    "context": "context",
    "combiner": "combiner",
    "encoder": "encoder",
    "inputs": "input transform",
    "penalty": "penalty",
    "dataset": "dataset",
    "task": "task",
    "format": "file format",
}


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    cls: type[Component]
    source: str

    @property
    def description(self) -> str:
        return self.cls.describe()


@dataclass(frozen=True)
class Failure:
    """A plugin problem: it did not import, its hook raised, or it clashed."""

    plugin: str
    source: str
    error: str


@dataclass
class Registry:
    """Registered components by kind and name, named presets, and plugin failures."""

    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {k: {} for k in COMPONENT_KINDS}
    )
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    preset_sources: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    plugins: list[tuple[str, str]] = field(default_factory=list)

    # -- lookup ------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> type[Component]:
        try:
            return self.entries[kind][name].cls
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise UnknownComponentError(
                f"unknown {KIND_LABELS[kind]} '{name}'; known: {known}"
            ) from None

    def preset(self, name: str) -> dict[str, Any]:
        if name not in self.presets:
            known = ", ".join(sorted(self.presets)) or "none"
            raise UsageError(f"unknown preset '{name}'; known: {known}")
        return self.presets[name]

    # -- filling -----------------------------------------------------------------------
    def add(self, kind: str, cls: Any, source: str, plugin: str) -> None:
        base = COMPONENT_KINDS[kind]
        label = KIND_LABELS[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            self.failures.append(
                Failure(plugin, source, f"registered {cls!r} as a {label}, but it is not a {base.__name__} subclass")
            )
            return
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            self.failures.append(Failure(plugin, source, f"{label} {cls.__name__} has no name"))
            return
        existing = self.entries[kind].get(name)
        if existing is not None:
            self.failures.append(
                Failure(
                    plugin,
                    source,
                    f"{label} '{name}' from {source} clashes with the one from {existing.source}; "
                    f"kept the one from {existing.source}",
                )
            )
            return
        self.entries[kind][name] = Entry(kind, name, cls, source)

    def add_presets(self, path: Path | str, source: str | None = None) -> None:
        """Add the ``[presets.NAME]`` tables of a registry TOML file (user presets override)."""
        data = read_toml(path)
        presets = data.get("presets", {})
        if not isinstance(presets, dict):
            raise UsageError(f"{path}: presets: must be a table of tables")
        for name, spec in presets.items():
            if not isinstance(spec, dict):
                raise UsageError(f"{path}: presets.{name}: must be a table")
            self.presets[name] = {"name": name, **spec}
            self.preset_sources[name] = source or str(path)


def read_toml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file") from None


def _selected_entry_points() -> list[importlib.metadata.EntryPoint]:
    eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    allowed = os.environ.get("SYMFW_LOAD_PLUGINS")
    if allowed is None:
        return eps
    names = {n.strip() for n in allowed.split(",") if n.strip()}
    return [ep for ep in eps if ep.name in names]


def _ep_source(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return f"{dist.metadata['Name']} {dist.version}"
    return ep.value


def load_registry(extra_registries: tuple[str | Path, ...] = ()) -> Registry:
    """Build a fresh registry: built-ins from ``registry.toml``, then entry points."""
    registry = Registry()
    catalogue = read_toml(REGISTRY_FILE)
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    sources: dict[str, str] = {}

    for modname in catalogue.get("plugins", {}).get("builtin", []):
        module = importlib.import_module(modname)  # a broken built-in is a bug: let it raise
        pm.register(module, name=modname)
        sources[modname] = BUILTIN_SOURCE
        registry.plugins.append((modname, BUILTIN_SOURCE))

    for ep in _selected_entry_points():
        source = _ep_source(ep)
        try:
            plugin = ep.load()
            pm.register(plugin, name=f"ep:{ep.name}")
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any import failure (SystemExit too) is reported, not raised
            registry.failures.append(Failure(ep.name, source, f"failed to load: {type(exc).__name__}: {exc}"))
            continue
        sources[f"ep:{ep.name}"] = source
        registry.plugins.append((ep.name, source))

    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        hook = getattr(pm.hook, hook_name)
        # get_hookimpls() is in registration order: built-ins first, so they win clashes
        for impl in hook.get_hookimpls():
            source = sources.get(impl.plugin_name, impl.plugin_name)
            plugin = impl.plugin_name.removeprefix("ep:")

            def register(cls, _kind=kind, _source=source, _plugin=plugin):
                registry.add(_kind, cls, _source, _plugin)

            try:
                impl.function(register=register)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - SystemExit, GeneratorExit too: the plugin's failure
                registry.failures.append(
                    Failure(plugin, source, f"{hook_name} raised {type(exc).__name__}: {exc}")
                )

    registry.add_presets(REGISTRY_FILE, source=BUILTIN_SOURCE)
    for path in extra_registries:
        registry.add_presets(path)
    return registry


_REGISTRY: Registry | None = None


def get_registry(extra_registries: tuple[str | Path, ...] = ()) -> Registry:
    """The process-wide registry (loaded once); extra registry files add user presets."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    if extra_registries:
        for path in extra_registries:
            _REGISTRY.add_presets(path)
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry (tests, or after installing a plugin in-process)."""
    global _REGISTRY
    _REGISTRY = None


__all__ = [
    "BUILTIN_SOURCE",
    "ENTRY_POINT_GROUP",
    "Entry",
    "Failure",
    "Registry",
    "SpecError",
    "get_registry",
    "load_registry",
    "read_toml",
    "reset_registry",
]
