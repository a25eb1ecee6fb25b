"""``symfw plugins``: what is registered, where it came from, and what failed to load."""

from __future__ import annotations

import json

from rich.table import Table

from symfw.core.registry import KIND_LABELS

from ._common import JsonOpt, RegistryOpt, err_console, make_app, out_console, registry_with

app = make_app("Inspect plugins: registered components, presets and load failures.")


@app.command("list")
def list_plugins(json_: JsonOpt = False, registry: RegistryOpt = None):
    """Every registered component by kind, name and source, the presets, and any plugin failure."""
    reg = registry_with(registry)
    if json_:
        payload = {
            "components": [
                {"kind": e.kind, "name": e.name, "source": e.source, "description": e.description}
                for kind in reg.entries
                for e in sorted(reg.entries[kind].values(), key=lambda e: e.name)
            ],
            "presets": [
                {"name": n, "source": reg.preset_sources.get(n, ""), "description": p.get("description", "")}
                for n, p in sorted(reg.presets.items())
            ],
            "failures": [{"plugin": f.plugin, "source": f.source, "error": f.error} for f in reg.failures],
        }
        out_console.print_json(json.dumps(payload))
        return
    table = Table(title="components", title_justify="left")
    for col in ("kind", "name", "source", "description"):
        table.add_column(col, overflow="fold")
    for kind, entries in reg.entries.items():
        for e in sorted(entries.values(), key=lambda e: e.name):
            table.add_row(KIND_LABELS[kind], e.name, e.source, e.description)
    out_console.print(table)
    presets = Table(title="presets", title_justify="left")
    for col in ("name", "source", "description"):
        presets.add_column(col, overflow="fold")
    for n, p in sorted(reg.presets.items()):
        presets.add_row(n, reg.preset_sources.get(n, ""), p.get("description", ""))
    out_console.print(presets)
    if reg.failures:
        failures = Table(title="plugin problems", title_justify="left", style="red")
        for col in ("plugin", "source", "error"):
            failures.add_column(col, overflow="fold")
        for f in reg.failures:
            failures.add_row(f.plugin, f.source, f.error)
        out_console.print(failures)
        err_console.print(f"{len(reg.failures)} plugin problem(s), see the table above")
