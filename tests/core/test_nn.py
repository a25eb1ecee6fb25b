"""The network blocks' fast paths compute what the general ones do (float64, to 1e-12).

BatchNorm1d is torch's fused batch norm (also while recording its statistics for penalties);
MaskedBatchNorm is torch's batch norm over the B·N rows when every particle is real;
ParticleMLP computes only the real particles when some are padded. Each is compared with the
masked arithmetic it replaces: outputs, gradients and running statistics.
"""

import copy

import pytest
import torch
from toy_events import one_thread  # noqa: F401 - autouse fixture

from symfw.core import nn as N

D = torch.float64


def masked_reference(monkeypatch):
    """Switch the fast paths off: every pass takes the masked arithmetic."""
    monkeypatch.setattr(N.MaskedBatchNorm, "all_real", lambda self, mask: False)
    monkeypatch.setattr(N.ParticleMLP, "real_rows", staticmethod(lambda mask: None))


def grads_of(module, x, weight):
    out = module(*x) if isinstance(x, tuple) else module(x)
    (out * weight).sum().backward()
    return out.detach(), [p.grad.clone() for p in module.parameters()]


def test_batchnorm1d_recording_its_statistics_is_still_torchs_batch_norm():
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm1d(6).to(D).train()
    ours = N.share_statistics(torch.nn.Sequential(copy.deepcopy(plain)))[0]
    x = torch.randn(32, 6, dtype=D) * 3 + 1
    with N.shared_batch_statistics(ours):
        out = ours(x)
        mean, var = ours.recorded
    torch.testing.assert_close(out, plain(x), rtol=0, atol=0)
    torch.testing.assert_close(mean, x.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(var, x.var(0, unbiased=False), rtol=0, atol=1e-12)
    for a, b in zip(ours.buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # running statistics moved as torch's


def test_masked_batch_norm_of_real_particles_only_is_torchs_batch_norm(monkeypatch):
    torch.manual_seed(1)
    fast = N.MaskedBatchNorm(5).to(D).train()
    with torch.no_grad():
        fast.weight.normal_()
        fast.bias.normal_()
    slow = copy.deepcopy(fast)
    x = torch.randn(16, 3, 5, dtype=D) * 2 + 0.5
    mask = torch.ones(16, 3, dtype=torch.bool)
    weight = torch.randn(16, 3, 5, dtype=D)
    assert fast.all_real(mask)
    out_fast, g_fast = grads_of(fast, (x, mask), weight)
    masked_reference(monkeypatch)
    assert not slow.all_real(mask)
    out_slow, g_slow = grads_of(slow, (x, mask), weight)
    torch.testing.assert_close(out_fast, out_slow, rtol=0, atol=1e-12)
    for a, b in zip(g_fast + list(fast.buffers()), g_slow + list(slow.buffers())):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_masked_batch_norm_ignores_padded_particles():
    torch.manual_seed(2)
    norm = N.MaskedBatchNorm(4).to(D).train()
    x = torch.randn(10, 5, 4, dtype=D)
    mask = torch.rand(10, 5) < 0.6
    mask[:, 0] = True
    assert not norm.all_real(mask)
    out = norm(x, mask)
    real = x[mask]
    expected = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + norm.eps)
    torch.testing.assert_close(out[mask], expected, rtol=0, atol=1e-12)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    x2 = x.clone()
    x2[~mask] = 1e3  # what padded entries hold changes nothing
    torch.testing.assert_close(N.MaskedBatchNorm(4).to(D).train()(x2, mask), out, rtol=0, atol=1e-12)


def test_particle_mlp_computes_only_the_real_particles(monkeypatch):
    torch.manual_seed(3)
    packed = N.ParticleMLP(5, [16, 8], 3).to(D).train()
    masked = copy.deepcopy(packed)
    x = torch.randn(6, 7, 5, dtype=D)
    mask = torch.rand(6, 7) < 0.5
    mask[:, :2] = True
    rows = N.ParticleMLP.real_rows(mask)
    assert rows is not None and len(rows) == int(mask.sum())
    weight = torch.randn(6, 7, 3, dtype=D)
    out_packed, g_packed = grads_of(packed, (x, mask), weight)
    masked_reference(monkeypatch)
    out_masked, g_masked = grads_of(masked, (x, mask), weight)
    torch.testing.assert_close(out_packed, out_masked, rtol=0, atol=1e-12)
    assert torch.equal(out_packed[~mask], torch.zeros_like(out_packed[~mask]))
    for a, b in zip(g_packed + list(packed.buffers()), g_masked + list(masked.buffers())):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_no_fast_path_where_the_mask_cannot_be_read():
    mask = torch.ones(2, 4, 3, dtype=torch.bool)
    mask[0, 0, 2] = False
    norm = N.MaskedBatchNorm(2)
    seen = []

    def per_member(m):
        seen.append((norm.all_real(m), N.ParticleMLP.real_rows(m)))
        return m.sum()

    torch.vmap(per_member)(mask)  # inside vmap a tensor cannot steer Python
    assert seen == [(False, None)]
    assert N.ParticleMLP.real_rows(torch.ones(4, 3, dtype=torch.bool)) is None  # nothing to pack


@pytest.mark.parametrize("all_real", [True, False], ids=["all-real", "padded"])
def test_vmapped_members_normalise_as_each_member_alone(all_real):
    # the fast paths stay out of vmap; the masked arithmetic there gives each member's own result
    torch.manual_seed(4)
    modules = [N.ParticleMLP(3, [8], 2).to(D).train() for _ in range(2)]
    params, buffers = torch.func.stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")
    x = torch.randn(2, 12, 4, 3, dtype=D)
    mask = torch.ones(2, 12, 4, dtype=torch.bool) if all_real else torch.rand(2, 12, 4) < 0.7
    mask[..., 0] = True
    out = torch.vmap(lambda p, b, xi, mi: torch.func.functional_call(base, (p, b), (xi, mi)))(params, buffers, x, mask)
    for m, module in enumerate(modules):
        torch.testing.assert_close(out[m], module(x[m], mask[m]), rtol=0, atol=1e-12)
