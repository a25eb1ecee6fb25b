"""Executors for compare: per-seed tasks merge into the ensemble's files; retries; nothing lost; Ray.

The tests without Ray drive the same planning, retry and gathering code through the local
executor with injected failures. The Ray tests (skipped when Ray is not installed) start a local
instance with ``ray.init(num_cpus=2)``.
"""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from toy_events import comparable, one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core import executors as X
from symfw.core.compare import run_compare
from symfw.core.errors import SymfwError, UsageError
from symfw.core.training import RunSettings, load_members, with_training_overrides

SETTINGS = RunSettings(data="toy", seeds=2, fractions=(0.5, 1.0))


def small(preset, epochs=2):
    spec = symfw.load_spec(preset)
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [32, 16]})})
    return with_training_overrides(spec, epochs=epochs, batch_size=64)


@pytest.fixture(scope="module")
def data():
    return toy_events(300, weighted=True)


@pytest.fixture(scope="module")
def specs():
    return [small("invariant"), small("pfn")]


def train_specs(specs, names, data, settings, out, **kwargs):
    """Train every spec into ``out/<name>`` through the one orchestration."""
    return X.train_runs(specs, [Path(out) / n for n in names], data, settings, names=names, **kwargs)


def results_of(out, name):
    res = json.loads((Path(out) / name / "results.json").read_text())
    for f in res["fractions"]:
        f.pop("train_time_s")
        f.pop("mode_reason")
    return res


@pytest.fixture(scope="module")
def reference(specs, data, tmp_path_factory):
    """The local executor as symfw compare runs it: one task per (spec, fraction), all seeds at once."""
    out = tmp_path_factory.mktemp("ref") / "cmp"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures start before the autouse one_thread; Ray workers use one
    try:
        return out, run_compare(specs, data, SETTINGS, out, vectorize="no", plots=False)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- without Ray


def test_per_seed_tasks_merge_into_exactly_the_ensemble_files(specs, data, reference, tmp_path):
    ref_out, ref = reference
    calls = []

    def counted(task, shared, **kw):
        calls.append(task.label)
        return X.run_task(task, shared, **kw)

    names = [s.name for s in specs]
    train_specs(specs, names, data, SETTINGS, tmp_path, executor=X.LocalExecutor(split_members=True),
                  vectorize="no", task_fn=counted)
    assert len(calls) == 2 * 2 * 2  # specs × fractions × seeds
    for name in names:
        assert results_of(tmp_path, name) == results_of(ref_out, name)
        for f in ("fraction-0.5", "fraction-1"):
            merged, grouped = (Path(o) / name / f for o in (tmp_path, ref_out))
            assert (merged / "metrics.jsonl").read_text() == (grouped / "metrics.jsonl").read_text()
            assert (merged / "member-1" / "results.json").is_file()
            a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (merged, grouped))
            for key in ("params", "buffers"):
                assert all(torch.equal(a[key][k], b[key][k]) for k in b[key])
            for i, state in b["optimizer"]["state"].items():
                assert all(torch.equal(a["optimizer"]["state"][i][k], v) for k, v in state.items())
    assert len(load_members(tmp_path / "pfn", fraction=0.5)) == 2


def test_a_crashed_task_is_retried_from_its_checkpoint(specs, data, reference, tmp_path):
    ref_out, _ = reference
    attempts = {}

    def crash_once_after_epoch_1(task, shared, **kw):
        attempts.setdefault(task.label, []).append([])

        def on_epoch(record):
            attempts[task.label][-1].append(record["epoch"])
            if len(attempts[task.label]) == 1 and record["epoch"] == 1:
                raise RuntimeError("worker lost")

        return X.run_task(task, shared, **{**kw, "on_epoch": on_epoch})

    train_specs(specs[:1], ["invariant"], data, SETTINGS, tmp_path, executor=X.LocalExecutor(max_retries=1),
                  vectorize="no", task_fn=crash_once_after_epoch_1)
    # each task: epoch 1, crash; the retry continues with epoch 2 from the checkpoint
    assert attempts == {"invariant f=0.5 2 seeds": [[1], [2]], "invariant f=1 2 seeds": [[1], [2]]}
    assert results_of(tmp_path, "invariant") == results_of(ref_out, "invariant")


def test_a_failing_task_loses_nothing_and_resume_trains_only_what_is_missing(specs, data, reference, tmp_path):
    ref_out, ref = reference
    names = [s.name for s in specs]
    calls = []

    def pfn_seed_1_fails(task, shared, **kw):
        calls.append(task.label)
        if task.name == "pfn" and task.members == (1,) and task.fraction == 1.0:
            raise RuntimeError("out of memory")
        return X.run_task(task, shared, **kw)

    executor = X.LocalExecutor(max_retries=2, split_members=True)
    with pytest.raises(SymfwError, match=r"1 of 8 training tasks failed \(first: pfn f=1 seed 1: RuntimeError: out of "
                                         r"memory\); finished tasks are kept in .*rerun with --resume"):
        train_specs(specs, names, data, SETTINGS, tmp_path, executor=executor, vectorize="no",
                      task_fn=pfn_seed_1_fails)
    assert calls.count("pfn f=1 seed 1") == 3  # tried, then retried twice
    assert len(calls) == 7 + 3
    # every other task is complete, and the complete ensembles are merged
    assert (tmp_path / "invariant" / "results.json").is_file()
    assert (tmp_path / "pfn" / "fraction-0.5" / "results.json").is_file()
    assert (tmp_path / "pfn" / "fraction-1" / "member-0" / "results.json").is_file()
    assert not (tmp_path / "pfn" / "fraction-1" / "results.json").exists()
    assert not (tmp_path / "pfn" / "results.json").exists()
    # resumed with the default executor: only the missing seed is trained, per seed as it started
    calls.clear()
    summary = run_compare(specs, data, SETTINGS, tmp_path, resume=True, vectorize="no", plots=False,
                          executor=X.LocalExecutor(),
                          on_task=lambda task, done, total: calls.append((task.label, total)))
    assert calls == [("pfn f=1 seed 1", 1)]
    assert comparable(summary) == comparable(ref)
    assert json.loads((tmp_path / "compare.json").read_text())["specs"] == names


def test_trials_in_two_processes_give_the_results_of_one_after_the_other(specs, data, reference, tmp_path):
    ref_out, ref = reference
    done = []
    summary = run_compare(specs, data, SETTINGS, tmp_path, vectorize="no", plots=False,
                          executor=X.ProcessExecutor(jobs=2, threads=1),
                          on_task=lambda task, n, total: done.append((n, total)))
    assert sorted(done) == [(n, 8) for n in range(1, 9)]  # one task per (spec, fraction, seed)
    assert comparable(summary) == comparable(ref)
    for name in ("invariant", "pfn"):
        assert results_of(tmp_path, name) == results_of(ref_out, name)
    with pytest.raises(UsageError, match="--jobs is for the local executor"):
        X.make_executor("ray", jobs=2)
    assert X.make_executor("local", jobs=2).split_members  # seeds spread over the processes ...
    assert not X.make_executor("local", jobs=2, vectorize="yes").split_members  # ... unless they are to be vmapped
    # resumed when everything is done: nothing to run, the same summary read back
    again = run_compare(specs, data, SETTINGS, tmp_path, vectorize="no", plots=False, resume=True,
                        executor=X.ProcessExecutor(jobs=2, threads=1))
    assert comparable(again) == comparable(ref)


def test_bad_input_in_a_task_is_not_retried(specs, data, tmp_path):
    calls = []

    def bad(task, shared, **kw):
        calls.append(task.label)
        raise UsageError("--data: not usable")

    with pytest.raises(SymfwError, match="2 of 2 training tasks failed .*: --data: not usable"):
        train_specs(specs[:1], ["invariant"], data, SETTINGS, tmp_path, executor=X.LocalExecutor(max_retries=3),
                      task_fn=bad)
    assert len(calls) == 2


def test_executor_choice_errors(monkeypatch):
    with pytest.raises(UsageError, match="--executor must be local or ray, got 'dask'"):
        X.make_executor("dask")
    with pytest.raises(UsageError, match="--address is for --executor ray"):
        X.make_executor("local", address="auto")
    with pytest.raises(UsageError, match="--retries must be >= 0"):
        X.make_executor("local", retries=-1)
    assert X.make_executor("local").max_retries == 0 and not X.make_executor("local").split_members
    monkeypatch.setattr(X, "ray_available", lambda: False)
    with pytest.raises(UsageError, match=r"--executor ray needs Ray: pip install 'symfw\[ray\]'"):
        X.make_executor("ray")


def test_compare_cli_with_unknown_executor_is_one_line(runner, cli, tmp_path):
    result = runner.invoke(cli, ["compare", "pfn", "hybrid", "--executor", "slurm", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --executor must be local or ray, got 'slurm'"
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- Ray


class KillOnce:
    """A task function whose first attempt of every task kills its own worker after epoch 1."""

    def __init__(self, markers: str):
        self.markers = markers

    def __call__(self, task, shared, **kw):
        marker = Path(self.markers) / task.label.replace(" ", "_")
        first = not marker.exists()
        marker.touch()
        log = marker.parent / f"{marker.name}.epochs"

        def on_epoch(record):
            with open(log, "a") as fh:
                fh.write(f"{record['epoch']}\n")
            if first and record["epoch"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        return X.run_task(task, shared, **{**kw, "on_epoch": on_epoch})


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_executor_gathers_the_local_results(ray_local, specs, data, reference, tmp_path):
    ref_out, ref = reference
    done = []
    summary = run_compare(specs, data, SETTINGS, tmp_path, vectorize="no", plots=False,
                          executor=X.RayExecutor(), on_task=lambda task, n, total: done.append((n, total)))
    assert done == [(n, 8) for n in range(1, 9)]
    # Ray workers train on one thread, as these tests do: the same numbers as the local executor
    assert comparable(summary) == comparable(ref)
    for name in ("invariant", "pfn"):
        assert results_of(tmp_path, name) == results_of(ref_out, name)


def test_a_killed_ray_worker_is_retried_from_the_checkpoint_and_nothing_is_lost(ray_local, specs, data, reference,
                                                                                 tmp_path):
    ref_out, _ = reference
    markers = tmp_path / "markers"
    markers.mkdir()
    settings = RunSettings(data="toy", seeds=2, fractions=(1.0,))
    train_specs(specs[:1], ["invariant"], data, settings, tmp_path / "cmp", executor=X.RayExecutor(max_retries=1),
                  vectorize="no", task_fn=KillOnce(str(markers)))
    logs = sorted(markers.glob("*.epochs"))
    assert len(logs) == 2  # 2 seeds, each worker killed once after epoch 1
    assert all(p.read_text().split() == ["1", "2"] for p in logs)  # the retry trained epoch 2 only
    expected = results_of(ref_out, "invariant")
    expected["fractions"] = expected["fractions"][1:]
    expected["settings"]["fractions"] = [1.0]
    assert results_of(tmp_path / "cmp", "invariant") == expected


class FailAlways:
    """A task function that raises for one task, every time."""

    def __init__(self, label: str, log: str):
        self.label, self.log = label, log

    def __call__(self, task, shared, **kw):
        if task.label == self.label:
            with open(self.log, "a") as fh:
                fh.write("attempt\n")
            raise RuntimeError("disk full")
        return X.run_task(task, shared, **kw)


def test_a_ray_task_that_keeps_failing_is_reported_and_resume_completes(ray_local, specs, data, reference, tmp_path):
    ref_out, _ = reference
    with pytest.raises(SymfwError, match=r"1 of 4 training tasks failed \(first: invariant f=0.5 seed 0: "
                                         r"RuntimeError: disk full\)"):
        train_specs(specs[:1], ["invariant"], data, SETTINGS, tmp_path, executor=X.RayExecutor(max_retries=1),
                      vectorize="no", task_fn=FailAlways("invariant f=0.5 seed 0", str(tmp_path / "attempts")))
    assert (tmp_path / "attempts").read_text().split() == ["attempt", "attempt"]  # tried, retried once
    done = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("results.json"))
    assert done == ["invariant/fraction-0.5/member-1", "invariant/fraction-1",
                    "invariant/fraction-1/member-0", "invariant/fraction-1/member-1"]
    train_specs(specs[:1], ["invariant"], data, SETTINGS, tmp_path, resume=True, executor=X.RayExecutor(),
                  vectorize="no")
    assert results_of(tmp_path, "invariant") == results_of(ref_out, "invariant")
