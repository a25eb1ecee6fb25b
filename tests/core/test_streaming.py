"""Streamed events: a file read in chunks trains, evaluates, inspects and converts exactly as the
same file loaded into memory, with at most ``chunk_events`` events read at once."""

import json
import pickle

import numpy as np
import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core import streaming
from symfw.core.checkpoint import Checkpoint
from symfw.core.data import EventData, load_events, resolve_data, save_events
from symfw.core.errors import DataError, UsageError
from symfw.core.streaming import StreamedEvents, open_events
from symfw.core.training import RunSettings, Tensors, batch_order, batches, make_task, run_training, with_training_overrides


@pytest.fixture(scope="module")
def toy():
    return toy_events(900, weighted=True)


@pytest.fixture(scope="module")
def files(toy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    out = {}
    for suffix in (".h5", ".npz"):
        save_events(toy, folder / f"toy{suffix}")
        out[suffix] = folder / f"toy{suffix}"
    return out


@pytest.fixture(scope="module")
def loaded(files):
    """The toy events as symfw holds them (float32 four-vectors), loaded whole."""
    return load_events(files[".h5"])


def small(preset, epochs=2, batch_size=64, **task):
    spec = symfw.load_spec(preset)
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [16, 8]})})
    if task:
        spec = symfw.resolve_spec({**spec.model_dump(), "task": task})
    return with_training_overrides(spec, epochs=epochs, batch_size=batch_size)


def without_times(results):
    for f in results["fractions"]:
        f.pop("train_time_s")
    return results


def params(run):
    ckpt = Checkpoint.load(run / "fraction-1" / "checkpoint.pt")
    return {**ckpt.params, **{f"best.{k}": v for k, v in ckpt.best_params.items()}}


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
@pytest.mark.parametrize("preset, seeds, vectorize", [("hybrid", 2, "yes"), ("pfn-seal-group", 1, "no")])
def test_streamed_and_loaded_files_give_the_same_model_and_metrics(files, tmp_path, suffix, preset, seeds, vectorize):
    loaded = resolve_data(files[suffix], stream=False)
    streamed = resolve_data(files[suffix], stream=True, chunk_events=150)  # several windows per epoch
    assert isinstance(loaded, EventData) and isinstance(streamed, StreamedEvents)
    assert streamed.describe() == loaded.describe()
    settings = RunSettings(data=str(files[suffix]), seeds=seeds)
    spec = small(preset)
    a = run_training(spec, loaded, settings, tmp_path / "loaded", vectorize=vectorize)
    b = run_training(spec, streamed, settings, tmp_path / "streamed", vectorize=vectorize)
    assert without_times(a) == without_times(b)
    pa, pb = params(tmp_path / "loaded"), params(tmp_path / "streamed")
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_streamed_regression_and_extrapolation_match_the_loaded_file(tmp_path):
    data = resolve_data("zmumu", n_events=1500, seed=3)
    path = tmp_path / "z.h5"
    save_events(data, path)
    spec = small("pfn", epochs=1, name="regression")
    settings = RunSettings(data=str(path), train_pt_max=45.0)
    a = run_training(spec, resolve_data(path), settings)
    b = run_training(spec, resolve_data(path, stream=True, chunk_events=200), settings)
    assert a["fractions"][0]["report"]["sum_of_inputs"]  # the regression report reads the test events
    assert without_times(a) == without_times(b)


def test_training_reads_at_most_chunk_events_at_once(files, loaded, monkeypatch):
    streamed = resolve_data(files[".h5"], stream=True, chunk_events=100)
    reader = streamed.reader()
    sizes = []
    original = type(reader).take

    def take(self, rows, names=None):
        sizes.append(len(rows))
        return original(self, rows, names)

    monkeypatch.setattr(type(reader), "take", take)
    task = make_task(small("pfn"))
    t_stream = Tensors.from_data(streamed, task, "cpu")
    t_mem = Tensors.from_data(loaded, task, "cpu")
    train = torch.arange(600)
    order = batch_order(train, [1, 2], 0, "cpu")
    steps = batches(600, 32)
    got = list(t_stream.batches(order, steps))
    want = list(t_mem.batches(order, steps))
    assert len(got) == len(want) == len(steps)
    for g, w in zip(got, want):
        for field in ("p4", "mask", "label", "weight"):
            assert torch.equal(getattr(g, field), getattr(w, field))
    assert max(sizes) <= 100 and sum(sizes) >= 600  # windows of three batches of two members
    sizes.clear()
    chunks = list(t_stream.chunks(np.arange(900)[::-1]))
    assert max(sizes) <= 100 or len(chunks) == 1
    assert torch.equal(torch.cat([c[0] for c in chunks]), torch.as_tensor(loaded.p4[::-1].copy()))


def test_streamed_events_read_any_order_subset_and_pickle(files, loaded):
    streamed = open_events(files[".npz"], stream=True, chunk_events=64)
    index = np.array([5, 3, 3, 899, 0, 42])
    part = streamed.read(index)
    np.testing.assert_array_equal(part.p4, loaded.p4[index])
    np.testing.assert_array_equal(part.mask, loaded.mask[index])
    np.testing.assert_array_equal(part.label, loaded.label[index])
    view = streamed.subset(np.arange(100, 200))
    assert len(view) == 100
    assert view.describe()["content_hash"] == loaded.subset(np.arange(100, 200)).describe()["content_hash"]
    np.testing.assert_array_equal(view.load().p4, loaded.p4[100:200])
    again = pickle.loads(pickle.dumps(view))
    assert again._open is None
    np.testing.assert_array_equal(again.read(np.array([0, 99])).p4, loaded.p4[[100, 199]])
    assert sum(len(c) for c in streamed.chunks()) == 900 and max(len(c) for c in streamed.chunks()) == 64


def test_a_large_file_streams_by_itself_and_a_small_part_of_it_loads(files, monkeypatch):
    monkeypatch.setattr("symfw.core.limits.available_memory", lambda device="cpu": 100_000)
    data = resolve_data(files[".h5"])
    assert isinstance(data, StreamedEvents) and data.nbytes > streaming.STREAM_FRACTION * 100_000
    part = resolve_data(files[".h5"], n_events=10)
    assert isinstance(part, EventData) and len(part) == 10
    assert isinstance(resolve_data(files[".h5"], n_events=10, stream=True), StreamedEvents)
    assert isinstance(resolve_data(files[".h5"], stream=False), EventData)


def test_stream_options_are_checked(files):
    with pytest.raises(UsageError, match="--chunk-events must be >= 1, got 0"):
        resolve_data(files[".h5"], stream=True, chunk_events=0)
    with pytest.raises(UsageError, match="--stream: is for data files; dataset 'zmumu' is generated in memory"):
        resolve_data("zmumu", stream=True)
    with pytest.raises(UsageError, match="--format: is for data files"):
        resolve_data("zmumu", format="symfw")


def test_a_streamed_file_is_checked_whole_as_loading_checks_it(tmp_path, toy):
    p4 = toy.p4.copy()
    p4[700, 0, 0] = np.nan
    bad = EventData(p4=p4, label=toy.label, mask=toy.mask, weight=toy.weight)
    path = tmp_path / "bad.h5"
    import h5py

    save_events(toy, path)
    with h5py.File(path, "r+") as f:
        f["p4"][700] = bad.p4[700]
    for stream in (False, True):
        with pytest.raises(DataError, match=r"p4: contains NaN or inf \(first in event 700\)"):
            resolve_data(path, stream=stream, chunk_events=100)
    with pytest.raises(DataError, match=r"p4: contains NaN or inf \(first in event 700\)"):
        from symfw.core.data import scan
        from symfw.core.formats import open_reader

        reader, _ = open_reader(path)
        scan(reader, str(path), keep=False, block_bytes=4096)  # many small blocks: the event is still named


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "s.toml"
    symfw.write_spec(small("pfn", epochs=1).model_copy(update={"name": "s"}), path)
    return path


def test_train_through_the_cli_streamed_equals_loaded(runner, cli, files, tmp_path, spec_file):
    outs = []
    for flags in ([], ["--stream", "--chunk-events", "200"]):
        result = runner.invoke(cli, ["train", str(spec_file), "--data", str(files[".h5"]), "--out",
                                     str(tmp_path / f"run{len(outs)}"), "--json", "-q", *flags])
        assert result.exit_code == 0, result.output
        outs.append(without_times(json.loads(result.stdout)))
    assert outs[0]["fractions"] == outs[1]["fractions"] and outs[0]["data"] == outs[1]["data"]


def test_inspect_a_streamed_file_gives_the_same_summary(runner, cli, files, tmp_path):
    out = []
    for flags in ([], ["--stream", "--chunk-events", "128"]):
        result = runner.invoke(cli, ["data", "inspect", str(files[".npz"]), "--json", "--plots",
                                     str(tmp_path / f"plots{len(out)}"), *flags])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        summary.pop("plots")
        out.append(summary)
    assert out[0] == out[1]
    assert sorted(p.name for p in (tmp_path / "plots1").iterdir()) == ["fig1_pt_reweighting.png", "fig2_mass_slices.png"]


def test_convert_streamed_writes_the_same_file_as_loaded(runner, cli, files, tmp_path, loaded):
    for suffix in (".h5", ".npz"):
        a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        for out, flags in ((a, ["--no-stream"]), (b, ["--stream", "--chunk-events", "77"])):
            result = runner.invoke(cli, ["data", "convert", str(files[".npz"]), str(out), "-q", *flags])
            assert result.exit_code == 0, result.output
        la, lb = load_events(a), load_events(b)
        for key in ("p4", "mask", "label", "weight", "p4_true", "target"):
            va, vb = getattr(la, key), getattr(lb, key)
            assert (va is None) == (vb is None) and (va is None or np.array_equal(va, vb)), key
        assert la.describe()["content_hash"] == lb.describe()["content_hash"]
        np.testing.assert_array_equal(la.p4, loaded.p4)


@pytest.mark.parametrize("args, message", [
    (["data", "inspect", "X", "--chunk-events", "0"], "Error: --chunk-events must be >= 1, got 0"),
    (["train", "pfn", "--data", "zmumu", "--stream"], "Error: --stream: is for data files; dataset 'zmumu'"),
    (["data", "inspect", "X", "--format", "nope"], "Error: --format: unknown file format 'nope'; known:"),
    (["data", "convert", "X", "out.txt"], "Error: out.txt: unknown file type '.txt'; use .npz, .h5 or .hdf5"),
])
def test_bad_stream_and_format_options_are_one_line(runner, cli, files, args, message):
    args = [str(files[".h5"]) if a == "X" else a for a in args]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(message), err


@pytest.mark.parametrize("layout", ["h5 gzip chunks", "npz compressed"])
def test_compressed_and_chunked_arrays_serve_the_same_batches(tmp_path, loaded, layout):
    import h5py

    if layout.startswith("h5"):
        path = tmp_path / "c.h5"
        with h5py.File(path, "w") as f:
            for key in ("p4", "label", "mask", "weight"):
                f.create_dataset(key, data=getattr(loaded, key), compression="gzip", chunks=True)
    else:
        path = tmp_path / "c.npz"
        np.savez_compressed(path, p4=loaded.p4, label=loaded.label, mask=loaded.mask, weight=loaded.weight)
    streamed = resolve_data(path, stream=True, chunk_events=90)
    task = make_task(small("pfn"))
    a, b = Tensors.from_data(streamed, task, "cpu"), Tensors.from_data(loaded, task, "cpu")
    order = batch_order(torch.arange(900), [7, 8], 1, "cpu")
    steps = batches(900, 40)
    for x, y in zip(a.batches(order, steps), b.batches(order, steps), strict=True):
        assert torch.equal(x.p4, y.p4) and torch.equal(x.mask, y.mask) and torch.equal(x.weight, y.weight)
    index = np.random.default_rng(0).permutation(900)
    for (p, m), (q, n) in zip(a.chunks(index), b.chunks(index), strict=True):
        assert torch.equal(p, q) and torch.equal(m, n)
