"""The vmapped ensemble against sequential training of the same members.

Tolerance: in float64 the two paths give the same per-member validation metrics and losses
at every epoch to 1e-9 (measured: identical AUCs, losses within 1e-15). In float32 a single
step agrees to rounding (every gradient within 1e-5 of the largest one); over many steps the rounding
differences of batched vs single matrix products are amplified by training, as between any
two machines.
"""

import copy

import numpy as np
import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core.ensemble import Ensemble, PenaltyTerm
from symfw.core.nn import SharedStatistics, shared_batch_statistics
from symfw.core.interfaces import Batch, NoOptions, Penalty
from symfw.core.registry import Registry, get_registry
from symfw.core.training import RunSettings, run_training, with_training_overrides


def small_spec(preset="hybrid", epochs=3, **extra):
    spec = symfw.load_spec(preset)
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [32, 16]}), **extra})
    return with_training_overrides(spec, epochs=epochs, batch_size=64)


def member_batch(m, b=64, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    p3 = torch.randn(m, b, 2, 3, generator=g, dtype=torch.float64) * 40
    p4 = torch.cat([p3.norm(dim=-1, keepdim=True), p3], -1).to(dtype)
    label = (torch.rand(m, b, generator=g) > 0.5).to(dtype)
    return Batch(p4, torch.ones(m, b, 2, dtype=torch.bool), label, torch.rand(m, b, generator=g, dtype=dtype) + 0.5)


@pytest.mark.parametrize("preset", ["pfn", "hybrid"])
def test_vmapped_training_equals_sequential_per_member(preset):
    data = toy_events(500, weighted=True)
    spec = small_spec(preset)
    runs = {
        mode: run_training(spec, data, RunSettings(data="toy", seeds=3), vectorize=mode, dtype=torch.float64)[
            "fractions"
        ][0]
        for mode in ("yes", "no")
    }
    vec, seq = runs["yes"], runs["no"]
    assert (vec["mode"], seq["mode"]) == ("vectorized", "sequential")
    np.testing.assert_allclose(vec["curves"]["val_auc"], seq["curves"]["val_auc"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(vec["curves"]["loss"], seq["curves"]["loss"], rtol=0, atol=1e-9)
    for a, b in zip(vec["members"], seq["members"]):
        for key in ("final", "best"):
            assert a[key]["epoch"] == b[key]["epoch"]
            for metric in ("auc", "accuracy", "loss"):
                assert a[key]["test"][metric] == pytest.approx(b[key]["test"][metric], abs=1e-9)
    # the members really differ (different inits and batch orders)
    aucs = [m["final"]["test"]["auc"] for m in vec["members"]]
    assert len(set(aucs)) == 3


def test_one_float32_step_agrees_to_rounding():
    spec = small_spec("hybrid")
    batch = member_batch(3)
    grads = {}
    for vec in (True, False):
        ens = Ensemble(spec, [1, 2, 3], vectorize=vec)
        ens.train()
        ens.backward(batch)
        grads[vec] = {k: v.grad.clone() for k, v in ens.params.items()}
    largest = max(float(g.abs().max()) for g in grads[False].values())
    for k in grads[True]:
        torch.testing.assert_close(grads[True][k], grads[False][k], rtol=1e-4, atol=1e-5 * largest, msg=k)


def test_batchnorm_running_stats_follow_each_member_under_vmap():
    spec = small_spec("hybrid")
    ens = Ensemble(spec, [5, 6])
    members = [copy.deepcopy(ens.member(m)).train() for m in range(2)]
    batch = member_batch(2)
    ens.train()
    ens.backward(batch)
    norms = [k for k in ens.buffers if k.endswith("running_mean")]
    assert any("phi.norms" in k for k in norms) and any("net.1" in k for k in norms)  # masked and plain BN
    for m, model in enumerate(members):
        model(batch.p4[m], batch.mask[m])
        for k, v in model.named_buffers():
            torch.testing.assert_close(ens.buffers[k][m], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("preset", ["pfn", "hybrid"])
def test_penalty_passes_normalise_with_the_clean_batch_and_move_no_running_stats(preset):
    spec = small_spec(preset)
    ens = Ensemble(spec, [1], dtype=torch.float64)
    ens.train()
    params, buffers = ens._slice(0)
    batch = member_batch(1, dtype=torch.float64)
    p4, mask = batch.p4[0], batch.mask[0]
    with shared_batch_statistics(ens.base) as shared:
        assert shared.exact  # every norm of a built model shares its statistics
        logits = ens._call(params, buffers, p4, mask)  # the training pass records its statistics
        after_training = {k: v.clone() for k, v in buffers.items()}
        fn = ens.penalty_fn(params, buffers, shared)
        # f(x) in a penalty is exactly the training pass's output
        torch.testing.assert_close(fn(p4, mask), logits, rtol=0, atol=1e-12)
        # events are normalised with the clean batch's statistics: an event's output does not
        # depend on what else is in the batch (a boosted batch cannot be recognised)
        whole = fn(p4 * 1.5, mask)
        alone = torch.cat([fn(p4[i : i + 1] * 1.5, mask[i : i + 1]) for i in range(4)])
        torch.testing.assert_close(whole[:4], alone, rtol=0, atol=1e-12)
        for k, v in buffers.items():
            assert torch.equal(v, after_training[k]), k  # penalty passes move no running statistic
    norms = [m for m in ens.base.modules() if isinstance(m, SharedStatistics)]
    assert norms and all(m.stats_mode is None and m.recorded is None for m in norms)
    # outside the block a training pass is plain batch norm again: batch statistics, running ones move
    ens._call(params, buffers, p4, mask)
    key = next(k for k in buffers if k.endswith("running_mean"))
    assert not torch.equal(buffers[key], after_training[key])


def test_foreign_batch_norm_uses_running_statistics_in_penalty_passes():
    # a norm layer symfw does not know (here torch's BatchNorm2d on (B, 4, 1, 1))
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Unflatten(1, (4, 1, 1)), torch.nn.BatchNorm2d(4), torch.nn.Flatten()
    ).double().train()
    x = torch.randn(32, 3, dtype=torch.float64)
    run = model

    with shared_batch_statistics(model) as shared:
        assert not shared.exact
        run(x)
        with shared.reusing():
            assert not model[2].training
            out = run(x[:5] * 3)
            with shared.reusing():  # nested: restored to the outer mode on exit
                pass
            assert not model[2].training
        assert model[2].training
    model.eval()
    torch.testing.assert_close(out, run(x[:5] * 3))


@pytest.mark.parametrize("share", [True, False], ids=["swapped", "foreign"])
def test_a_plugins_plain_batchnorm1d_shares_statistics_after_build(share):
    # an exactly invariant model with torch's nn.BatchNorm1d: Γ_G must be zero with the training
    # logits handed over (f(x) and f(Λx) normalised alike)
    from symfw.core.nn import BatchNorm1d, share_statistics
    from symfw.core.kinematics import mdot
    from symfw.plugins.lorentz_groups import Lorentz
    from symfw.plugins.seal_group import SealGroup

    class MassNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))

        def forward(self, p4, mask):
            total = (p4 * mask.unsqueeze(-1)).sum(1)
            return self.net(mdot(total, total).unsqueeze(-1) / 1e4).squeeze(-1)

    torch.manual_seed(0)
    model = MassNet().double().train()
    if share:
        share_statistics(model)
        assert type(model.net[1]) is BatchNorm1d
    batch = member_batch(1, dtype=torch.float64)
    p4, mask = batch.p4[0], batch.mask[0]
    with shared_batch_statistics(model) as shared:
        assert shared.exact == share
        logits = model(p4, mask)

        def fn(x, m):
            with shared.reusing():
                return model(x, m)

        given = Batch(p4, mask, batch.label[0], batch.weight[0], logits=logits if shared.exact else None)
        value = SealGroup(SealGroup.Options(), Lorentz())(fn, given)
    assert float(value) < 1e-20  # unswapped: no logits handed over, f(x) and f(Λx) both via fn
    if not share:
        return
    # and the swap changed nothing else: same outputs as torch's layer in training and eval mode
    torch.manual_seed(1)
    plain = MassNet().double().train()
    torch.manual_seed(1)
    swapped = share_statistics(MassNet()).double().train()
    torch.testing.assert_close(swapped(p4, mask), plain(p4, mask), rtol=0, atol=0)
    torch.testing.assert_close(swapped.eval()(p4, mask), plain.eval()(p4, mask), rtol=0, atol=0)


class ItemPenalty(Penalty):
    """A penalty that leaves vmap: it reads a Python number from a tensor."""

    name = "test-item"
    Options = NoOptions

    def __call__(self, fn, batch):
        out = fn(batch.p4, batch.mask)
        scale = float(out.detach().abs().mean().item())  # not allowed under vmap
        return out.pow(2).mean() * (1.0 + 0 * scale)


def registry_with_item_penalty() -> Registry:
    base = get_registry()
    reg = Registry(entries={k: dict(v) for k, v in base.entries.items()}, presets=dict(base.presets))
    reg.add("penalty", ItemPenalty, "tests", "tests")
    return reg


def test_auto_trains_several_members_one_after_the_other_on_the_cpu():
    res = run_training(small_spec("pfn", epochs=1), toy_events(300), RunSettings(data="toy", seeds=2))["fractions"][0]
    assert (res["mode"], res["mode_reason"]) == ("sequential", "on the CPU one after the other is faster")


def test_penalty_that_cannot_run_under_vmap_falls_back_to_sequential(monkeypatch):
    import symfw.core.training as T

    monkeypatch.setattr(T, "auto_sequential", lambda job: None)  # as auto decides on a GPU
    reg = registry_with_item_penalty()
    data = toy_events(300)
    spec_dict = small_spec("pfn", epochs=1).model_dump()
    spec_dict["penalties"] = [{"name": "test-item", "lam": 0.5}]
    spec = symfw.resolve_spec(spec_dict, registry=reg)
    res = run_training(spec, data, RunSettings(data="toy", seeds=2), registry=reg)["fractions"][0]
    assert res["mode"] == "sequential"
    assert "vmap failed" in res["mode_reason"]
    assert res["members"][0]["final"]["test"]["auc"] is not None


def test_probe_leaves_the_ensemble_untouched():
    spec = small_spec("pfn")
    ens = Ensemble(spec, [1, 2])
    before = ens.state()
    reason = ens.probe_vectorized(member_batch(2), [PenaltyTerm("x", ItemPenalty(NoOptions(), None), 1.0)])
    assert reason is not None and "item" in reason.lower() or "vmap" in reason.lower()
    assert ens.probe_vectorized(member_batch(2)) is None
    after = ens.state()
    for a, b in zip(before, after):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert all(p.grad is None for p in ens.parameters())


def test_seal_infinitesimal_penalty_runs_vectorized_and_matches_sequential():
    if "seal-infinitesimal" not in get_registry().entries["penalty"]:
        pytest.skip("seal-infinitesimal penalty not registered")
    data = toy_events(300)
    spec_dict = small_spec("pfn", epochs=2).model_dump()
    spec_dict["penalties"] = [{"name": "seal-infinitesimal", "lam": 0.1}]
    spec = symfw.resolve_spec(spec_dict)
    runs = {
        mode: run_training(spec, data, RunSettings(data="toy", seeds=2), vectorize=mode, dtype=torch.float64)[
            "fractions"
        ][0]
        for mode in ("yes", "no")
    }
    assert runs["yes"]["mode"] == "vectorized", runs["yes"]["mode_reason"]
    np.testing.assert_allclose(runs["yes"]["curves"]["loss"], runs["no"]["curves"]["loss"], atol=1e-9)
    np.testing.assert_allclose(runs["yes"]["curves"]["val_auc"], runs["no"]["curves"]["val_auc"], atol=1e-9)


def test_per_event_gradient_penalty_in_training_equals_the_jvp_one():
    # the trainer's fn normalises with recorded statistics, so events do not interact and one
    # input gradient gives the exact directional derivatives
    from symfw.plugins.lorentz_groups import Lorentz
    from symfw.plugins.seal_infinitesimal import SealInfinitesimal

    ens = Ensemble(small_spec("pfn"), [3], dtype=torch.float64)
    ens.train()
    params, buffers = ens._slice(0)
    batch = member_batch(1, dtype=torch.float64)
    values = {}
    for method in ("jvp", "gradient"):
        penalty = SealInfinitesimal(SealInfinitesimal.Options(method=method, random_signs=False), Lorentz())
        with shared_batch_statistics(ens.base) as shared:
            ens._call(params, buffers, batch.p4[0], batch.mask[0])
            values[method] = penalty(ens.penalty_fn(params, buffers, shared), Batch(
                batch.p4[0], batch.mask[0], batch.label[0], batch.weight[0]))
    torch.testing.assert_close(values["gradient"], values["jvp"], rtol=1e-10, atol=0)


def test_evaluation_passes_are_sized_to_the_models_memory():
    """PELICAN's pair tensors get small evaluation chunks, an MLP on two particles the largest;
    the chunking does not change the outputs."""
    from symfw.core import limits
    from symfw.core.ensemble import Ensemble
    from symfw.core.spec import resolve_spec

    assert limits.eval_chunk(symfw.load_spec("pfn")) == limits.EVAL_CHUNK
    pelican = symfw.load_spec("pelican-jets")
    chunk = limits.eval_chunk(pelican)
    assert 64 <= chunk < 1000
    peak = limits._measured(pelican, symfw.core.registry.get_registry(), "pass", chunk, False, torch.float32)
    assert peak <= 1.2 * limits.EVAL_BYTES  # one pass of that many jets holds about the budget
    spec = resolve_spec({**pelican.model_dump(), "n_particles": 6})
    ens = Ensemble(spec, [1, 2], dtype=torch.float64)
    ens.eval_chunk = 7
    p4 = torch.cat([torch.rand(40, 6, 1) * 50 + 60, torch.randn(40, 6, 3) * 20], -1).double()
    mask = torch.ones(40, 6, dtype=torch.bool)
    mask[::3, 4:] = False
    torch.testing.assert_close(ens.predict(p4, mask), ens.predict(p4, mask, chunk=40), rtol=1e-12, atol=1e-12)
