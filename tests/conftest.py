"""Shared fixtures: random light-like events and a CLI runner."""

import pytest
import torch
from typer.testing import CliRunner


def random_events(n=64, n_particles=2, dtype=torch.float64, seed=0, mass=0.0):
    """(n, N, 4) on-shell four-vectors with |p| up to ~100 GeV."""
    g = torch.Generator().manual_seed(seed)
    p3 = torch.randn(n, n_particles, 3, generator=g, dtype=torch.float64) * 40
    e = torch.sqrt((p3**2).sum(-1, keepdim=True) + mass**2)
    return torch.cat([e, p3], -1).to(dtype)


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
