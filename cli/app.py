"""The ``symfw`` command: wires the command modules into one typer app.

What the commands share (the app factory, error rendering, option aliases, consoles, progress)
lives in :mod:`symfw.cli._common`; no command imports another.
"""

from __future__ import annotations

import os
import sys

from symfw.core.errors import SymfwError

from . import build, compare, data, diagnose, plugins_cmd, train
from ._common import make_app

app = make_app("symfw: build, train and compare networks for approximately respected symmetries.")
app.command("build")(build.build)
app.command("train")(train.train)
app.command("compare")(compare.compare)
app.add_typer(plugins_cmd.app, name="plugins")
app.add_typer(diagnose.app, name="diagnose")
app.add_typer(data.app, name="data")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SymfwError as exc:  # raised outside a command (e.g. while loading plugins)
        if os.environ.get("SYMFW_DEBUG") == "1":
            raise
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
