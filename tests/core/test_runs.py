"""Run directories: files, atomic writes, resume after a kill equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core.data import load_events, save_events
from symfw.core.errors import UsageError
from symfw.core.runs import RunDir
from symfw.core.training import RunSettings, run_training, with_training_overrides


def small(preset="hybrid", epochs=4, schedule="constant"):
    spec = symfw.load_spec(preset)
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [32, 16]})})
    return with_training_overrides(spec, epochs=epochs, batch_size=64, schedule=schedule)


def without_times(results):
    """Results with wall-clock times removed (they differ between runs)."""
    out = json.loads(json.dumps(results))
    for f in out["fractions"]:
        f.pop("train_time_s")
    return out


class Killed(Exception):
    pass


def kill_after(epoch):
    def on_epoch(record):
        if record["epoch"] == epoch:
            raise Killed

    return on_epoch


def test_killed_between_the_last_checkpoint_and_the_metrics_file_loses_nothing(tmp_path):
    data = toy_events(300)
    spec, settings = small(epochs=2), RunSettings(data="toy", seeds=1)
    full = run_training(spec, data, settings, tmp_path / "run")
    frac_dir = tmp_path / "run" / "fraction-1"
    lines = (frac_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # the state after a kill right after the last epoch's checkpoint: metrics one epoch short, no results
    (frac_dir / "metrics.jsonl").write_text(lines[0] + "\n")
    (frac_dir / "results.json").unlink()
    resumed = run_training(spec, data, settings, tmp_path / "run", resume=True)
    assert (frac_dir / "metrics.jsonl").read_text().splitlines() == lines
    assert without_times(resumed) == without_times(full)


@pytest.mark.parametrize("k", [1, 3])
def test_killed_after_epoch_k_and_resumed_equals_uninterrupted(tmp_path, k):
    data = toy_events(400, weighted=True)
    spec, settings = small(), RunSettings(data="toy", seeds=2, fractions=(0.5, 1.0))
    full = run_training(spec, data, settings, tmp_path / "full")
    with pytest.raises(Killed):
        run_training(spec, data, settings, tmp_path / "resumed", on_epoch=kill_after(k))
    frac_dir = tmp_path / "resumed" / "fraction-0.5"
    assert len((frac_dir / "metrics.jsonl").read_text().splitlines()) == 2 * k  # k epochs × 2 members
    assert not (frac_dir / "results.json").exists()
    resumed = run_training(spec, data, settings, tmp_path / "resumed", resume=True)
    assert without_times(resumed) == without_times(full)
    for name in ("fraction-0.5/metrics.jsonl", "fraction-1/metrics.jsonl"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "full" / name).read_text()


def test_a_cosine_schedule_resumes_exactly_and_changes_the_training(tmp_path):
    data = toy_events(300)
    settings = RunSettings(data="toy", seeds=1)
    cosine = small("pfn", epochs=3, schedule="cosine")
    full = run_training(cosine, data, settings, tmp_path / "full")
    with pytest.raises(Killed):
        run_training(cosine, data, settings, tmp_path / "resumed", on_epoch=kill_after(2))
    assert without_times(run_training(cosine, data, settings, tmp_path / "resumed", resume=True)) == without_times(full)
    constant = run_training(small("pfn", epochs=3), data, settings, tmp_path / "constant")
    assert without_times(constant)["fractions"] != without_times(full)["fractions"]


def test_run_directory_holds_the_record_and_no_temp_files(tmp_path):
    data = toy_events(300)
    spec = small("pfn", epochs=2)
    run_training(spec, data, RunSettings(data="toy", seeds=2), tmp_path / "r")
    root = tmp_path / "r"
    assert symfw.load_spec(root / "spec.toml") == spec
    record = json.loads((root / "data.json").read_text())
    assert record["data"]["content_hash"] and len(record["split"]["indices_hash"]) == 16
    assert record["split"]["seed"] == 0
    lines = [json.loads(x) for x in (root / "fraction-1" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x["member"]) for x in lines] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert {"loss", "val", "seed"} <= set(lines[0]) and "auc" in lines[0]["val"]
    results = json.loads((root / "results.json").read_text())
    assert results["fractions"][0]["summary"]["final_test"]["auc"]["n"] == 2
    assert (root / "fraction-1" / "checkpoint.pt").is_file()
    assert not [p for p in root.rglob("*.tmp")]


def test_existing_run_needs_resume_and_matching_settings(tmp_path):
    data = toy_events(300)
    spec = small("pfn", epochs=1)
    run_training(spec, data, RunSettings(data="toy"), tmp_path / "r")
    with pytest.raises(UsageError, match="already holds a run; pass --resume"):
        run_training(spec, data, RunSettings(data="toy"), tmp_path / "r")
    with pytest.raises(UsageError, match="seeds: 1 then, 2 now"):
        run_training(spec, data, RunSettings(data="toy", seeds=2), tmp_path / "r", resume=True)
    with pytest.raises(UsageError, match="spec differs"):
        run_training(with_training_overrides(spec, lr=0.01), data, RunSettings(data="toy"), tmp_path / "r", resume=True)
    with pytest.raises(UsageError, match="content_hash"):
        run_training(spec, toy_events(300, seed=1), RunSettings(data="toy"), tmp_path / "r", resume=True)
    # a finished run resumed is read back, not retrained
    again = run_training(spec, data, RunSettings(data="toy"), tmp_path / "r", resume=True)
    assert again == json.loads((tmp_path / "r" / "results.json").read_text())


def test_a_stale_temp_file_from_a_crash_is_harmless(tmp_path):
    data = toy_events(300)
    spec, settings = small("pfn", epochs=2), RunSettings(data="toy")
    with pytest.raises(Killed):
        run_training(spec, data, settings, tmp_path / "r", on_epoch=kill_after(1))
    (tmp_path / "r" / "fraction-1" / ".checkpoint.pt.abc.tmp").write_bytes(b"half a checkpoint")
    resumed = run_training(spec, data, settings, tmp_path / "r", resume=True)
    full = run_training(spec, data, settings, tmp_path / "full")
    assert without_times(resumed) == without_times(full)


def test_sigkill_during_cli_training_then_resume(tmp_path):
    """A real kill (SIGKILL) of `symfw train`, then `--resume`, ends like an uninterrupted run."""
    data_file = tmp_path / "toy.npz"
    save_events(toy_events(1500), data_file)
    spec_file = tmp_path / "spec.toml"
    symfw.write_spec(small("pfn", epochs=6), spec_file)
    base = [sys.executable, "-m", "symfw", "train", str(spec_file), "--data", str(data_file),
            "--seeds", "2", "--device", "cpu", "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(base + ["--out", str(tmp_path / "killed")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "fraction-1" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and victim.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "training finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    epochs_done = len(metrics.read_text().splitlines()) // 2
    assert 1 <= epochs_done < 6
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = subprocess.run(base + ["--out", str(tmp_path / "killed"), "--resume"], env=env,
                             capture_output=True, text=True, check=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1)
    try:
        full = run_training(symfw.load_spec(spec_file), load_events(data_file),
                            RunSettings(data=str(data_file), seeds=2), tmp_path / "full")
    finally:
        torch.set_num_threads(threads)
    assert without_times(json.loads(resumed.stdout)) == without_times(full)
    assert RunDir(tmp_path / "killed").started
    np.testing.assert_array_equal(
        json.loads(resumed.stdout)["fractions"][0]["curves"]["val_auc"], full["fractions"][0]["curves"]["val_auc"]
    )


def test_sigkill_during_cli_compare_then_resume(tmp_path):
    """A SIGKILL of `symfw compare` while it trains the first spec, then `--resume`, ends with the
    compare.json of an uninterrupted comparison."""
    from symfw.core.compare import run_compare

    data_file = tmp_path / "toy.npz"
    save_events(toy_events(1500), data_file)
    specs = []
    for preset in ("pfn", "invariant"):
        specs.append(tmp_path / f"{preset}.toml")
        symfw.write_spec(small(preset, epochs=5), specs[-1])
    base = [sys.executable, "-m", "symfw", "compare", *map(str, specs), "--data", str(data_file),
            "--seeds", "2", "--device", "cpu", "--quiet", "--json", "--out", str(tmp_path / "killed")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "pfn" / "fraction-1" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and victim.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "compare finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "compare.json").exists()
    resumed = subprocess.run(base + ["--resume"], env=env, capture_output=True, text=True, check=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = run_compare([symfw.load_spec(s) for s in specs], load_events(data_file),
                           RunSettings(data=str(data_file), seeds=2), tmp_path / "full", plots=False)
    finally:
        torch.set_num_threads(threads)

    def comparable(summary):
        rows = [{k: v for k, v in r.items() if k != "train_time_s"} for r in summary["rows"]]
        return rows, summary["differences"]

    assert comparable(json.loads(resumed.stdout)) == comparable(full)
