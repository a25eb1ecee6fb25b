"""One test per hook spec (the meta-test in test_meta.py checks that each hook has one here).

Each registers a component through a fake entry point and uses it the way symfw does.
"""

import types

import torch
from fake_plugins import FakeEntryPoint, install

import symfw
from symfw.core import interfaces as I
from symfw.core.data import EventData
from symfw.core.registry import load_registry
from symfw.testing import random_events


def registry_with(hook, cls, monkeypatch):
    plugin = types.SimpleNamespace(**{hook: symfw.hookimpl(lambda register: register(cls))})
    install(monkeypatch, FakeEntryPoint("t", lambda: plugin))
    reg = load_registry()
    assert reg.failures == []
    return reg


def test_hook_register_groups(monkeypatch):
    class BoostX(I.MatrixLieGroup):
        """Boosts along x."""

        name = "boost-x"
        boosts = ("Kx",)

    reg = registry_with("register_groups", BoostX, monkeypatch)
    group = reg.get("group", "boost-x")()
    assert group.generators().shape == (1, 4, 4)
    assert symfw.resolve_spec({"group": {"name": "boost-x"}, "general": {"encoder": {"name": "pfn"}}}, registry=reg)


def test_hook_register_invariant_maps(monkeypatch):
    class Masses(I.InvariantMap):
        """Squared masses."""

        name = "masses"
        group = "lorentz"

        def __call__(self, p4, mask):
            return (p4[..., 0] ** 2 - (p4[..., 1:] ** 2).sum(-1)) * mask

    reg = registry_with("register_invariant_maps", Masses, monkeypatch)
    spec = symfw.resolve_spec(
        {"invariant": {"invariants": {"name": "masses"}, "encoder": {"name": "mlp", "options": {"hidden": [8]}}}},
        registry=reg,
    )
    assert symfw.build_model(spec, reg)(random_events(4, dtype=torch.float32)).shape == (4,)


def test_hook_register_contexts(monkeypatch):
    class Energy(I.BreakingContext):
        """Total energy."""

        name = "energy"

        def __call__(self, p4, mask):
            return (p4[..., 0] * mask).sum(1, keepdim=True)

    reg = registry_with("register_contexts", Energy, monkeypatch)
    spec = symfw.resolve_spec({**reg.preset("hybrid"), "context": {"name": "energy"}}, registry=reg)
    model = symfw.build_model(spec, reg)
    assert model.general_weight(random_events(3, dtype=torch.float32)).shape == (3,)


def test_hook_register_combiners(monkeypatch):
    class Max(I.Combiner):
        """Elementwise maximum."""

        name = "max"

        def __init__(self, options, latent_dim, context_dim):
            super().__init__(options, latent_dim, context_dim)
            self.out_features = latent_dim

        def forward(self, g, s, context):
            return torch.maximum(g, s)

    reg = registry_with("register_combiners", Max, monkeypatch)
    spec = symfw.resolve_spec({**reg.preset("hybrid"), "combiner": {"name": "max"}}, registry=reg)
    assert symfw.build_model(spec, reg)(random_events(5, dtype=torch.float32)).shape == (5,)


def test_hook_register_encoders(monkeypatch):
    class MeanP4(I.Encoder):
        """Linear map of the mean four-vector."""

        name = "mean-p4"
        consumes = "particles"

        def __init__(self, options, in_features, latent_dim):
            super().__init__(options, in_features, latent_dim)
            self.lin = torch.nn.Linear(in_features, latent_dim)

        def forward(self, particles):
            return self.lin(torch.cat([particles.p4, particles.channels], -1).mean(1))

    reg = registry_with("register_encoders", MeanP4, monkeypatch)
    spec = symfw.resolve_spec({"general": {"encoder": {"name": "mean-p4"}}}, registry=reg)
    assert symfw.build_model(spec, reg)(random_events(2, dtype=torch.float32)).shape == (2,)


def test_hook_register_input_transforms(monkeypatch):
    class AddTimeVector(I.InputTransform):
        """Append (1, 0, 0, 0) as a particle."""

        name = "add-time"

        def __call__(self, particles):
            b = particles.p4.shape[0]
            t = particles.p4.new_tensor([1.0, 0, 0, 0]).expand(b, 1, 4)
            return particles.replace(
                p4=torch.cat([particles.p4, t], 1),
                mask=torch.cat([particles.mask, particles.mask.new_ones(b, 1)], 1),
                channels=particles.p4.new_zeros(b, particles.p4.shape[1] + 1, 0),
            )

    reg = registry_with("register_input_transforms", AddTimeVector, monkeypatch)
    spec = symfw.resolve_spec({**reg.preset("invariant"), "inputs": [{"name": "add-time"}]}, registry=reg)
    model = symfw.build_model(spec, reg)
    # 3 particles now: the invariant map sees 6 pair products instead of 3
    assert model.invariant.encoder.in_features == 6


def test_hook_register_penalties(monkeypatch):
    class L2Logit(I.Penalty):
        """Mean squared logit."""

        name = "l2-logit"

        def __call__(self, model, batch):
            return (model(batch.p4, batch.mask) ** 2).mean()

    reg = registry_with("register_penalties", L2Logit, monkeypatch)
    spec = symfw.resolve_spec({**reg.preset("pfn"), "penalties": [{"name": "l2-logit", "lam": 0.5}]}, registry=reg)
    model = symfw.build_model(spec, reg)
    pen = reg.get("penalty", "l2-logit")(I.NoOptions(), group=model.group)
    p4 = random_events(4, dtype=torch.float32)
    batch = I.Batch(p4, torch.ones(4, 2, dtype=torch.bool), torch.ones(4), torch.ones(4))
    assert pen(model, batch).item() >= 0 and spec.penalties[0].lam == 0.5


def test_hook_register_datasets(monkeypatch):
    import numpy as np

    class Tiny(I.DatasetSource):
        """Two events per class."""

        name = "tiny"

        def generate(self, n_events, seed, progress=None):
            p4 = random_events(4, seed=seed).numpy()
            return EventData(p4=p4, label=np.array([0, 1, 0, 1]), mask=np.ones((4, 2), bool), weight=np.ones(4))

    reg = registry_with("register_datasets", Tiny, monkeypatch)
    from symfw.core.data import resolve_data

    data = resolve_data("tiny", seed=3, registry=reg)
    assert len(data) == 4 and data.label.sum() == 2


def test_hook_register_tasks(monkeypatch):
    import numpy as np

    from symfw.core.training import RunSettings, run_training

    class Hinge(I.Task):
        """Binary labels, hinge loss on one output; accuracy is the primary metric."""

        name = "hinge"
        primary = "accuracy"
        direction = "max"
        columns = (("accuracy", "acc"),)

        def out_features(self):
            return 1

        def targets(self, data):
            return 2.0 * data.label - 1.0

        def loss(self, output, target, weight):
            return (torch.relu(1 - output * target) * weight).sum(-1) / weight.sum(-1)

        def metrics(self, output, target, weight):
            loss = float(self.loss(torch.as_tensor(output), torch.as_tensor(target), torch.as_tensor(weight)))
            return {"accuracy": float((weight * (np.sign(output) == target)).sum() / weight.sum()), "loss": loss}

    reg = registry_with("register_tasks", Hinge, monkeypatch)
    from toy_events import toy_events

    data = symfw.load_spec("invariant", registry=reg).model_dump()
    spec = symfw.core.spec.resolve_spec({**data, "task": {"name": "hinge"}}, registry=reg)
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 2, "batch_size": 64})})
    res = run_training(spec, toy_events(300), RunSettings(data="toy"), registry=reg)["fractions"][0]
    assert res["task"] == "hinge" and res["primary"] == "accuracy"
    assert len(res["curves"]["val_accuracy"]) == 2
    best = res["members"][0]["best"]
    assert best["val"]["accuracy"] == max(row[0] for row in res["curves"]["val_accuracy"])


def test_hook_register_formats(monkeypatch, tmp_path):
    import numpy as np

    from symfw.core.formats import Reader

    class TextReader(Reader):
        def __init__(self, path):
            rows = np.loadtxt(path, ndmin=2)
            self.rows, self.meta = rows, {}
            n, width = rows.shape
            self.columns = {"p4": ((n, (width - 1) // 4, 4), rows.dtype), "label": ((n,), np.dtype(np.int64))}

        def read(self, start, stop, names=None):
            part = self.rows[start:stop]
            return {"p4": part[:, 1:].reshape(len(part), -1, 4), "label": part[:, 0].astype(np.int64)}

    class Text(I.FileFormat):
        """Text: one event per line, the label then E, px, py, pz of each particle."""

        name = "text"
        extensions = (".jets",)

        def sniff(self, path):
            return path.read_text().split(maxsplit=1)[0] in ("0", "1")

        def open(self, path):
            return TextReader(path)

    reg = registry_with("register_formats", Text, monkeypatch)
    p4 = random_events(6, dtype=torch.float64).numpy()
    lines = [" ".join(map(str, [i % 2, *row.reshape(-1)])) for i, row in enumerate(p4)]
    (tmp_path / "six.jets").write_text("\n".join(lines) + "\n")
    from symfw.core.data import resolve_data

    data = resolve_data(tmp_path / "six.jets", registry=reg)
    np.testing.assert_allclose(data.p4, p4, rtol=1e-6)
    assert data.meta["format"] == "text" and list(data.label) == [0, 1, 0, 1, 0, 1]
    streamed = resolve_data(tmp_path / "six.jets", registry=reg, stream=True, chunk_events=4)
    np.testing.assert_array_equal(streamed.read(np.array([5, 0])).p4, data.p4[[5, 0]])
