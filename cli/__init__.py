"""The ``symfw`` command line (typer). Thin: commands call the core."""
