"""The file formats symfw reads: each file is written with the format's own tooling (pandas
``to_hdf``, ``numpy.savez`` in energyflow's layout, ``uproot`` writing a TTree with jagged
branches, h5py), read back exactly, trained on through the CLI, and refused when malformed."""

import json

import h5py
import numpy as np
import pytest

import symfw
from symfw.core.data import load_events, resolve_data, save_events
from symfw.core.errors import DataError, UsageError
from symfw.core.formats import choose_format
from symfw.core.registry import get_registry
from symfw.core.streaming import StreamedEvents
from symfw.core.training import with_training_overrides

N_JETS, N_PART = 240, 12
RTOL = 1e-5


def jets(n=N_JETS, n_part=N_PART, seed=0, mass=0.13957):
    """Random valid jets: (n, n_part, 4) four-vectors (E, px, py, pz) of particles of ``mass``
    (GeV), 1 … n_part of them per jet (the rest zero), leading-pT first; labels 0/1."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, n_part + 1, n)
    counts[:2] = n_part  # some jets fill every slot
    pt = np.sort(rng.exponential(20.0, (n, n_part)) + 1.0, axis=1)[:, ::-1]
    y = rng.normal(0, 1.0, (n, n_part))
    phi = rng.uniform(-np.pi, np.pi, (n, n_part))
    mt = np.sqrt(pt**2 + mass**2)
    p4 = np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], -1)
    mask = np.arange(n_part)[None] < counts[:, None]
    p4[~mask] = 0.0
    label = (np.arange(n) % 2).astype(np.int64)
    return p4, mask, label


def assert_same_p4(got, want):
    """Four-vectors equal to 1e-5 relative (of each vector's energy; padded entries exactly zero)."""
    scale = np.maximum(np.abs(want[..., :1]), 1e-12)
    np.testing.assert_array_less(np.abs(got - want) / scale, RTOL)
    assert (got[want[..., 0] == 0] == 0).all()


def one_line(result, code=2):
    assert result.exit_code == code, result.output
    err = result.stderr.strip()
    assert err and len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output
    return err


# --------------------------------------------------------------------------- writers, each with its own tooling


def write_top_tagging(path, p4, label, fmt="table"):
    import pandas as pd

    columns = {}
    for i in range(p4.shape[1]):
        for c, name in enumerate(("E", "PX", "PY", "PZ")):
            columns[f"{name}_{i}"] = p4[:, i, c].astype(np.float32)
    total = p4.sum(1)
    for c, name in enumerate(("truthE", "truthPX", "truthPY", "truthPZ")):
        columns[name] = total[:, c].astype(np.float32)
    columns["ttv"] = np.zeros(len(label), dtype=np.int64)
    columns["is_signal_new"] = label
    pd.DataFrame(columns).to_hdf(path, key="table", format=fmt)
    return path


PDG = {211: 0.13957, 22: 0.0}


def write_energyflow(path, p4, mask, label, compressed=True):
    pt = np.hypot(p4[..., 1], p4[..., 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(mask, 0.5 * np.log((p4[..., 0] + p4[..., 3]) / (p4[..., 0] - p4[..., 3])), 0.0)
    phi = np.where(mask, np.arctan2(p4[..., 2], p4[..., 1]), 0.0)
    pid = np.where(mask, 211.0, 0.0)
    x = np.stack([pt, y, phi, pid], -1)
    x[~mask] = 0.0
    (np.savez_compressed if compressed else np.savez)(path, X=x, y=label.astype(np.float64))
    return path


def write_jetclass(path, p4, mask, classes, which):
    """A JetClass file of the process ``which`` (one of ``classes``): label_<class> one-hot branches."""
    import awkward as ak
    import uproot

    counts = mask.sum(1)
    part = {name: ak.unflatten(p4[..., c][mask].astype(np.float32), counts)
            for c, name in enumerate(("energy", "px", "py", "pz"))}
    branches = {"part": ak.zip(part), "jet_pt": np.hypot(*p4.sum(1)[:, 1:3].T).astype(np.float32)}
    for c in classes:
        branches[f"label_{c}"] = np.full(len(p4), c == which, dtype=bool)
    types = {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in branches.items()}
    with uproot.recreate(path) as f:  # JetClass's branch names: part_px (counted by npart), label_QCD, …
        f.mktree("tree", types, counter_name=lambda counted: f"n{counted}", field_name=lambda outer, inner: f"{outer}_{inner}")
        f["tree"].extend(branches)
    return path


def write_pelican(path, p4, mask, label, target=None, **overrides):
    with h5py.File(path, "w") as f:
        f["Pmu"] = p4
        f["Nobj"] = mask.sum(1).astype(np.int16)
        f["is_signal"] = label.astype(np.int16)
        f["jet_pt"] = np.hypot(*p4.sum(1)[:, 1:3].T)
        if target is not None:
            f["truth_Pmu"] = target
        for k, v in overrides.items():
            del f[k]
            f[k] = v
    return path


# --------------------------------------------------------------------------- read back exactly


@pytest.mark.parametrize("fmt", ["table", "fixed"])
def test_top_tagging_table_reads_back_exactly(tmp_path, fmt):
    p4, mask, label = jets()
    path = write_top_tagging(tmp_path / "train.h5", p4, label, fmt)
    assert choose_format(path, get_registry()).name == "top-tagging"
    data = load_events(path)
    assert_same_p4(data.p4, p4)
    np.testing.assert_array_equal(data.mask, mask)
    np.testing.assert_array_equal(data.label, label)
    assert data.target is None and data.meta["format"] == "top-tagging"


@pytest.mark.parametrize("compressed", [True, False], ids=["savez_compressed", "savez"])
def test_energyflow_npz_reads_back_exactly_with_pid_masses(tmp_path, compressed):
    p4, mask, label = jets(mass=PDG[211])
    path = write_energyflow(tmp_path / "QG_jets.npz", p4, mask, label, compressed)
    data = load_events(path)
    assert data.meta["format"] == "energyflow"
    assert_same_p4(data.p4, p4)
    np.testing.assert_array_equal(data.mask, mask)
    np.testing.assert_array_equal(data.label, label)
    from symfw.plugins.format_energyflow import EnergyflowReader

    with EnergyflowReader(path) as reader:  # the reader's float64 four-vectors carry the pions' mass
        raw = reader.read(0, N_JETS)["p4"]
    m2 = raw[..., 0] ** 2 - (raw[..., 1:] ** 2).sum(-1)
    np.testing.assert_allclose(np.sqrt(m2[mask]), PDG[211], rtol=1e-6)


def test_jetclass_root_files_read_back_exactly_and_a_glob_makes_the_classes(tmp_path):
    classes = ["QCD", "Hbb", "Tbqq", "Wqq"]
    p4a, maska, _ = jets(100, 10, seed=1)
    p4b, maskb, _ = jets(80, 14, seed=2)  # another width: padded to the widest file
    write_jetclass(tmp_path / "ZJetsToNuNu_000.root", p4a, maska, classes, "QCD")
    write_jetclass(tmp_path / "TTBar_000.root", p4b, maskb, classes, "Tbqq")
    with pytest.raises(DataError, match=r"only one class present \(Tbqq\)"):
        load_events(tmp_path / "TTBar_000.root")
    data = load_events(str(tmp_path / "*_000.root"))
    # sorted file names: TTBar first, then ZJetsToNuNu
    want = np.concatenate([np.pad(p4b, [(0, 0), (0, 0), (0, 0)]), np.pad(p4a, [(0, 0), (0, 4), (0, 0)])])
    assert data.p4.shape == (180, 14, 4)
    assert_same_p4(data.p4, want)
    np.testing.assert_array_equal(data.mask, want[..., 0] > 0)
    # classes present, numbered in the tree's branch order: QCD = 0, Tbqq = 1
    np.testing.assert_array_equal(data.label, np.r_[np.ones(80), np.zeros(100)])
    assert data.meta["classes"] == "QCD,Tbqq" and data.meta["files"] == 2


def test_pelican_hdf5_reads_back_exactly_with_its_regression_target(tmp_path):
    p4, mask, label = jets()
    target = p4.sum(1) * 1.1
    data = load_events(write_pelican(tmp_path / "train.h5", p4, mask, label, target))
    assert data.meta["format"] == "pelican"
    assert_same_p4(data.p4, p4)
    np.testing.assert_array_equal(data.mask, mask)
    np.testing.assert_array_equal(data.label, label)
    np.testing.assert_allclose(data.target, target, rtol=1e-12)
    onehot = np.eye(3)[np.arange(N_JETS) % 3]
    data3 = load_events(write_pelican(tmp_path / "three.h5", p4, mask, label, is_signal=onehot))
    np.testing.assert_array_equal(data3.label, np.arange(N_JETS) % 3)


# --------------------------------------------------------------------------- malformed files


def _bad_files(tmp_path):
    p4, mask, label = jets(40, 6)
    import pandas as pd

    top = write_top_tagging(tmp_path / "top.h5", p4, label)
    frame = pd.read_hdf(top, "table").drop(columns=["is_signal_new"])
    frame.to_hdf(tmp_path / "top-nolabel.h5", key="table", format="table")
    write_energyflow(tmp_path / "ef.npz", p4, mask, label)
    x = np.load(tmp_path / "ef.npz")["X"]
    x[3, 0, 3] = 12345.0
    np.savez(tmp_path / "ef-pid.npz", X=x, y=label)
    np.savez(tmp_path / "ef-shape.npz", X=x[..., :3], y=label)
    classes = ["QCD", "Tbqq"]
    write_jetclass(tmp_path / "jc.root", p4, mask, classes, "QCD")
    import uproot

    with uproot.recreate(tmp_path / "jc-nolabel.root") as f:
        f["tree"] = {"part_px": p4[..., 1], "part_py": p4[..., 2], "part_pz": p4[..., 3], "part_energy": p4[..., 0]}
    bad_nobj = mask.sum(1)
    bad_nobj[5] = 99
    write_pelican(tmp_path / "pel-nobj.h5", p4, mask, label, Nobj=bad_nobj)
    write_pelican(tmp_path / "pel-target.h5", p4, mask, label, target=np.ones((40, 3)))
    return {
        "top-nolabel.h5": "Top Tagging HDF5: no column 'is_signal_new' (the labels)",
        "ef-pid.npz": "energyflow npz: X: unknown PDG id 12345 (first in jet 3); known: 11, 13, 22, 130, 211, "
                      "310, 321, 2112, 2212, 3112, 3122, 3222, 3312, 3322, 3334",
        "ef-shape.npz": "energyflow npz: X: expected shape (n_jets, n_particles, 4) holding (pT, y, φ, PDG id), "
                        "got (40, 6, 3)",
        "jc-nolabel.root": "JetClass ROOT: tree 'tree' has no label_* branches (the one-hot classes)",
        "pel-nobj.h5": "PELICAN HDF5: Nobj: jet 5 has 99 constituents; expected a whole number from 0 to 6",
        "pel-target.h5": "PELICAN HDF5: truth_Pmu: expected shape (40, 4) (one target four-momentum per jet), "
                         "got (40, 3)",
    }


def test_malformed_files_are_refused_with_one_line_and_exit_2(tmp_path, runner, cli):
    for name, message in _bad_files(tmp_path).items():
        path = tmp_path / name
        with pytest.raises(DataError) as err:
            load_events(path)
        assert str(err.value) == f"{path}: {message}"
        result = runner.invoke(cli, ["data", "inspect", str(path)])
        assert one_line(result) == f"Error: {path}: {message}"


def test_a_missing_optional_dependency_names_the_extra(tmp_path, monkeypatch, runner, cli):
    import importlib.util

    p4, mask, label = jets(20, 4)
    path = write_top_tagging(tmp_path / "top.h5", p4, label)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tables" else real(name, *a))
    result = runner.invoke(cli, ["data", "inspect", str(path)])
    assert one_line(result) == (f"Error: {path}: reading Top Tagging HDF5 files needs tables: "
                                "pip install 'symfw[formats]'")


def test_format_forces_a_reader_and_an_unknown_one_lists_the_known(tmp_path, runner, cli):
    p4, mask, label = jets(30, 5)
    path = write_pelican(tmp_path / "jets.dat", p4, mask, label)  # no extension symfw knows: found by content
    assert choose_format(path, get_registry()).name == "pelican"
    assert choose_format(path, get_registry(), "pelican").name == "pelican"
    with pytest.raises(UsageError, match="--format: unknown file format 'nope'; known: energyflow, jetclass"):
        choose_format(path, get_registry(), "nope")
    result = runner.invoke(cli, ["data", "inspect", str(path), "--format", "symfw"])
    assert one_line(result) == f"Error: {path}: missing array 'p4' (found: nothing)"
    (tmp_path / "notes.csv").write_text("1,2\n")
    result = runner.invoke(cli, ["data", "inspect", str(tmp_path / "notes.csv")])
    assert "unknown file type '.csv'; use .h5, .hdf5, .npz or .root (or name a format with --format: " \
           "energyflow, jetclass, pelican, symfw, top-tagging)" in one_line(result)


# --------------------------------------------------------------------------- training on each format


@pytest.fixture(scope="module")
def small_pfn(tmp_path_factory):
    path = tmp_path_factory.mktemp("specs") / "small-pfn.toml"
    spec = symfw.load_spec("pfn")
    spec = spec.model_copy(update={
        "name": "small-pfn", "general": spec.general.model_copy(update={
            "encoder": spec.general.encoder.model_copy(update={"options": {"phi": [16]}})}),
        "head": spec.head.model_copy(update={"hidden": [16]})})
    symfw.write_spec(with_training_overrides(spec, epochs=1, batch_size=32), path)
    return path


def _all_formats(tmp_path):
    p4, mask, label = jets()
    classes = ["QCD", "Tbqq"]
    write_jetclass(tmp_path / "a_qcd.root", p4[label == 0], mask[label == 0], classes, "QCD")
    write_jetclass(tmp_path / "b_top.root", p4[label == 1], mask[label == 1], classes, "Tbqq")
    return {
        "top-tagging": write_top_tagging(tmp_path / "top.h5", p4, label),
        "energyflow": write_energyflow(tmp_path / "qg.npz", p4, mask, label),
        "jetclass": str(tmp_path / "*.root"),
        "pelican": write_pelican(tmp_path / "pelican.h5", p4, mask, label, p4.sum(1)),
    }


@pytest.mark.parametrize("name", ["top-tagging", "energyflow", "jetclass", "pelican"])
def test_one_epoch_trains_on_each_format_through_the_cli(tmp_path, runner, cli, small_pfn, name):
    source = _all_formats(tmp_path)[name]
    result = runner.invoke(cli, ["train", str(small_pfn), "--data", str(source), "--out", str(tmp_path / "run"),
                                 "--json", "-q", "--threads", "1"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["data"]["n_events"] == N_JETS and res["data"]["format"] == name
    f = res["fractions"][0]
    assert f["epochs"] == 1 and 0 <= f["summary"]["final_test"]["auc"]["mean"] <= 1


def test_convert_writes_each_format_in_symfws_layout_round_trip(tmp_path, runner, cli):
    for name, source in _all_formats(tmp_path).items():
        original = load_events(source)
        for suffix in (".h5", ".npz"):
            out = tmp_path / f"converted-{name}{suffix}"
            result = runner.invoke(cli, ["data", "convert", str(source), str(out), "-q"])
            assert result.exit_code == 0, result.output
            back = load_events(out)
            assert choose_format(out, get_registry()).name == "symfw"
            for key in ("p4", "mask", "label", "weight"):
                np.testing.assert_array_equal(getattr(back, key), getattr(original, key), err_msg=(name, key))
            assert (back.target is None) == (original.target is None)
            if original.target is not None:
                np.testing.assert_array_equal(back.target, original.target)
            assert back.meta["format"] == name and back.meta.get("classes") == original.meta.get("classes")


def test_convert_refuses_bad_output_and_writes_nothing_for_a_bad_input(tmp_path, runner, cli):
    p4, mask, label = jets(30, 5)
    source = write_pelican(tmp_path / "p.h5", p4, mask, label)
    assert "unknown file type '.csv'" in one_line(runner.invoke(cli, ["data", "convert", str(source), str(tmp_path / "o.csv")]))
    assert "is the input file" in one_line(runner.invoke(cli, ["data", "convert", str(source), str(source)]))
    bad = _bad_files(tmp_path)
    out = tmp_path / "out.h5"
    err = one_line(runner.invoke(cli, ["data", "convert", str(tmp_path / "pel-nobj.h5"), str(out)]))
    assert bad["pel-nobj.h5"] in err and not out.exists()
    assert not list(tmp_path.glob(".out.h5.*"))


def test_resolve_data_reads_every_format_and_a_glob_that_matches_nothing_is_refused(tmp_path):
    for name, source in _all_formats(tmp_path).items():
        assert resolve_data(source).meta["format"] == name
        streamed = resolve_data(source, stream=True, chunk_events=50)
        assert isinstance(streamed, StreamedEvents) and streamed.format == name
        assert streamed.describe() == resolve_data(source).describe()
    with pytest.raises(DataError, match="no files match"):
        resolve_data(str(tmp_path / "nothing-*.root"))
