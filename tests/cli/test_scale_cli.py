"""Scaling out from the CLI: symfw train --ddp / under torchrun, symfw compare --executor ray."""

import json
import subprocess
import sys

import pytest
from toy_events import toy_events

import symfw
from symfw.core.data import save_events
from symfw.core.distributed import free_port


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    save_events(toy_events(400, weighted=True), path)
    return path


@pytest.fixture(scope="module")
def small_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("specs") / "small-pfn.toml"
    spec = symfw.load_spec("pfn")
    spec = spec.model_copy(update={"name": "small-pfn", "head": spec.head.model_copy(update={"hidden": [16]})})
    symfw.write_spec(spec, path)
    return path


def train_args(spec, data, out, *extra):
    return ["train", str(spec), "--data", str(data), "--epochs", "2", "--seeds", "2", "--batch-size", "64",
            "--device", "cpu", "--threads", "1", "--out", str(out), *extra]


@pytest.fixture
def torchrun_env(monkeypatch):
    """The variables torchrun sets, for a world of one process (this one)."""
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", str(free_port()))):
        monkeypatch.setenv(name, value)


def test_train_ddp_2_spawns_two_ranks_and_prints_rank_0_results(runner, cli, toy_file, small_spec, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli, train_args(small_spec, toy_file, out, "--ddp", "2", "--quiet"))
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    f = results["fractions"][0]
    assert f["mode"] == "ddp" and f["world_size"] == 2 and len(f["members"]) == 2
    assert f"{f['summary']['final_test']['auc']['mean']:.4f}" in result.stdout
    assert "ddp on cpu" in result.stdout
    # resumed: read back without training, same numbers
    again = runner.invoke(cli, train_args(small_spec, toy_file, out, "--ddp", "2", "--quiet", "--resume", "--json"))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == results


def test_compare_ddp_2_trains_every_spec_data_parallel_like_one_process(runner, cli, toy_file, small_spec, tmp_path):
    from symfw.core.compare import run_compare
    from symfw.core.data import load_events
    from symfw.core.training import RunSettings, with_training_overrides

    out = tmp_path / "cmp"
    args = ["compare", str(small_spec), "invariant", "--data", str(toy_file), "--epochs", "2", "--seeds", "2",
            "--batch-size", "64", "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"]
    result = runner.invoke(cli, args + ["--ddp", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    assert [r["mode"] for r in summary["rows"]] == ["ddp", "ddp"]
    assert "small-pfn" in result.stdout and (out / "auc_vs_epoch.png").is_file()
    # the same comparison in one process agrees (float32 sums in another order: to rounding)
    specs = [with_training_overrides(symfw.load_spec(s), epochs=2, batch_size=64) for s in (small_spec, "invariant")]
    one = run_compare(specs, load_events(toy_file), RunSettings(data=str(toy_file), seeds=2), tmp_path / "one",
                      vectorize="no", plots=False)
    for a, b in zip(summary["rows"], one["rows"]):
        assert a["final_test_auc"]["mean"] == pytest.approx(b["final_test_auc"]["mean"], abs=0.03)


def test_under_torchrun_the_command_trains_data_parallel(runner, cli, toy_file, small_spec, tmp_path, torchrun_env):
    out = tmp_path / "run"
    result = runner.invoke(cli, train_args(small_spec, toy_file, out, "--quiet", "--json"))
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)["fractions"][0]
    assert f["mode"] == "ddp" and f["world_size"] == 1
    refused = runner.invoke(cli, train_args(small_spec, toy_file, tmp_path / "other", "--ddp", "2"))
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "Error: --ddp: this process was started by torchrun already; leave --ddp out"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ddp", "2", "--vectorize", "yes"], "Error: --vectorize yes: data-parallel training trains one member"),
        (["--ddp", "0"], "Error: --ddp must be >= 1, got 0"),
    ],
)
def test_bad_ddp_input_is_one_line_and_exit_2(runner, cli, toy_file, small_spec, tmp_path, extra, message):
    result = runner.invoke(cli, train_args(small_spec, toy_file, tmp_path / "o", *extra))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(message)
    assert not (tmp_path / "o").exists()


def test_compare_executor_ray_writes_the_usual_outputs(runner, cli, toy_file, small_spec, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "cmp"
    result = runner.invoke(cli, ["compare", "invariant", str(small_spec), "--data", str(toy_file), "--epochs", "2",
                                 "--seeds", "1", "--batch-size", "64", "--device", "cpu", "--executor", "ray",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    assert summary["specs"] == ["invariant", "small-pfn"]
    assert "comparison on identical splits and seeds" in result.stdout
    assert (out / "small-pfn" / "fraction-1" / "member-0" / "results.json").is_file()
    assert (out / "auc_vs_epoch.png").is_file()


@pytest.mark.slow
def test_torchrun_two_processes(toy_file, small_spec, tmp_path):
    """The documented command, through torchrun itself (slow: torchrun's agent and two interpreters)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "symfw",
           *train_args(small_spec, toy_file, out, "--quiet")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[:6000]
    f = json.loads((out / "results.json").read_text())["fractions"][0]
    assert f["mode"] == "ddp" and f["world_size"] == 2
    assert done.stdout.count("held-out metrics") == 1  # rank 0 prints, rank 1 is silent
