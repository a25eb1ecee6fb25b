"""The shared typer app, option aliases, consoles and error rendering.

Domain errors become one line on stderr: exit code 2 for bad input (:class:`UsageError`),
1 for failures while running. ``SYMFW_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from symfw.core.errors import SymfwError, UsageError

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False, soft_wrap=True)


class SymfwGroup(TyperGroup):
    """Renders symfw's domain errors as one clean line with the right exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SymfwError as exc:
            if os.environ.get("SYMFW_DEBUG") == "1":
                raise
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted; completed work is saved (resume with --resume where supported).", err=True)
            raise typer.Exit(130) from None


def make_app(help: str) -> typer.Typer:
    """A typer app with symfw's conventions (used for the root and every command group)."""
    return typer.Typer(
        help=help,
        cls=SymfwGroup,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


# -- option aliases reused across commands ----------------------------------------------
RegistryOpt = Annotated[
    list[Path] | None,
    typer.Option("--registry", help="Extra registry TOML with [presets.NAME] tables (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries on stderr.")]


def registry_with(extra: list[Path] | None):
    from symfw.core.registry import get_registry

    return get_registry(tuple(extra or ()))


def parse_floats(text: str, option: str, example: str = "0.1,0.5,1.0") -> list[float]:
    """Comma-separated numbers of a CLI option; an empty list or a non-number is a UsageError."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{option}: give comma-separated numbers, e.g. {example}")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise UsageError(f"{option}: '{part}' is not a number") from None
    return values


app = make_app("symfw: build, train and compare networks for approximately respected symmetries.")


def _register_commands() -> None:
    from . import build, compare, data, diagnose, plugins_cmd, train

    app.command("build")(build.build)
    app.command("train")(train.train)
    app.command("compare")(compare.compare)
    app.add_typer(plugins_cmd.app, name="plugins")
    app.add_typer(diagnose.app, name="diagnose")
    app.add_typer(data.app, name="data")


_register_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SymfwError as exc:  # raised outside a command (e.g. while loading plugins)
        if os.environ.get("SYMFW_DEBUG") == "1":
            raise
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
