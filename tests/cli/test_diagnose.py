"""`symfw diagnose invariance` through the CLI: specs, run directories, outputs and bad input."""

import json

import numpy as np
import pytest
from conftest import random_events

from symfw.core.data import save_events, validate


@pytest.fixture
def data_file(tmp_path):
    p4 = random_events(300, 2, seed=9).numpy()
    label = np.arange(300) % 2
    path = tmp_path / "events.npz"
    save_events(validate({"p4": p4, "label": label}), path)
    return path


def test_specs_are_compared_on_the_same_events(runner, cli, data_file, tmp_path):
    out = tmp_path / "diag"
    args = ["diagnose", "invariance", "pfn", "pelican", "--data", str(data_file), "--events", "120",
            "--rapidities", "0,0.5,1", "--out", str(out), "--quiet"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "pfn (untrained): mean |Δ logit|" in result.stdout and "Kx" in result.stdout
    payload = json.loads((out / "invariance.json").read_text())
    assert payload["n_events"] == 120 and [m["label"] for m in payload["models"]] == ["pfn (untrained)", "pelican (untrained)"]
    ratios = payload["ratios_dlogit"]["pelican (untrained)"]
    assert min(ratios.values()) > 1e6  # PELICAN is exactly invariant, the PFN is not
    assert (out / "invariance.png").read_bytes()[:4] == b"\x89PNG"


def test_each_model_is_also_measured_against_the_group_it_claims(runner, cli, data_file, tmp_path):
    out = tmp_path / "diag"
    result = runner.invoke(cli, ["diagnose", "invariance", "pfn", "pelican-spurions", "--data", str(data_file),
                                 "--events", "80", "--rapidities", "0,1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "claimed group of pelican-spurions (untrained): so2-z = lorentz (the spec's group)" in result.stdout
    assert "pelican-spurions (untrained): mean |Δ logit| under exp(±θT) of its claimed group so2-z" in result.stdout
    assert "claimed group of pfn (untrained): trivial = " in result.stdout
    payload = json.loads((out / "invariance.json").read_text())
    pfn, pelican = payload["claimed"]
    assert pfn["label"] == "pfn (untrained)" and pfn["skipped"].startswith("claims no symmetry")
    assert pelican["group"] == "so2-z" and list(pelican["dlogit"]) == ["Jz"]
    assert pelican["max_dlogit"] < 1e-12 * max(1.0, pelican["logit_std"])
    assert payload["models"][1]["summary"]["Kx"]["dlogit"] > 1e-4  # and not under the full Lorentz group
    assert (out / "invariance-claimed.png").read_bytes()[:4] == b"\x89PNG"


def test_json_output_and_a_generator_subset(runner, cli, data_file):
    result = runner.invoke(cli, ["diagnose", "invariance", "pfn", "--data", str(data_file), "--events", "50",
                                 "--generators", "Kz,Jz", "--rapidities", "1", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["models"][0]
    assert list(model["dlogit"]) == ["Kz", "Jz"] and model["parameters"] == [1.0]
    assert model["dlogit"]["Kz"][0] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["pfn", "--generators", "Kq"], "Error: group 'lorentz' has no generator 'Kq'; known: Kx, Ky, Kz, Jx, Jy, Jz"),
        (["pfn", "--rapidities", "0,a"], "Error: --rapidities: 'a' is not a number"),
        (["pfn", "--rapidities", "-1"], "Error: --rapidities: expected non-negative finite numbers"),
        (["pfn", "--events", "0"], "Error: --events must be >= 1, got 0"),
        (["nope-spec"], "Error: nope-spec: neither a spec file nor a preset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, cli, data_file, args, message):
    result = runner.invoke(cli, ["diagnose", "invariance", *args, "--data", str(data_file), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_a_spec_needs_data_and_a_plain_directory_is_not_a_run(runner, cli, tmp_path):
    result = runner.invoke(cli, ["diagnose", "invariance", "pfn", "--quiet"])
    assert result.exit_code == 2 and "--data: required unless the first target is a training run" in result.stderr
    result = runner.invoke(cli, ["diagnose", "invariance", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "a directory but not a training run (no run.json)" in result.stderr


def test_a_trained_run_is_diagnosed_on_its_own_test_split(runner, cli, data_file, tmp_path):
    training = pytest.importorskip("symfw.core.training")
    import symfw
    from symfw.core.data import load_events

    spec = training.with_training_overrides(symfw.load_spec("pfn-seal-group"), epochs=1)
    run = tmp_path / "cmp" / "run"
    training.run_training(spec, load_events(data_file), training.RunSettings(data=str(data_file), seeds=2), out=run)
    (tmp_path / "cmp" / "compare.json").write_text('{"specs": ["run"]}')  # as `symfw compare` writes it
    result = runner.invoke(cli, ["diagnose", "invariance", str(run), "--rapidities", "0.5", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["events"].startswith("test split of the run's data") and payload["n_events"] == 60
    model = payload["models"][0]
    assert model["n_members"] == 2 and model["label"] == "run"
    assert all(v[0] > 0 for v in model["dlogit"].values())
    # the compare folder stands for its runs
    result = runner.invoke(cli, ["diagnose", "invariance", str(tmp_path / "cmp"), "--rapidities", "0.5", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["models"][0]["dlogit"] == model["dlogit"]


def test_a_model_that_is_not_a_binary_classifier_is_refused_in_one_line(runner, cli):
    result = runner.invoke(cli, ["diagnose", "invariance", "invariant-four-vector", "--events", "50"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "Error: invariant-four-vector (untrained): diagnose invariance measures the change of one logit; "
        "task regression has other outputs"
    )


def test_accuracy_vs_pt_on_original_and_boosted_events(runner, cli, data_file, tmp_path):
    """SEAL Fig. 3: an exactly invariant model's accuracy is the same on boosted events; a PFN's is not."""
    out = tmp_path / "pt"
    result = runner.invoke(cli, ["diagnose", "pt", "pfn", "pelican", "--data", str(data_file), "--events", "200",
                                 "--rapidities", "0,1", "--bins", "4", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "accuracy_vs_pt.json").read_text())
    assert payload["context"] == "leading-pt" and len(payload["edges"]) == 5
    pelican, pfn = payload["models"]["pelican (untrained)"], payload["models"]["pfn (untrained)"]
    assert pelican["0"]["bins"] == pelican["1"]["bins"] and pelican["0"]["all"] == pelican["1"]["all"]
    assert pfn["0"]["bins"] != pfn["1"]["bins"]
    assert all(0 <= v <= 1 for v in pfn["0"]["bins"])
    assert (out / "accuracy_vs_pt.png").read_bytes()[:4] == b"\x89PNG"
    assert "balanced accuracy in bins of leading-pt" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--bins", "1"], "--bins must be in [2, 100], got 1"),
    (["--context", "nope"], "--context: unknown context 'nope'"),
    (["--generator", "Qx"], "Qx"),
    (["--rapidities", "0,-1"], "--rapidities: expected non-negative"),
])
def test_diagnose_pt_bad_input_is_one_line_and_exit_2(runner, cli, data_file, args, message, tmp_path):
    result = runner.invoke(cli, ["diagnose", "pt", "pfn", "--data", str(data_file), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.splitlines() == [err] and message in err and "Traceback" not in result.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
