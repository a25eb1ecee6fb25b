"""Shared fixtures: random light-like events and a CLI runner."""

import pytest
import torch

# small models on a shared 2-core machine: more threads only oversubscribe (10-100x slower)
torch.set_num_threads(1)
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
