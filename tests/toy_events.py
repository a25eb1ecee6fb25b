"""Small synthetic two-class event samples for training tests (not the zmumu generator).

Signal: two massless particles from a narrow resonance (m ≈ 90 GeV); background: a broad
mass spectrum. Both boosted along z and in the transverse plane by random amounts, so the
classes differ in the pair mass and a network learns it in a few epochs.
"""

import json

import numpy as np
import pytest
import torch

from symfw.core.data import EventData


def two_body(masses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 2, 4) massless daughters of parents with ``masses``, boosted randomly."""
    n = len(masses)
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    e = masses / 2
    p = np.stack([e * sin_t * np.cos(phi), e * sin_t * np.sin(phi), e * cos_t], -1)
    d1 = np.concatenate([e[:, None], p], -1)
    d2 = np.concatenate([e[:, None], -p], -1)
    # boost the pair: random velocity, |beta| < 0.8
    beta = rng.normal(size=(n, 3))
    beta *= (rng.uniform(0, 0.8, n) / np.linalg.norm(beta, axis=1))[:, None]
    b2 = (beta**2).sum(1)
    gamma = 1 / np.sqrt(1 - b2)

    def boost(v):
        bp = (beta * v[:, 1:]).sum(1)
        e_new = gamma * (v[:, 0] + bp)
        coef = (gamma - 1) * bp / np.where(b2 > 0, b2, 1) + gamma * v[:, 0]
        return np.concatenate([e_new[:, None], v[:, 1:] + coef[:, None] * beta], -1)

    out = np.stack([boost(d1), boost(d2)], 1)
    out[..., 0] = np.linalg.norm(out[..., 1:], axis=-1)  # exactly massless after rounding
    return out


def toy_events(n: int = 600, seed: int = 0, weighted: bool = False) -> EventData:
    """n events, half signal (m ~ N(90, 3)), half background (m uniform in 60–120 GeV)."""
    rng = np.random.default_rng(seed)
    n_sig = n // 2
    masses = np.concatenate([rng.normal(90, 3, n_sig), rng.uniform(60, 120, n - n_sig)])
    label = np.concatenate([np.ones(n_sig, dtype=np.int64), np.zeros(n - n_sig, dtype=np.int64)])
    order = rng.permutation(n)
    p4 = two_body(masses, rng)[order]
    weight = rng.uniform(0.5, 1.5, n) if weighted else np.ones(n)
    return EventData(
        p4=p4, label=label[order], mask=np.ones((n, 2), dtype=bool), weight=weight, meta={"source": "toy"}
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Train on one thread: on a shared machine, torch's threads oversubscribing the cores can
    slow small models down a hundredfold. Import this fixture into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def comparable(summary):
    """A compare.json less what differs between identical runs: wall-clock times and plot paths."""
    out = json.loads(json.dumps(summary))
    out.pop("plots", None)
    for row in out["rows"]:
        row.pop("train_time_s")
    return out
