"""Tasks: binary (unchanged numbers: test_pinned.py), multiclass, regression, the equivariant
four-vector head, augmentation, and the breaking variable behind the weight curve."""

import numpy as np
import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core.compare import run_compare
from symfw.core.data import EventData
from symfw.core.errors import DataError, SpecError
from symfw.core.groups import act, random_elements
from symfw.core.spec import resolve_spec
from symfw.core.training import RunSettings, augmenter, run_training, with_training_overrides


def spec_of(preset, epochs=2, batch_size=64, **changes):
    data = symfw.load_spec(preset).model_dump()
    for key, value in changes.items():
        data[key] = value
    return with_training_overrides(resolve_spec(data), epochs=epochs, batch_size=batch_size)


def three_classes(n=900, seed=1) -> EventData:
    """toy events relabelled by pair-mass window: 0 below 80, 1 from 80 to 100, 2 above."""
    data = toy_events(n, seed=seed)
    p = data.p4.sum(1)
    m = np.sqrt(np.maximum(p[:, 0] ** 2 - (p[:, 1:] ** 2).sum(1), 0))
    label = np.digitize(m, [80.0, 100.0])
    return EventData(p4=data.p4, label=label, mask=data.mask, weight=data.weight, meta={"source": "toy3"})


def with_target(data: EventData) -> EventData:
    """Regression target: the summed four-momentum scaled by 0.9 in energy (a smooth, learnable map)."""
    total = data.p4.sum(1)
    return EventData(p4=data.p4, label=data.label, mask=data.mask, weight=data.weight, target=total * [0.9, 1, 1, 1],
                     meta={})


def test_multiclass_learns_three_mass_windows_and_reports_macro_auc():
    data = three_classes()
    spec = spec_of("invariant", epochs=4, task={"name": "multiclass", "options": {"classes": 3}})
    f = run_training(spec, data, RunSettings(data="toy3"))["fractions"][0]
    assert f["primary"] == "auc" and set(f["members"][0]["final"]["test"]) == {"auc", "accuracy", "loss"}
    assert f["summary"]["final_test"]["auc"]["mean"] > 0.75  # chance is 0.5; the mass separates the classes
    assert f["summary"]["final_test"]["accuracy"]["mean"] > 0.5  # chance is about 1/3


def test_a_task_refuses_data_it_cannot_serve():
    with pytest.raises(DataError, match="task binary: labels must be 0 or 1, found 3 classes"):
        run_training(spec_of("invariant"), three_classes(), RunSettings(data="toy3"))
    two = spec_of("invariant", task={"name": "multiclass", "options": {"classes": 2}})
    with pytest.raises(DataError, match=r"labels must be 0 … 1 \(classes = 2\), found 0 … 2"):
        run_training(two, three_classes(), RunSettings(data="toy3"))
    with pytest.raises(DataError, match="task regression: the data have no 'target' array"):
        run_training(spec_of("pfn", task={"name": "regression"}), toy_events(200), RunSettings(data="toy"))


def test_regression_learns_a_target_and_reports_four_vector_resolutions(tmp_path):
    data = with_target(toy_events(600))
    spec = spec_of("pfn", epochs=4, task={"name": "regression"})
    f = run_training(spec, data, RunSettings(data="toy", seeds=2), tmp_path / "r")["fractions"][0]
    assert f["primary"] == "loss" and f["direction"] == "min"
    test = f["summary"]["final_test"]
    assert {"loss", "mse", "mae_0", "bias_3", "pt", "mass", "dR", "dPsi"} <= set(test)
    # standardised MSE: 1 is the spread of the targets; the model does better
    assert test["loss"]["mean"] < 0.5
    losses = [row[0] for row in f["curves"]["val_loss"]]
    assert f["members"][0]["best"]["epoch"] == int(np.argmin(losses)) + 1  # the best epoch minimises the loss
    from symfw.core.metrics import four_vector_resolutions
    from symfw.core.training import prepare_split

    test = prepare_split(data, RunSettings(data="toy")).test
    reference = four_vector_resolutions(data.p4[test].sum(1), data.target[test])
    assert f["report"]["sum_of_inputs"] == pytest.approx(reference)  # the naive reconstruction, for comparison
    curves = f["report"]["resolution_vs_pt"]
    assert len(curves) == 2 and len(curves[0]["centers"]) == len(curves[0]["pt"])
    from symfw.core.plots import write_plots

    assert "resolution_vs_pt.png" in {p.name for p in write_plots([run_training(
        spec, data, RunSettings(data="toy", seeds=2), tmp_path / "r", resume=True)], tmp_path)}


def test_the_learning_rate_choice_minimises_the_regression_loss(tmp_path):
    data = with_target(toy_events(400))
    specs = [spec_of("pfn", task={"name": "regression"}), spec_of("invariant-four-vector")]
    summary = run_compare(specs, data, RunSettings(data="toy"), tmp_path, lr_grid=[1e-4, 3e-3], plots=False)
    assert summary["primary"] == "loss" and summary["selection"]["direction"] == "min"
    for name, entry in summary["selection"]["specs"].items():
        scores = [t["val_loss"] for t in entry["trials"]]
        assert entry["lr"] == entry["trials"][int(np.argmin(scores))]["lr"], name
    assert summary["rows"][0]["final_test_loss"]["mean"] > 0


@pytest.mark.parametrize("dtype", [torch.float64])
def test_the_four_vector_head_of_an_invariant_model_is_lorentz_equivariant(dtype):
    model = symfw.build_model(symfw.load_spec("invariant-four-vector")).to(dtype).eval()
    with torch.no_grad():  # non-trivial weights w_i (the head starts at w_i = 1)
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    p4 = torch.as_tensor(toy_events(64).p4, dtype=dtype)
    mask = torch.ones(64, 2, dtype=torch.bool)
    elements = random_elements("lorentz", 64, rapidity=(0.0, 1.5), dtype=dtype)
    with torch.no_grad():
        out, moved = model(p4, mask), model(act(elements, p4, mask), mask)
    assert out.shape == (64, 4)
    expected = torch.einsum("bij,bj->bi", elements, out)
    torch.testing.assert_close(moved, expected, rtol=1e-9, atol=1e-9 * float(out.abs().max()))
    assert not torch.allclose(moved, out, rtol=1e-3)  # the output does move: it is equivariant, not invariant
    # the same head on a general (PFN) latent is not equivariant
    general = symfw.build_model(spec_of("pfn", task={"name": "regression"}, head={"kind": "four-vector", "hidden": [16]}))
    general = general.to(dtype).eval()
    with torch.no_grad():
        for p in general.head.parameters():
            p.normal_(0, 0.3)
        gap = (general(act(elements, p4, mask), mask) - torch.einsum("bij,bj->bi", elements, general(p4, mask))).abs()
    assert float(gap.max()) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_jet_four_vector_preset_is_equivariant_on_padded_jets(dtype):
    """invariant-jets-four-vector: an invariant latent of the 16 hardest constituents, weights w_i
    over all real constituents — the output moves as a four-vector, padding contributes nothing."""
    from symfw.testing import random_events

    torch.manual_seed(0)
    model = symfw.build_model(symfw.load_spec("invariant-jets-four-vector")).to(dtype).eval()
    with torch.no_grad():  # non-trivial weights w_i (the head starts at w_i = 1)
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    p4 = random_events(16, 128, dtype=torch.float64, seed=3, mass=0.14)
    mask = torch.arange(128)[None, :] < torch.randint(20, 100, (16, 1))
    p4 = (p4 * mask[..., None]).to(dtype)
    elements = random_elements("lorentz", 16, rapidity=(0.0, 0.5), dtype=torch.float64)
    with torch.no_grad():
        out = model(p4, mask).double()
        moved = model(act(elements, p4.double(), mask).to(dtype), mask).double()
        padded = p4.clone()
        padded[~mask] = 7.0  # what sits in the padded slots must not matter
        again = model(padded, mask).double()
    expected = torch.einsum("bij,bj->bi", elements, out)
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    scale = float(expected.abs().max())
    torch.testing.assert_close(moved, expected, rtol=tol, atol=tol * scale)
    torch.testing.assert_close(again, out, rtol=tol, atol=tol * scale)
    assert float((moved - out).abs().max()) > 100 * tol * scale  # it moves: equivariant, not invariant


def test_a_four_vector_head_needs_a_task_with_four_outputs():
    with pytest.raises(SpecError, match="head.kind: a four-vector head outputs 4 numbers, but task 'multiclass' needs 3"):
        spec_of("invariant", task={"name": "multiclass"}, head={"kind": "four-vector"})


def test_augmentation_moves_each_events_particles_by_a_group_element():
    spec = spec_of("pfn", training={"augment": {"group": "so3", "angle": 3.0}, "epochs": 2, "batch_size": 64})
    apply = augmenter(spec)
    data = toy_events(32)
    t = data.tensors(dtype=torch.float64)
    batch = symfw.core.interfaces.Batch(t["p4"][None], t["mask"][None], t["label"][None], t["weight"][None])
    torch.manual_seed(0)
    moved = apply(batch)
    # a rotation keeps energies and |p| of every particle and the pair mass, and changes the directions
    torch.testing.assert_close(moved.p4[..., 0], batch.p4[..., 0])
    torch.testing.assert_close(moved.p4[..., 1:].norm(dim=-1), batch.p4[..., 1:].norm(dim=-1))
    assert float((moved.p4[..., 1:] - batch.p4[..., 1:]).abs().max()) > 1.0
    # training with it: other numbers than without, the same numbers for the same seed
    runs = [run_training(s, data, RunSettings(data="toy"))["fractions"][0]["curves"]["loss"]
            for s in (spec, spec, spec_of("pfn"))]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_an_unknown_augmentation_group_is_a_spec_error():
    with pytest.raises(SpecError, match="training.augment.group: unknown group 'nope'"):
        spec_of("pfn", training={"augment": {"group": "nope"}})


def test_the_weight_curve_is_drawn_against_the_models_breaking_variable():
    data = toy_events(400)
    p = data.p4.sum(1)
    variables = {"leading-pt": np.hypot(data.p4[..., 1], data.p4[..., 2]).max(1), "system-pt": np.hypot(p[:, 1], p[:, 2])}
    labels = {"leading-pt": "leading-particle pT [GeV]", "system-pt": "system pT [GeV]"}
    edges = {}
    for context, values in variables.items():
        spec = spec_of("hybrid", epochs=1, context={"name": context})
        curve = run_training(spec, data, RunSettings(data="toy"))["fractions"][0]["general_weight"]
        assert curve["variable"] == labels[context]
        edges[context] = np.asarray(curve["pt_edges"])
        # the bin edges are quantiles of this variable over the test events
        assert values.min() - 1e-6 <= edges[context].min() and edges[context].max() <= values.max() + 1e-6
    assert not np.allclose(edges["leading-pt"], edges["system-pt"])


def test_a_regression_sample_may_hold_one_class_and_a_classifier_refuses_it(tmp_path):
    from symfw.core.data import load_events, save_events

    data = with_target(toy_events(200))
    one = EventData(p4=data.p4, label=np.zeros(200, dtype=np.int64), mask=data.mask, weight=data.weight,
                    target=data.target, meta={})
    save_events(one, tmp_path / "one.npz")
    back = load_events(tmp_path / "one.npz")  # allowed: the sample carries a regression target
    f = run_training(spec_of("pfn", epochs=1, task={"name": "regression"}), back, RunSettings(data="one"))
    assert f["fractions"][0]["n_train"] == 120
    with pytest.raises(DataError, match="task binary: the labels hold one class only"):
        run_training(spec_of("pfn", epochs=1), back, RunSettings(data="one"))


def test_each_task_combines_its_members_as_its_prediction_pools_them():
    from symfw.core.registry import get_registry

    reg = get_registry()
    rng = np.random.default_rng(3)
    binary = reg.get("task", "binary")()
    z = rng.normal(scale=3.0, size=(3, 50))
    z[0, 0], z[1, 0] = 60.0, -60.0  # saturated members stay finite
    voted = binary.combine(z)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(sigmoid(voted), sigmoid(z).mean(0), rtol=1e-12)
    np.testing.assert_allclose(binary.combine(z[:1]), z[0], rtol=1e-12)  # one member is itself
    assert not np.allclose(voted, z.mean(0))  # the mean probability, not the mean logit

    multi = reg.get("task", "multiclass")()
    zc = rng.normal(size=(4, 20, 3))
    soft = np.exp(zc) / np.exp(zc).sum(-1, keepdims=True)
    out = multi.combine(zc)
    np.testing.assert_allclose(np.exp(out) / np.exp(out).sum(-1, keepdims=True), soft.mean(0), rtol=1e-12)

    regression = reg.get("task", "regression")()
    y = rng.normal(size=(2, 10, 4))
    np.testing.assert_allclose(regression.combine(y), y.mean(0))


def test_a_one_target_regression_loss_pairs_each_event_with_its_own_target():
    from symfw.plugins.regression import Regression

    task = Regression(Regression.Options(targets=1))
    target = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    weight = torch.ones(3, dtype=torch.float64)
    task.prepare(target, weight)  # σ of (1, 2, 4)
    output = torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64)  # a one-output model gives (B,)
    expected = ((output - target[:, 0]) ** 2).mean() / task.scale[0] ** 2
    assert float(task.loss(output, target, weight)) == pytest.approx(float(expected))
    members = torch.stack([output, target[:, 0]])  # an ensemble: (M, B); the second member is exact
    assert task.loss(members, target, weight).tolist() == pytest.approx([float(expected), 0.0])
    assert task.metrics(output.numpy(), target.numpy(), weight.numpy())["loss"] == pytest.approx(float(expected))
