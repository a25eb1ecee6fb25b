"""`symfw train` and `symfw compare` through the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core.data import save_events
from symfw.core.spec import PenaltyRef


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    save_events(toy_events(600, weighted=True), path)
    return path


@pytest.fixture(scope="module")
def small_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("specs") / "small-hybrid.toml"
    spec = symfw.load_spec("hybrid")
    spec = spec.model_copy(update={"name": "small-hybrid", "head": spec.head.model_copy(update={"hidden": [32]})})
    symfw.write_spec(spec, path)
    return path


def one_line_exit_2(result, starts):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err == err.splitlines()[0], err
    assert err.startswith(starts), err
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, starts",
    [
        (["train", "nosuchspec"], "Error: nosuchspec: neither a spec file nor a preset"),
        (["train", "pfn", "--fractions", "0"], "Error: --fractions: each fraction must be in (0, 1], got 0"),
        (["train", "pfn", "--fractions", "0.5,1.5"], "Error: --fractions: each fraction must be in (0, 1], got 1.5"),
        (["train", "pfn", "--fractions", "0.1,abc"], "Error: --fractions: 'abc' is not a number"),
        (["train", "pfn", "--seeds", "0"], "Error: --seeds must be >= 1, got 0"),
        (["train", "pfn", "--seed", "-1"], "Error: --seed must be in [0, 2^32), got -1"),
        (["train", "pfn", "--device", "tpu"], "Error: --device must be cpu, cuda or auto, got 'tpu'"),
        (["train", "pfn", "--epochs", "0"], "Error: --epochs:"),
        (["train", "pfn", "--vectorize", "maybe"], "Error: --vectorize must be auto, yes or no"),
        (["train", "pfn", "--threads", "0"], "Error: --threads must be >= 1, got 0"),
        (["train", "pfn", "--cut-context", "nope"], "Error: --cut-context: unknown context 'nope'; known:"),
        (["compare", "pfn", "hybrid", "--jobs", "0"], "Error: --jobs must be >= 1"),
        (["train", "pfn", "--data", "nosuch.npz"], "Error: nosuch.npz: no such file"),
        (["compare", "pfn"], "Error: compare needs at least two specs"),
        (["compare", "pfn", "nosuchspec"], "Error: nosuchspec: neither a spec file nor a preset"),
        (["compare", "pfn", "hybrid", "--seeds", "-1"], "Error: --seeds must be >= 1, got -1"),
        (["compare", "pfn", "hybrid", "--fractions", "1.01"], "Error: --fractions: each fraction must be in (0, 1]"),
        (["compare", "pfn", "hybrid", "--device", "gpu"], "Error: --device must be cpu, cuda or auto, got 'gpu'"),
        (["compare", "pfn", "hybrid", "--lr-grid", "1e-3,x"], "Error: --lr-grid: 'x' is not a number"),
        (["compare", "pfn", "hybrid", "--lr-grid", "1e-3,0"], "Error: the learning-rate grid needs positive finite"),
        (["compare", "pfn", "hybrid", "--lr-grid", "1e-3,1.0000001e-3"], "Error: the learning-rate grid has values too"),
        (["compare", "pfn", "hybrid", "--lr-grid", "1e-3", "--lr", "1e-3"], "Error: --lr and --lr-grid exclude"),
        (["compare", "pfn", "pfn-seal-group", "--lam-grid", ""], "Error: --lam-grid: give comma-separated numbers"),
        (["compare", "pfn", "pfn-seal-group", "--lam-grid", "1,x"], "Error: --lam-grid: 'x' is not a number"),
        (["compare", "pfn", "pfn-seal-group", "--lam-grid", "1,-1"],
         "Error: the λ grid (--lam-grid) needs finite numbers >= 0, got -1"),
        (["compare", "pfn", "pfn-seal-group", "--lam-grid", "nan"], "Error: the λ grid (--lam-grid) needs finite"),
        (["compare", "pfn", "pfn-seal-group", "--lam-grid", "0.1,inf"], "Error: the λ grid (--lam-grid) needs finite"),
        (["compare", "pfn", "pfn-seal-group", "--lam-grid", "1,0.1,1"], "Error: the λ grid (--lam-grid) gives 1 more"),
        (["compare", "pfn", "hybrid", "--lam-grid", "1"], "Error: --lam-grid chooses the λ of penalties, and none"),
        (["compare", "pfn", "pfn-seal-group", "--lam-grid", "1", "--matched-init"],
         "Error: --lam-grid and --matched-init do not combine"),
        (["train", "pfn", "--schedule", "warm"], "Error: --schedule: Input should be 'constant' or 'cosine'"),
        (["compare", "pfn", "hybrid", "--schedule", "linear"], "Error: --schedule: Input should be 'constant'"),
        (["compare", "pfn", "invariant", "--events", "300", "--matched-init"],
         "Error: --matched-init: 'pfn', 'invariant' cannot be matched"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, cli, args, starts, tmp_path):
    one_line_exit_2(runner.invoke(cli, args + ["--out", str(tmp_path / "o")]), starts)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_a_gpu_is_one_line_and_exit_2(runner, cli, tmp_path):
    result = runner.invoke(cli, ["train", "pfn", "--device", "cuda", "--out", str(tmp_path / "o")])
    one_line_exit_2(result, "Error: --device cuda: CUDA is not available")


def test_train_writes_a_run_and_prints_held_out_metrics(runner, cli, toy_file, small_spec, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(small_spec), "--data", str(toy_file), "--epochs", "2", "--seeds", "2",
            "--batch-size", "64", "--device", "cpu", "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "small-hybrid: held-out metrics" in result.stdout and "final test AUC" in result.stdout
    results = json.loads((out / "results.json").read_text())
    auc = results["fractions"][0]["summary"]["final_test"]["auc"]["mean"]
    assert f"{auc:.4f}" in result.stdout
    voted = results["fractions"][0]["ensemble"]["final"]["test"]["auc"]  # two members vote as one model
    assert "ensemble test AUC" in result.stdout and f"{voted:.4f}" in result.stdout
    assert symfw.load_spec(out / "spec.toml").training.epochs == 2
    assert {p.name for p in out.glob("*.png")} == {"auc_vs_epoch.png", "general_weight_vs_pt.png"}
    # again without --resume: refused; with --resume: read back, same numbers
    again = runner.invoke(cli, args)
    one_line_exit_2(again, f"Error: {out} already holds a run; pass --resume")
    resumed = runner.invoke(cli, args + ["--resume", "--json", "--quiet"])
    assert resumed.exit_code == 0
    assert json.loads(resumed.stdout) == results
    assert resumed.stderr == ""


def test_compare_on_identical_splits_writes_table_json_and_plots(runner, cli, toy_file, small_spec, tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(
        cli,
        ["compare", "invariant", str(small_spec), "--data", str(toy_file), "--epochs", "2", "--seeds", "2",
         "--batch-size", "64", "--fractions", "0.5,1", "--train-pt-max", "60", "--device", "cpu",
         "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    assert summary["specs"] == ["invariant", "small-hybrid"]
    for name in summary["specs"]:
        assert name in result.stdout
    split_hashes = {json.loads((out / n / "data.json").read_text())["split"]["indices_hash"] for n in summary["specs"]}
    assert len(split_hashes) == 1  # the same split for every spec
    seeds = [[m["seed"] for m in json.loads((out / n / "results.json").read_text())["fractions"][0]["members"]]
             for n in summary["specs"]]
    assert seeds[0] == seeds[1]
    diff = summary["differences"][0]
    a = summary["rows"][0]["final_test_auc"]["mean"]
    b = summary["rows"][1]["final_test_auc"]["mean"]
    assert diff["final_test_auc"]["mean"] == pytest.approx(a - b)
    for row, name in zip(summary["rows"], summary["specs"]):
        voted = json.loads((out / name / "results.json").read_text())["fractions"][-1]["ensemble"]
        assert row["ensemble_final_test_auc"] == voted["final"]["test"]["auc"]
        assert f"{row['ensemble_final_test_auc']:.4f}" in result.stdout
    assert set(summary["rows"][0]["val_auc_at"]) == {"1"}
    assert summary["by_fraction"] and summary["extrapolation"]["invariant"]["pt_max"] == 60
    assert {p.name for p in out.glob("*.png")} == {
        "auc_vs_epoch.png", "auc_vs_fraction.png", "general_weight_vs_pt.png", "extrapolation.png"
    }
    assert "extrapolation: trained on leading-particle pT < 60 GeV" in result.stdout
    assert "differences (paired by seed" in result.stdout


def test_compare_with_an_lr_grid_keeps_the_best_validation_run_per_spec(runner, cli, toy_file, small_spec, tmp_path):
    out = tmp_path / "grid"
    result = runner.invoke(
        cli,
        ["compare", "invariant", str(small_spec), "--data", str(toy_file), "--epochs", "2", "--seeds", "2",
         "--batch-size", "64", "--lr-grid", "1e-4,3e-3", "--invariance", "--device", "cpu", "--out", str(out),
         "--quiet"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    selection = summary["selection"]
    assert selection["grid"] == [1e-4, 3e-3]
    for row in summary["rows"]:
        trials = selection["specs"][row["spec"]]["trials"]
        assert [t["lr"] for t in trials] == [1e-4, 3e-3]
        for t in trials:  # every trial is a complete run of its own, trained at its learning rate
            results = json.loads((out / t["run"] / "results.json").read_text())["fractions"][0]
            assert results["lr"] == t["lr"]
            val = [m["final"]["val"]["auc"] for m in results["members"]]
            assert t["val_auc"] == pytest.approx(sum(val) / len(val))
        best = max(trials, key=lambda t: t["val_auc"])
        assert selection["specs"][row["spec"]]["lr"] == best["lr"] == row["lr"]
        chosen = json.loads((out / best["run"] / "results.json").read_text())["fractions"][0]
        assert row["final_test_auc"]["mean"] == pytest.approx(chosen["summary"]["final_test"]["auc"]["mean"])
    assert "learning rate chosen on validation" in result.stdout
    # the invariance of the chosen runs' members: invariant is exactly invariant, the hybrid not
    inv = summary["invariance"]["models"]
    assert list(inv) == ["invariant", "small-hybrid"]
    assert inv["invariant"]["summary"]["K·n̂"]["dlogit"] < 1e-9 < inv["small-hybrid"]["summary"]["K·n̂"]["dlogit"]
    # diagnose reads the compare folder: the chosen runs, labelled by spec
    diag = runner.invoke(cli, ["diagnose", "invariance", str(out), "--events", "50", "--json"])
    assert diag.exit_code == 0, diag.output
    models = json.loads(diag.stdout)["models"]
    assert [m["label"] for m in models] == ["invariant", "small-hybrid"]
    assert models[1]["summary"]["K·n̂"]["dlogit"] > 1e-9


def test_compare_with_a_lam_grid_shows_the_chosen_lam_and_every_trial(runner, cli, toy_file, small_spec, tmp_path):
    sealed = tmp_path / "sealed.toml"
    spec = symfw.load_spec(small_spec)
    symfw.write_spec(spec.model_copy(update={"name": "sealed", "penalties": [PenaltyRef(name="seal-infinitesimal")]}),
                     sealed)
    out = tmp_path / "lam"
    result = runner.invoke(
        cli,
        ["compare", str(small_spec), str(sealed), "--data", str(toy_file), "--epochs", "1", "--seeds", "1",
         "--batch-size", "64", "--lam-grid", "3,0.3", "--device", "cpu", "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    entry = summary["selection"]["specs"]["sealed"]
    assert [t["lam"] for t in entry["trials"]] == [0.3, 3.0]
    assert entry["lam"] == max(entry["trials"], key=lambda t: t["val_auc"])["lam"]
    assert len(summary["selection"]["specs"]["small-hybrid"]["trials"]) == 2  # the same budget: two seed replicas
    assert "λ (chosen)" in result.stdout and "λ chosen on validation: 2 trainings per spec" in result.stdout
    assert f"{entry['lam']:g}" in result.stdout.split("λ chosen on validation")[0]


def test_compare_with_invariance_reports_the_ratio_to_the_first_spec(runner, cli, toy_file, tmp_path):
    out = tmp_path / "inv"
    result = runner.invoke(
        cli,
        ["compare", "pfn", "invariant", "--data", str(toy_file), "--epochs", "1", "--seeds", "1",
         "--batch-size", "64", "--invariance", "--device", "cpu", "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    inv = json.loads((out / "compare.json").read_text())["invariance"]
    assert inv["group"] == "lorentz" and inv["n_events"] == 120  # the 20 % test split of 600 events
    pfn, invariant = inv["models"]["pfn"], inv["models"]["invariant"]
    assert pfn["summary"]["K·n̂"]["dlogit"] > 1e-3  # a PFN on four-vectors is not invariant
    assert invariant["summary"]["K·n̂"]["dlogit"] < 1e-9 * invariant["logit_std"]  # an MLP on invariants is
    assert inv["ratios_dlogit"]["invariant"]["K·n̂"] > 1e6
    # no event of the invariant model moves in its own ranking: an infinite ratio, null in JSON, ∞ in the table
    assert invariant["summary"]["K·n̂"]["dquantile"] == 0 and inv["ratios_dquantile"]["invariant"]["K·n̂"] is None
    assert "∞" in result.stdout
    assert (out / "invariance.png").is_file()
    assert "invariance under lorentz on 120 test events" in result.stdout


def test_data_with_more_particles_than_a_spec_is_cut_to_its_first_slots_with_a_warning(runner, cli, tmp_path):
    events = toy_events(60)
    three = np.concatenate([events.p4, events.p4[:, :1]], axis=1)  # a third particle slot
    path = tmp_path / "three.npz"
    np.savez(path, p4=three, label=events.label)
    np.savez(tmp_path / "two.npz", p4=events.p4, label=events.label)
    outs = {}
    for name in ("three", "two"):
        out = tmp_path / f"run-{name}"
        result = runner.invoke(cli, ["train", "invariant", "--data", str(tmp_path / f"{name}.npz"), "--epochs", "1",
                                     "--out", str(out), "--json", "--quiet"])
        assert result.exit_code == 0, result.output
        outs[name] = json.loads(result.stdout)["fractions"][0]
        warned = "Warning: spec 'invariant' sees the first 2 of the 3 particle slots of these events (its n_particles)"
        assert (warned in result.stderr) == (name == "three"), result.stderr
        assert "UserWarning" not in result.stderr
    # the model saw the same two particles either way
    assert outs["three"]["members"][0]["final"]["test"] == outs["two"]["members"][0]["final"]["test"]


def test_regression_from_build_to_train_and_compare(runner, cli, tmp_path):
    spec = tmp_path / "r.toml"
    built = runner.invoke(cli, ["build", "--preset", "pfn", "--task", "regression", "--out", str(spec), "-q"])
    assert built.exit_code == 0, built.output
    assert symfw.load_spec(spec).task.name == "regression"
    common = ["--data", "zmumu", "--events", "1500", "--epochs", "2", "--device", "cpu", "--threads", "1"]
    result = runner.invoke(cli, ["train", str(spec), *common, "--seeds", "2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    for header in ("final test loss", "ΔpT/pT", "Δm/m", "ΔR", "ΔΨ"):
        assert header in result.stdout, header
    assert (tmp_path / "r" / "resolution_vs_pt.png").is_file() and (tmp_path / "r" / "loss_vs_epoch.png").is_file()
    cmp = runner.invoke(cli, ["compare", str(spec), "invariant-four-vector", *common, "--seeds", "2",
                              "--out", str(tmp_path / "cmp")])
    assert cmp.exit_code == 0, cmp.output
    assert "final test loss" in cmp.stdout and "Δ final test loss" in cmp.stdout
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["task"] == "regression" and summary["primary"] == "loss"
    assert {"resolution_vs_pt.png", "loss_vs_epoch.png"} <= {p.name for p in (tmp_path / "cmp").glob("*.png")}
    mixed = runner.invoke(cli, ["compare", str(spec), "pfn", *common, "--out", str(tmp_path / "mixed")])
    assert mixed.exit_code == 2 and "compare needs specs of one task, got binary, regression" in mixed.stderr


def test_compile_flag_is_recorded_and_a_resume_must_keep_it(runner, cli, toy_file, small_spec, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(small_spec), "--data", str(toy_file), "--epochs", "1", "--batch-size", "64",
            "--device", "cpu", "--out", str(out), "--quiet"]
    result = runner.invoke(cli, args + ["--no-compile"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["settings"]["compile"] is False
    assert json.loads((out / "results.json").read_text())["fractions"][0]["compiled"] is False
    # compiled float32 steps round differently: a resume with the other setting is refused
    again = runner.invoke(cli, args + ["--compile", "--resume"])
    one_line_exit_2(again, f"Error: {out}: cannot resume with different settings (compile: False then, True now)")


def test_a_one_target_regression_table_has_its_own_columns(runner, cli, tmp_path):
    """The table's columns are those of the run's task options: MAE for one target, no four-vector resolutions."""
    spec = Path(__file__).resolve().parents[2] / "study" / "specs" / "seal-toy-invariant.toml"
    result = runner.invoke(cli, ["train", str(spec), "--data", "seal-toy", "--events", "400", "--epochs", "1",
                                 "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test MAE" in result.stdout and "ΔpT/pT" not in result.stdout
