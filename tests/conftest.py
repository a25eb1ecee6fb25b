"""Shared fixtures: random light-like events and a CLI runner."""

import pytest
from typer.testing import CliRunner


from symfw.testing import random_events  # noqa: F401 - the plugin test kit's helper, shared with tests


@pytest.fixture
def events():
    return random_events


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def cli():
    from symfw.cli.app import app

    return app
