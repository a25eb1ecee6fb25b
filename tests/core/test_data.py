"""Event files: every bad file is refused with one clear line (API and CLI, exit code 2); splits."""

import json

import h5py
import numpy as np
import pytest
import torch

from symfw.core.data import EventData, load_events, make_split, resolve_data, save_events, validate
from symfw.core.errors import DataError

N = 10


def good(n=N, n_particles=2, seed=0):
    """Valid arrays: massless particles, alternating labels."""
    rng = np.random.default_rng(seed)
    p3 = rng.normal(0, 30, (n, n_particles, 3))
    p4 = np.concatenate([np.linalg.norm(p3, axis=-1, keepdims=True), p3], -1)
    return {"p4": p4, "label": np.arange(n) % 2}


def with_(**changes):
    arrays = good()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value(arrays) if callable(value) else value
    return arrays


def set_at(key, index, value, dtype=None):
    def change(arrays):
        out = np.array(arrays[key], dtype=dtype)
        out[index] = value
        return out

    return change


# (case, arrays, message after "<path>: ")
BAD_ARRAYS = [
    ("missing p4", with_(p4=None), "missing array 'p4' (found: label)"),
    ("missing label", with_(label=None), "missing array 'label' (found: p4)"),
    ("p4 not 3-d", with_(p4=np.ones((N, 8))), "p4: expected shape (n_events, n_particles, 4), got (10, 8)"),
    ("p4 not 4 components", with_(p4=np.ones((N, 2, 3))), "p4: expected shape (n_events, n_particles, 4), got (10, 2, 3)"),
    ("p4 of strings", with_(p4=np.full((N, 2, 4), "a")), "p4: expected a numeric array, got dtype <U1"),
    ("p4 NaN", with_(p4=set_at("p4", (3, 1, 2), np.nan)), "p4: contains NaN or inf (first in event 3)"),
    ("p4 inf", with_(p4=set_at("p4", (5, 0, 0), np.inf)), "p4: contains NaN or inf (first in event 5)"),
    ("negative energy", with_(p4=set_at("p4", (2, 1, 0), -1.0)), "p4: negative energy (first in event 2)"),
    ("label negative", with_(label=set_at("label", 4, -1)), "label: values must be integers 0, 1, …, C−1 (class indices), found [-1]"),
    ("label fractional", with_(label=set_at("label", 4, 0.5, float)), "label: values must be integers 0, 1, …, C−1 (class indices), found [0.5]"),
    ("label skips a class", with_(label=np.arange(N) % 2 * 2), "label: classes must be 0 … C−1 without gaps; class 1 has no events (found 0, 2)"),
    ("label skips class 2", with_(label=np.arange(N) % 3 + (np.arange(N) % 3 == 2)), "label: classes must be 0 … C−1 without gaps; class 2 has no events (found 0, 1, 3)"),
    ("label NaN", with_(label=set_at("label", 4, np.nan, float)), "label: contains NaN or inf (first in event 4)"),
    ("label of strings", with_(label=np.array(["s", "b"] * 5)), "label: expected integer class indices 0, 1, …, got dtype <U1"),
    ("label wrong length", with_(label=np.arange(N - 1) % 2), "label: expected shape (10,), got (9,)"),
    ("single class", with_(label=np.ones(N, int)), "label: only one class present (1); need signal and background"),
    ("mask shape", with_(mask=np.ones((N, 3), bool)), "mask: expected shape (10, 2) to match p4, got (10, 3)"),
    ("mask not boolean", with_(mask=np.full((N, 2), 2)), "mask: expected booleans, got dtype int64"),
    ("mask empty event", with_(mask=np.arange(N)[:, None].repeat(2, 1) != 4), "mask: event 4 has no particles"),
    ("weight shape", with_(weight=np.ones(N + 1)), "weight: expected shape (10,), got (11,)"),
    ("weight NaN", with_(weight=np.where(np.arange(N) == 1, np.nan, 1.0)), "weight: contains NaN or inf (first in event 1)"),
    ("p4_true NaN", with_(p4_true=lambda a: np.where(np.arange(N)[:, None, None] == 6, np.nan, a["p4"])),
     "p4_true: contains NaN or inf (first in event 6)"),
    ("weight negative", with_(weight=np.where(np.arange(N) == 1, -1.0, 1.0)), "weight: negative weights are not supported"),
    ("p4_true shape", with_(p4_true=np.ones((N, 3, 4))), "p4_true: expected shape (10, 2, 4) to match p4, got (10, 3, 4)"),
    ("target wrong length", with_(target=np.ones((N - 1, 4))), "target: expected shape (10, K) or (10,), got (9, 4)"),
    ("target 1-d wrong length", with_(target=np.ones(N + 1)), "target: expected shape (10, K) or (10,), got (11,)"),
    ("target 3-d", with_(target=np.ones((N, 2, 2))), "target: expected shape (10, K) or (10,), got (10, 2, 2)"),
    ("target K = 0", with_(target=np.ones((N, 0))), "target: expected at least one value per event (K >= 1), got shape (10, 0)"),
    ("target of strings", with_(target=np.full((N, 4), "a")), "target: expected a numeric array, got dtype <U1"),
    ("target of booleans", with_(target=np.ones((N, 4), bool)), "target: expected a numeric array, got dtype bool"),
    ("target NaN", with_(target=np.where(np.arange(N)[:, None] == 7, np.nan, np.ones((N, 4)))),
     "target: contains NaN or inf (first in event 7)"),
    ("target inf, 1-d", with_(target=np.where(np.arange(N) >= 2, -np.inf, 1.0)), "target: contains NaN or inf (first in event 2)"),
    ("no events", {"p4": np.zeros((0, 2, 4)), "label": np.zeros(0, int)}, "no events (p4 has 0 rows)"),
    ("no arrays", {}, "missing array 'p4' (found: nothing)"),
]


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def put(path, content):
    """Write bytes (or make a folder when content is None) and return the path."""
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return path


def write_h5(path, arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v.astype("S") if v.dtype.kind == "U" else v)
    return path


# (case, writer(tmp_path) -> path, message after "<path>: ")
BAD_FILES = [
    *[(case, lambda d, a=arrays: write_npz(d / "bad.npz", a), msg) for case, arrays, msg in BAD_ARRAYS],
    *[
        (f"{case} (h5)", lambda d, a=arrays: write_h5(d / "bad.h5", a), msg)
        for case, arrays, msg in BAD_ARRAYS
        if "strings" not in case
    ],
    ("empty file", lambda d: put(d / "empty.npz", b""), "empty file"),
    ("empty h5 file", lambda d: put(d / "empty.h5", b""), "empty file"),
    ("corrupt npz", lambda d: put(d / "junk.npz", b"not a zip" * 10), "cannot read as npz: not a zip archive"),
    ("corrupt h5", lambda d: put(d / "junk.h5", b"not hdf5" * 10), "cannot read as h5: not an HDF5 file"),
    ("unknown suffix", lambda d: put(d / "events.csv", b"1,2"), "unknown file type '.csv'; use .h5, .hdf5, .npz or .root (or name a format with --format: "),
    ("missing file", lambda d: d / "absent.npz", "no such file"),
    ("directory", lambda d: put(d / "dir.npz", None), "is a directory, expected a data file"),
    ("meta not JSON", lambda d: write_npz(d / "meta.npz", {**good(), "meta": np.array("{oops")}), "meta: not valid JSON"),
]


@pytest.mark.parametrize("case, write, message", BAD_FILES, ids=[c for c, _, _ in BAD_FILES])
def test_bad_file_is_a_data_error_naming_the_file(tmp_path, case, write, message):
    path = write(tmp_path)
    with pytest.raises(DataError) as err:
        load_events(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


@pytest.mark.parametrize("case, write, message", BAD_FILES, ids=[c for c, _, _ in BAD_FILES])
def test_bad_file_through_the_cli_is_one_line_and_exit_2(runner, cli, tmp_path, case, write, message):
    path = write(tmp_path)
    result = runner.invoke(cli, ["data", "inspect", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {path}: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output and result.stdout == ""


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".hdf5"])
def test_round_trip_keeps_arrays_and_meta(tmp_path, suffix):
    arrays = good(50)
    data = EventData(
        p4=arrays["p4"], label=arrays["label"], mask=np.ones((50, 2), bool), weight=np.linspace(0.5, 2, 50),
        p4_true=arrays["p4"] * 0.9, meta={"source": "test", "seed": 3, "resolution": 0.1, "skip": [1, 2]},
    )
    path = tmp_path / f"events{suffix}"
    save_events(data, path)
    back = load_events(path)
    for key in ("label", "mask", "weight"):
        np.testing.assert_array_equal(getattr(back, key), getattr(data, key))
    for key in ("p4", "p4_true"):  # four-vectors are held as float32
        assert getattr(back, key).dtype == np.float32
        np.testing.assert_array_equal(getattr(back, key), getattr(data, key).astype(np.float32))
    assert back.meta["source"] == "test" and back.meta["seed"] == 3 and back.meta["resolution"] == 0.1
    assert "skip" not in back.meta and back.meta["file"] == str(path)
    save_events(back, tmp_path / f"again{suffix}")  # float32 in, float32 out: the same content
    assert load_events(tmp_path / f"again{suffix}").describe()["content_hash"] == back.describe()["content_hash"]


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_target_round_trips_as_float64_and_a_1d_target_is_one_column(tmp_path, suffix):
    arrays = good(50)
    target = np.random.default_rng(1).normal(0, 50, (50, 4))
    data = validate({**arrays, "target": target.astype(np.float32)})
    assert data.target.dtype == np.float64 and data.target.shape == (50, 4) and data.target_dim == 4
    np.testing.assert_array_equal(data.target, target.astype(np.float32))
    save_events(data, tmp_path / f"t{suffix}")
    back = load_events(tmp_path / f"t{suffix}")
    np.testing.assert_array_equal(back.target, data.target)
    assert back.describe()["content_hash"] == data.describe()["content_hash"]
    one = load_events(write_npz(tmp_path / "one.npz", {**arrays, "target": np.arange(50)}))
    assert one.target.shape == (50, 1) and one.target.dtype == np.float64 and one.target_dim == 1
    np.testing.assert_array_equal(one.target[:, 0], np.arange(50.0))


def test_target_follows_subset_tensors_describe_and_hash():
    arrays = good(20)
    target = np.random.default_rng(2).normal(0, 1, (20, 4))
    data = validate({**arrays, "target": target})
    part = data.subset(np.array([5, 2, 9]))
    np.testing.assert_array_equal(part.target, target[[5, 2, 9]])
    t = part.tensors(dtype=torch.float64)
    assert t["target"].dtype == torch.float64 and t["target"].shape == (3, 4)
    np.testing.assert_array_equal(t["target"].numpy(), target[[5, 2, 9]])
    assert part.tensors()["target"].dtype == torch.float32
    plain = validate(arrays)
    assert "target" not in plain.tensors() and plain.target is None and plain.target_dim is None
    assert data.describe()["target_dim"] == 4 and "target_dim" not in plain.describe()
    hashes = {d.describe()["content_hash"] for d in (plain, data, validate({**arrays, "target": target + 1e-9}))}
    assert len(hashes) == 3  # the target counts when present, to the last bit


def test_padded_entries_may_hold_anything_and_become_zero(tmp_path):
    arrays = good()
    arrays["p4"] = np.concatenate([arrays["p4"], np.full((N, 1, 4), np.nan)], 1)
    arrays["mask"] = np.tile([True, True, False], (N, 1))
    arrays["label"] = arrays["label"].astype(bool)
    data = load_events(write_npz(tmp_path / "padded.npz", arrays))
    assert data.n_particles == 3 and (data.p4[:, 2] == 0).all() and data.label.dtype == np.int64
    assert (data.weight == 1).all()


def test_resolve_data_reads_files_and_keeps_the_first_events(tmp_path):
    path = write_npz(tmp_path / "events.npz", good(40))
    data = resolve_data(path, n_events=12)
    assert len(data) == 12
    np.testing.assert_array_equal(data.p4, good(40)["p4"][:12].astype(np.float32))
    with pytest.raises(DataError, match="neither a data file nor a dataset; datasets: .*zmumu"):
        resolve_data("zmumuu")


# --------------------------------------------------------------------------- splits


@pytest.fixture
def labels():
    return (np.random.default_rng(0).random(1003) < 0.3).astype(int)


def test_split_is_stratified_disjoint_and_complete(labels):
    split = make_split(labels, seed=1)
    parts = (split.train, split.val, split.test)
    everything = np.concatenate(parts)
    assert len(everything) == len(labels) == len(np.unique(everything))
    for part, share in zip(parts, (0.6, 0.2, 0.2)):
        for cls in (0, 1):
            expected = share * (labels == cls).sum()
            assert abs((labels[part] == cls).sum() - expected) <= 1
    assert 0.2 < labels[split.train[:100]].mean() < 0.4  # classes interleaved, not sorted


def test_split_is_seeded(labels):
    a, b, c = make_split(labels, 1), make_split(labels, 1), make_split(labels, 2)
    np.testing.assert_array_equal(a.train, b.train)
    assert a.hash == b.hash != c.hash
    assert not np.array_equal(a.train, c.train)


def test_fraction_takes_the_first_part_of_train_and_keeps_val_and_test(labels):
    full = make_split(labels, seed=1)
    part = full.with_fraction(0.25)
    np.testing.assert_array_equal(part.train, full.train[: round(0.25 * len(full.train))])
    np.testing.assert_array_equal(part.val, full.val)
    np.testing.assert_array_equal(part.test, full.test)
    assert part.hash != full.hash
    info = part.describe()
    assert info["seed"] == 1 and info["train_fraction"] == 0.25 and info["indices_hash"] == part.hash
    assert info["n_train"] == len(part.train) and json.dumps(info)
    with pytest.raises(DataError, match="fraction must be in"):
        full.with_fraction(0)


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_bad_split_fractions(labels, fractions):
    with pytest.raises(DataError, match="split fractions"):
        make_split(labels, 0, fractions)


def test_split_too_small_is_refused():
    with pytest.raises(DataError, match="split is empty"):
        make_split(np.array([0, 1]), 0)


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os
    import stat

    from symfw.core.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_class_with_zero_total_weight_is_refused(tmp_path):
    arrays = good()
    arrays["weight"] = np.where(arrays["label"] == 1, 0.0, 1.0)
    with pytest.raises(DataError, match="weight: the signal events have zero total weight"):
        load_events(write_npz(tmp_path / "w.npz", arrays))


def test_multiclass_labels_load_and_describe_their_classes(tmp_path):
    label = np.arange(30) % 3
    arrays = {**good(30), "label": label.astype(float)}  # integer-valued floats are class indices too
    data = load_events(write_npz(tmp_path / "three.npz", arrays))
    assert data.label.dtype == np.int64 and data.n_classes == 3
    np.testing.assert_array_equal(data.label, label)
    info = data.describe()
    assert (info["n_classes"], info["n_signal"], info["n_background"]) == (3, 10, 10)
    assert validate(good()).describe()["n_classes"] == 2


def test_a_multiclass_class_with_zero_total_weight_is_refused(tmp_path):
    arrays = {**good(30), "label": np.arange(30) % 3}
    arrays["weight"] = np.where(arrays["label"] == 2, 0.0, 1.0)
    with pytest.raises(DataError, match="weight: the class 2 events have zero total weight"):
        load_events(write_npz(tmp_path / "w.npz", arrays))


def test_multiclass_split_is_stratified_per_class():
    rng = np.random.default_rng(3)
    labels = rng.choice(4, size=2001, p=[0.4, 0.3, 0.2, 0.1])
    split = make_split(labels, seed=2)
    parts = (split.train, split.val, split.test)
    everything = np.concatenate(parts)
    assert len(everything) == len(labels) == len(np.unique(everything))
    for part, share in zip(parts, (0.6, 0.2, 0.2)):
        for cls in range(4):
            assert abs((labels[part] == cls).sum() - share * (labels == cls).sum()) <= 1
    assert make_split(labels, seed=2).hash == split.hash != make_split(labels, seed=3).hash


def test_each_split_part_needs_every_class():
    labels = np.array([0] * 30 + [1] * 30 + [2] * 2)  # two events of class 2: one in train, none in validation
    with pytest.raises(DataError, match="the validation split has no events of class 2; use more events"):
        make_split(labels, 0)


def test_each_split_part_needs_both_classes():
    labels = np.array([0] * 20 + [1] * 2)  # two signal events cannot fill three parts
    with pytest.raises(DataError, match="split holds only one class"):
        make_split(labels, 0)


def test_first_events_of_a_sorted_file_with_one_class_are_refused(tmp_path):
    arrays = good(40)
    order = np.argsort(arrays["label"], kind="stable")
    sorted_arrays = {k: v[order] for k, v in arrays.items()}
    with pytest.raises(DataError, match="the first 5 events hold only one class"):
        resolve_data(write_npz(tmp_path / "sorted.npz", sorted_arrays), n_events=5)


# pinned before multiclass labels and regression targets were added: binary splits and the
# content hash of a file without ``target`` must not change
@pytest.mark.parametrize(
    "seed, fractions, pinned",
    [
        (0, (0.6, 0.2, 0.2), "1a8d316d6dbbc2cf"),
        (1, (0.6, 0.2, 0.2), "ef71882e8d4db884"),
        (5, (0.6, 0.2, 0.2), "679520d0929c0697"),
        (1, (0.5, 0.3, 0.2), "0581379935cd282e"),
    ],
)
def test_binary_split_indices_are_pinned(labels, seed, fractions, pinned):
    assert make_split(labels, seed, fractions).hash == pinned


def test_content_hash_of_a_file_without_target_is_pinned(tmp_path):
    path = write_npz(tmp_path / "events.npz", good(50))
    # repinned when events became float32 in memory (issue 13); before: f6caade8ef4d803d of float64
    assert load_events(path).describe()["content_hash"] == "a933bd900a26c03b"
