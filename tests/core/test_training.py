"""The trainer: held-out metrics, selection on validation only, seeds, fractions, pT cut, curves."""

import math

import numpy as np
import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core import metrics as M
from symfw.core.errors import DataError, UsageError
from symfw.core.training import (
    RunSettings,
    general_weight_curve,
    lam_at,
    context_variable,
    load_members,
    member_seeds,
    prepare_split,
    resolve_device,
    run_training,
    with_training_overrides,
)


def small(preset, epochs=3, batch_size=64):
    spec = symfw.load_spec(preset)
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [32, 16]})})
    return with_training_overrides(spec, epochs=epochs, batch_size=batch_size)


@pytest.fixture(scope="module")
def toy():
    return toy_events(800, weighted=True)


@pytest.fixture(scope="module")
def invariant_run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "inv"
    spec = with_training_overrides(symfw.load_spec("invariant"), epochs=4, batch_size=64)
    return out, run_training(spec, toy, RunSettings(data="toy", seeds=2), out)


def test_invariant_model_learns_the_mass_and_reports_held_out_metrics(invariant_run):
    _, res = invariant_run
    f = res["fractions"][0]
    assert f["summary"]["final_test"]["auc"]["mean"] > 0.8
    assert f["n_train"] + f["n_val"] + f["n_test"] == 800
    assert set(f["members"][0]["final"]["test"]) == set(M.METRICS) | {"loss"}
    assert f["curves"]["epoch"] == [1, 2, 3, 4]


def test_best_epoch_is_chosen_on_validation_only(invariant_run):
    out, res = invariant_run
    f = res["fractions"][0]
    for m, member in enumerate(f["members"]):
        curve = [row[m] for row in f["curves"]["val_auc"]]
        assert member["best"]["epoch"] == int(np.argmax(curve)) + 1
        assert member["best"]["val"]["auc"] == pytest.approx(max(curve))
    # the best-epoch test metric is that of the snapshot: recompute from the checkpoint
    models = load_members(out, best=True)
    data = toy_events(800, weighted=True)
    split = prepare_split(data, RunSettings(data="toy"))
    t = data.subset(split.test).tensors()
    with torch.no_grad():
        logits = models[0](t["p4"], t["mask"]).double().numpy()
    assert M.auc(data.label[split.test], logits, data.weight[split.test]) == pytest.approx(
        f["members"][0]["best"]["test"]["auc"], abs=1e-6
    )


def test_event_weights_enter_loss_and_metrics(toy):
    spec = small("invariant", epochs=1)
    weighted = run_training(spec, toy, RunSettings(data="toy"))["fractions"][0]
    unweighted_data = toy_events(800, weighted=False)
    assert not np.array_equal(toy.weight, unweighted_data.weight)
    plain = run_training(spec, unweighted_data, RunSettings(data="toy"))["fractions"][0]
    assert weighted["members"][0]["final"]["val"]["auc"] != plain["members"][0]["final"]["val"]["auc"]
    assert weighted["curves"]["loss"][0][0] != plain["curves"]["loss"][0][0]


def test_member_seed_does_not_depend_on_ensemble_size(toy):
    assert member_seeds(0, 3)[:2] == member_seeds(0, 2)
    assert len(set(member_seeds(7, 5))) == 5 and member_seeds(7, 1) != member_seeds(8, 1)
    spec = small("pfn", epochs=2)
    one = run_training(spec, toy, RunSettings(data="toy", seeds=1), vectorize="no")["fractions"][0]
    two = run_training(spec, toy, RunSettings(data="toy", seeds=2), vectorize="no")["fractions"][0]
    assert one["members"][0] == two["members"][0]
    assert two["members"][1]["final"]["test"]["auc"] != two["members"][0]["final"]["test"]["auc"]


def test_fractions_use_the_first_part_of_the_same_training_split(toy):
    spec = small("invariant", epochs=1)
    res = run_training(spec, toy, RunSettings(data="toy", fractions=(0.25, 1.0)))
    sizes = [f["n_train"] for f in res["fractions"]]
    assert sizes == [round(0.25 * sizes[1]), sizes[1]]
    assert res["fractions"][0]["n_test"] == res["fractions"][1]["n_test"]


def test_train_pt_max_trains_below_the_cut_and_reports_both_sides(toy, tmp_path):
    lead = context_variable("leading-pt", toy)
    cut = float(np.quantile(lead, 0.6))
    settings = RunSettings(data="toy", seeds=2, train_pt_max=cut)
    split = prepare_split(toy, settings)
    assert (lead[split.train] < cut).all() and (lead[split.val] < cut).all()
    assert (lead[split.test] >= cut).any()
    res = run_training(small("invariant", epochs=2), toy, settings, tmp_path / "run")
    ex = res["fractions"][0]["extrapolation"]
    assert ex["pt_max"] == cut
    sides = [b["side"] for b in ex["bins"]]
    assert sides.count("below") >= 1 and sides.count("above") >= 1
    assert sum(b["n"] for b in ex["bins"]) == res["fractions"][0]["n_test"]
    assert all(b["hi"] <= cut for b in ex["bins"] if b["side"] == "below")
    assert ex["below"]["auc"]["n"] == 2 and ex["above"]["n"] == int((lead[split.test] >= cut).sum())
    from symfw.core.plots import write_plots

    written = {p.name for p in write_plots([res], tmp_path)}
    assert "extrapolation.png" in written


def test_a_pt_axis_is_logarithmic_only_for_a_wide_range():
    from symfw.core.plots import pt_scale

    assert pt_scale(20.0, 200.0) == "log"  # the muons' falling spectrum
    assert pt_scale(450.0, 720.0) == "linear"  # one jet-pT window: a log axis would show one tick
    assert pt_scale(0.0, 100.0) == "linear"


def test_a_cut_below_every_event_is_a_clear_error(toy):
    with pytest.raises(DataError, match="train_pt_max"):
        prepare_split(toy, RunSettings(data="toy", train_pt_max=1e-3))


def test_learned_weight_curve_comes_from_the_models_combiner():
    model = symfw.build_model(symfw.load_spec("hybrid")).eval()
    data = toy_events(400)
    t = data.tensors()
    curve = general_weight_curve([model], t["p4"], t["mask"], bins=5)
    # replace the combiner's weight by a known function of the context (leading pT)
    model.combiner.weight = lambda ctx: torch.sigmoid((ctx[:, 0] - 40.0) / 10.0)
    known = general_weight_curve([model], t["p4"], t["mask"], bins=5)
    pt = context_variable("leading-pt", data)
    edges = np.asarray(known["pt_edges"])
    which = np.clip(np.searchsorted(edges, pt, side="right") - 1, 0, len(edges) - 2)
    expected = [float((1 / (1 + np.exp(-(pt[which == b] - 40) / 10))).mean()) for b in range(len(edges) - 1)]
    np.testing.assert_allclose(known["mean"], expected, rtol=1e-5)
    assert known["mean"] != curve["mean"]
    assert sum(known["n"]) == 400
    assert general_weight_curve([symfw.build_model(symfw.load_spec("pfn"))], t["p4"], t["mask"]) is None


def test_trained_hybrid_curve_matches_its_saved_members(tmp_path):
    data = toy_events(400)
    res = run_training(small("hybrid", epochs=1), data, RunSettings(data="toy", seeds=2), tmp_path / "h")
    saved = res["fractions"][0]["general_weight"]
    models = load_members(tmp_path / "h")
    split = prepare_split(data, RunSettings(data="toy"))
    t = data.subset(split.test).tensors()
    again = general_weight_curve(models, t["p4"], t["mask"])
    np.testing.assert_allclose(again["mean"], saved["mean"], rtol=1e-5)
    assert len(saved["per_member"]) == 2 and all(0 <= w <= 1 for w in saved["mean"])


def test_lambda_warmup_ramps_linearly():
    from symfw.core.spec import PenaltyRef

    ref = PenaltyRef(name="x", lam=2.0, warmup_epochs=4)
    assert [lam_at(ref, e) for e in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert lam_at(PenaltyRef(name="x", lam=0.3), 0) == 0.3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seeds": 0}, "^seeds must be >= 1"),  # core errors name the field; the CLI names its option
        ({"fractions": (0.0,)}, "in \\(0, 1\\]"),
        ({"fractions": (1.5,)}, "in \\(0, 1\\]"),
        ({"train_pt_max": -1.0}, "^train_pt_max"),
    ],
)
def test_bad_settings_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        RunSettings(data="toy", **kwargs)


def test_device_names():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="cpu, cuda or auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


def test_overrides_are_validated():
    spec = with_training_overrides(symfw.load_spec("pfn"), epochs=7, lr=3e-4)
    assert (spec.training.epochs, spec.training.lr, spec.training.batch_size) == (7, 3e-4, 128)
    with pytest.raises(UsageError, match="^training.epochs: "):  # the spec field (the CLI says --epochs)
        with_training_overrides(spec, epochs=0)
    assert math.isclose(spec.training.weight_decay, 0.01)


def test_penalty_randomness_is_seeded_by_the_members_trained_together():
    from symfw.core.training import member_seeds, penalty_seed

    a, b = member_seeds(0, 2)
    # members trained as separate tasks (Ray, --ddp) draw different penalty randomness ...
    assert penalty_seed([a], 3) != penalty_seed([b], 3)
    # ... reproducibly, and anew each epoch
    assert penalty_seed([a], 3) == penalty_seed([a], 3) != penalty_seed([a], 4)
    assert penalty_seed([a, b], 3) not in (penalty_seed([a], 3), penalty_seed([b], 3))


def test_cosine_schedule_anneals_from_lr_to_zero():
    from symfw.core.spec import Training
    from symfw.core.training import lr_at

    cfg = Training(lr=1e-2, epochs=4, schedule="cosine")
    assert [round(lr_at(cfg, e), 6) for e in range(4)] == [0.01, 0.008536, 0.005, 0.001464]
    assert lr_at(Training(lr=1e-2, epochs=4), 3) == 1e-2


# --------------------------------------------------------------------------- the optimiser


def _pairs(shapes, seed=0):
    """Two identical sets of float64 parameters (some with permuted memory layouts)."""
    torch.manual_seed(seed)
    made = []
    for i, shape in enumerate(shapes):
        t = torch.randn(shape, dtype=torch.float64)
        if i % 2 and t.dim() > 1:
            t = t.transpose(0, 1).contiguous().transpose(0, 1)  # same values, transposed in memory
        made.append(t)
    copies = lambda: [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t).requires_grad_(True)  # noqa: E731
                      for t in made]
    return copies(), copies()


def _step_both(a, b, optimisers, grads=None):
    for x, y in zip(a, b):
        g = torch.randn_like(x) if grads is None else grads
        x.grad, y.grad = g.clone(), g.clone()
    for opt in optimisers:
        opt.step()
        opt.zero_grad()


def test_flat_adamw_steps_and_saves_exactly_as_torchs_adamw():
    from symfw.core.training import FlatAdamW, _torch_adamw

    shapes = [(3, 4), (5, 2), (4,), (2, 3, 5), (7,)]
    a, b = _pairs(shapes)
    torch_opt, flat = _torch_adamw(a, 1e-2, 0.01), FlatAdamW(b, 1e-2, 0.01)
    strides = [p.stride() for p in b]
    for _ in range(5):
        _step_both(a, b, (torch_opt, flat))
    assert flat.flat_steps and [p.stride() for p in b] == strides  # one flat update, layouts kept
    # the same arithmetic; the fused kernel's vector and scalar loops may round an element's
    # moments differently in the last bit, depending on where it falls (measured: ≤ 1 ulp)
    close = lambda x, y: torch.testing.assert_close(x, y, rtol=1e-15, atol=0)  # noqa: E731
    for x, y in zip(a, b):
        close(x, y)
    theirs, ours = torch_opt.state_dict(), flat.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    for i in theirs["state"]:
        for k, v in theirs["state"][i].items():
            assert ours["state"][i][k].shape == v.shape
            close(ours["state"][i][k], v)
    # each state loads into the other optimiser, and both continue alike (torch's own AdamW on
    # contiguous parameters: its fused kernel takes a loaded state to be laid out as the parameter)
    c, d = _pairs(shapes)
    c = [x.detach().contiguous().requires_grad_(True) for x in c]
    with torch.no_grad():
        for x, y, z in zip(a, c, d):
            y.copy_(x)
            z.copy_(x)
    torch_again, flat_again = _torch_adamw(c, 1e-2, 0.01), FlatAdamW(d, 1e-2, 0.01)
    torch_again.load_state_dict(ours)
    flat_again.load_state_dict(theirs)
    torch.manual_seed(7)
    grads = [torch.randn_like(x) for x in a]
    for group in ((a, torch_opt), (b, flat), (c, torch_again), (d, flat_again)):
        for p, g in zip(group[0], grads):
            p.grad = torch.empty_like(p).copy_(g)  # laid out as its parameter, as autograd's are
        group[1].step()
    for x, y, z, w in zip(a, b, c, d):
        close(x, y)
        close(x, z)
        close(x, w)


def test_flat_adamw_lays_its_state_out_as_the_stacked_parameters():
    # the members of one parameter, one after the other, make one (M, ...) entry of the state:
    # the state torch's AdamW has on the stacked tensors (what checkpoints hold and merge stacks)
    from symfw.core.training import FlatAdamW, _torch_adamw

    members = 3
    torch.manual_seed(1)
    stacked = [torch.randn(members, 4, 5, dtype=torch.float64, requires_grad=True),
               torch.randn(members, 7, dtype=torch.float64, requires_grad=True)]
    parts = [s[m].detach().clone().requires_grad_(True) for s in stacked for m in range(members)]
    torch_opt = _torch_adamw(stacked, 1e-2, 0.01)
    flat = FlatAdamW(parts, 1e-2, 0.01, layout=[s.shape for s in stacked], per_entry=members)
    for _ in range(3):
        for k, s in enumerate(stacked):
            g = torch.randn_like(s)
            s.grad = g
            for m in range(members):
                parts[k * members + m].grad = g[m].clone()
        torch_opt.step()
        flat.step()
    assert all(torch.equal(stacked[k][m], parts[k * members + m]) for k in range(2) for m in range(members))
    theirs, ours = torch_opt.state_dict(), flat.state_dict()
    for i in theirs["state"]:
        for k, v in theirs["state"][i].items():
            assert ours["state"][i][k].shape == v.shape and torch.equal(ours["state"][i][k], v), (i, k)


def test_flat_adamw_gradients_are_views_that_autograd_accumulates_into():
    # stepping the flat tensor, each .grad is a view of one flat gradient: backward adds into it
    # in place (transposed gradients too), zero_grad zeroes it, and the updates are torch's; a
    # gradient assigned in its place (data-parallel averaging) is used, and the view comes back
    from symfw.core.training import FlatAdamW, _torch_adamw

    shapes = [(3, 4), (5, 4), (4,), (2, 3, 5)]
    a, b = _pairs(shapes)
    torch_opt, flat = _torch_adamw(a, 1e-2, 0.01), FlatAdamW(b, 1e-2, 0.01)
    x = torch.randn(6, 3, dtype=torch.float64)

    def loss(p):  # uses every parameter, the (5, 3) one transposed as a Linear weight is
        h = torch.tanh(x @ p[0]) @ p[1].t()  # (6, 5)
        return (h.sum() * p[2].sum() + p[3].square().sum() * h.mean()).square()

    for step in range(4):
        for params, opt in ((a, torch_opt), (b, flat)):
            loss(params).backward()
            if step == 2 and opt is flat:  # replaced, as the data-parallel stepper does
                views = [p.grad for p in b]
                for p in b:
                    p.grad = p.grad.clone()
            opt.step()
            opt.zero_grad()
        if step >= 1:
            assert all(p.grad is g and g.untyped_storage().data_ptr() == flat.flat_grad.untyped_storage().data_ptr()
                       for p, g in zip(b, flat.grads))
            assert torch.count_nonzero(flat.flat_grad) == 0
    assert all(v is g for v, g in zip(views, flat.grads)) and flat.flat_steps
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-15, atol=0)


def test_flat_adamw_keeps_torchs_per_tensor_update_when_a_parameter_has_no_gradient():
    from symfw.core.training import FlatAdamW, _torch_adamw

    a, b = _pairs([(3, 4), (5,)])
    torch_opt, flat = _torch_adamw(a, 1e-2, 0.01), FlatAdamW(b, 1e-2, 0.01)
    before = b[1].detach().clone()
    for x, y in zip(a[:1], b[:1]):
        g = torch.randn_like(x)
        x.grad, y.grad = g.clone(), g.clone()
    torch_opt.step()
    flat.step()
    assert not flat.flat_steps and torch.equal(b[1], before)  # as torch: no gradient, no update
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------- how members train


def test_members_one_after_the_other_are_modules_of_their_own_and_resume_as_they_started(toy, tmp_path):
    # --vectorize no: each member a module of its own (no functional call), the same numbers as
    # vmapped; a run started vmapped resumes vmapped (whatever is asked), so it ends exactly as
    # the uninterrupted one
    spec, settings = small("hybrid", epochs=2), RunSettings(data="toy", seeds=2)
    one_by_one = run_training(spec, toy, settings, vectorize="no", dtype=torch.float64)["fractions"][0]
    assert one_by_one["mode"] == "sequential"
    vmapped = run_training(spec, toy, settings, tmp_path / "full", vectorize="yes", dtype=torch.float64)
    np.testing.assert_allclose(one_by_one["curves"]["loss"], vmapped["fractions"][0]["curves"]["loss"], rtol=0, atol=1e-9)

    class Killed(Exception):
        pass

    def kill(record):
        if record["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        run_training(spec, toy, settings, tmp_path / "cut", vectorize="yes", dtype=torch.float64, on_epoch=kill)
    resumed = run_training(spec, toy, settings, tmp_path / "cut", resume=True, vectorize="no", dtype=torch.float64)
    assert resumed["fractions"][0]["mode"] == "vectorized"
    strip = lambda r: {**r["fractions"][0], "train_time_s": 0}  # noqa: E731
    assert strip(resumed) == strip(vmapped)


def test_compile_setting_is_checked():
    with pytest.raises(UsageError, match="compile must be"):
        RunSettings(compile="yes")
    assert RunSettings().record()["compile"] is None
    assert RunSettings.from_record({"data": "zmumu"}).compile is None  # runs recorded before the setting


def test_compiled_step_agrees_with_the_eager_one_within_float32_rounding():
    # the compiled step is the same function; float32 rounding of its fused kernels differs in the
    # last bits: one step's gradients agree within 1e-5 of the largest (measured: ≤ 4e-7)
    from symfw.core.ensemble import Ensemble
    from symfw.core.interfaces import Batch

    spec = with_training_overrides(small("pfn"), batch_size=32)
    g = torch.Generator().manual_seed(0)
    p3 = torch.randn(1, 32, 2, 3, generator=g) * 40
    batch = Batch(torch.cat([p3.norm(dim=-1, keepdim=True), p3], -1), torch.ones(1, 32, 2, dtype=torch.bool),
                  (torch.rand(1, 32, generator=g) > 0.5).float(), torch.rand(1, 32, generator=g) + 0.5)
    grads = {}
    for compiled in (False, True):
        ens = Ensemble(spec, [3], direct=True).train()
        if compiled:
            assert ens.compile_step(batch, vectorize=False) is None and ens.compiled
        loss, _ = ens.backward(batch)
        grads[compiled] = (float(loss[0]), [p.grad.clone() for p in ens.parameters()])
    largest = max(float(gr.abs().max()) for gr in grads[False][1])
    assert grads[True][0] == pytest.approx(grads[False][0], rel=1e-6)
    for a, b in zip(grads[True][1], grads[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * largest)


def test_a_step_that_does_not_compile_trains_eagerly_with_a_warning(toy, monkeypatch):
    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    settings = RunSettings(data="toy", compile=True)
    with pytest.warns(UserWarning, match="did not compile, it runs eagerly .*no compiler here"):
        res = run_training(small("pfn", epochs=1), toy, settings)["fractions"][0]
    assert res["compiled"] is False and res["members"][0]["final"]["test"]["auc"] > 0.5


def test_the_members_vote_as_one_model_on_the_same_test_events(invariant_run):
    """results["ensemble"]: the task's combination of the members' final outputs, scored like one member."""
    out, res = invariant_run
    f = res["fractions"][0]
    models = load_members(out)
    data = toy_events(800, weighted=True)
    split = prepare_split(data, RunSettings(data="toy"))
    t = data.subset(split.test).tensors()
    with torch.no_grad():
        probs = np.mean([torch.sigmoid(m(t["p4"], t["mask"]).double()).numpy() for m in models], 0)
    expected = M.auc(data.label[split.test], probs, data.weight[split.test])  # AUC reads any monotone score
    assert f["ensemble"]["members"] == 2
    assert f["ensemble"]["final"]["test"]["auc"] == pytest.approx(expected, abs=1e-6)
    # two members that differ: the vote is not simply one of them
    members = [m["final"]["test"]["auc"] for m in f["members"]]
    assert f["ensemble"]["final"]["test"]["auc"] not in members
    assert set(f["ensemble"]["best"]["test"]) == set(f["members"][0]["best"]["test"])


def test_a_single_member_has_no_vote(toy):
    res = run_training(small("invariant", epochs=1), toy, RunSettings(data="toy"))
    assert res["fractions"][0]["ensemble"] is None
