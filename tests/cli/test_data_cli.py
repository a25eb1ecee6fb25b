"""`symfw data generate` and `symfw data inspect` through the CLI."""

import json

import numpy as np
import pytest
import vector

from symfw.core.data import load_events


def generate(runner, cli, out, *extra, events=20_000, seed=7):
    args = ["data", "generate", "zmumu", "--events", str(events), "--seed", str(seed), "--out", str(out), *extra]
    return runner.invoke(cli, args)


@pytest.fixture(scope="module")
def zfile(tmp_path_factory):
    from typer.testing import CliRunner

    from symfw.cli.app import app

    out = tmp_path_factory.mktemp("z") / "z.npz"
    result = generate(CliRunner(), app, out)
    assert result.exit_code == 0, result.output
    return out


def test_generate_writes_a_valid_balanced_file(zfile):
    data = load_events(zfile)
    assert len(data) == 20_000 and data.label.sum() == 10_000
    assert data.p4_true is not None and data.meta["source"] == "zmumu" and data.meta["seed"] == 7
    assert not (data.weight[data.label == 0] == 1).all()  # background reweighted by default


def test_same_seed_same_file_content_other_seed_differs(runner, cli, tmp_path, zfile):
    assert generate(runner, cli, tmp_path / "a.h5").exit_code == 0
    assert generate(runner, cli, tmp_path / "b.npz", seed=8).exit_code == 0
    a, b, z = (load_events(p) for p in (tmp_path / "a.h5", tmp_path / "b.npz", zfile))
    np.testing.assert_array_equal(a.p4, z.p4)
    assert a.describe()["content_hash"] == z.describe()["content_hash"] != b.describe()["content_hash"]


def test_generate_options_reach_the_plugin(runner, cli, tmp_path):
    out = tmp_path / "paper.npz"
    result = generate(
        runner, cli, out, "--resolution", "0.1", "--resolution-slope", "0", "--reweight", "resample",
        "--set", "eta_max=null", "--set", "mass_window=[70, 110]", "--json", "--quiet", events=5000,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_events"] == 5000 and summary["reweight"] == "resample" and summary["file"] == str(out)
    data = load_events(out)
    shifts = np.hypot(data.p4[..., 1], data.p4[..., 2]) / np.hypot(data.p4_true[..., 1], data.p4_true[..., 2]) - 1
    np.testing.assert_allclose(shifts.std(), 0.1, rtol=0.1)
    assert (data.weight == 1).all() and data.meta["mass_window"] == "70-110"
    assert result.stderr == ""  # --quiet: no progress, no summary


@pytest.mark.parametrize(
    "extra, events, message",
    [
        (["--reweight", "often"], 1000, "Error: dataset 'zmumu': reweight: Input should be 'weights', 'resample' or 'none'"),
        (["--set", "colour=red"], 1000, "Error: dataset 'zmumu': colour: unknown option"),
        (["--set", "noequals"], 1000, "Error: --set expects KEY=VALUE, got 'noequals'"),
        (["--resolution", "-0.1"], 1000, "Error: dataset 'zmumu': resolution: Input should be greater than or equal to 0"),
        ([], 0, "Error: --events must be >= 1, got 0"),
        ([], 1, "Error: zmumu: 1 events at signal_fraction 0.5 leave a class empty"),
    ],
)
def test_bad_generate_input_is_one_line_and_exit_2(runner, cli, tmp_path, extra, events, message):
    out = tmp_path / "x.npz"
    result = generate(runner, cli, out, *extra, events=events)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "generate", "zmumu", "--out", "x.txt"], "Error: --out x.txt: unknown file type '.txt'"),
        (["data", "generate", "zmumuu", "--out", "x.npz"], "Error: unknown dataset 'zmumuu'; known: jets, seal-toy, zmumu"),
        (["data", "generate", "zmumu", "--out", "x.npz", "--seed", "-1"], "Error: --seed must be >= 0, got -1"),
    ],
)
def test_bad_generate_arguments(runner, cli, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, args)
    assert result.exit_code == 2 and result.stderr.startswith(message), result.output
    assert list(tmp_path.iterdir()) == []


def test_inspect_prints_counts_and_mass_widths(runner, cli, zfile):
    result = runner.invoke(cli, ["data", "inspect", str(zfile)])
    assert result.exit_code == 0, result.output
    assert "10,000" in result.stdout and "signal mass in pT slices" in result.stdout
    assert "σ(pT)/pT = 0.05 ⊕ 0.002·pT/GeV" in result.stdout


def test_inspect_json_and_plots(runner, cli, zfile, tmp_path):
    plots = tmp_path / "plots"
    result = runner.invoke(cli, ["data", "inspect", str(zfile), "--plots", str(plots), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["classes"]["signal"]["events"] == 10_000
    assert summary["classes"]["background"]["weight_max"] > 1
    widths = [row["measured_half_width"] for row in summary["mass_width_by_slice"]["slices"]]
    assert widths[-1] > widths[0]
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["fig1_pt_reweighting.png", "fig2_mass_slices.png"]
    for p in plots.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--slices", "50,20"], "Error: slice edges must be increasing positive numbers, got [50.0, 20.0]"),
        (["--slices", "a,b"], "Error: --slices: 'a' is not a number"),
        (["--slice-by", "eta"], "Error: --slice-by: unknown variable 'eta'; known: leading-pt, dimuon-pt"),
    ],
)
def test_bad_inspect_options(runner, cli, zfile, extra, message):
    result = runner.invoke(cli, ["data", "inspect", str(zfile), *extra])
    assert result.exit_code == 2 and result.stderr.startswith(message), result.output


def test_generate_writes_the_target_and_inspect_summarises_it(runner, cli, zfile):
    data = load_events(zfile)
    # the true dimuon (E, px, py, pz), from the float64 generator (p4_true is held as float32)
    np.testing.assert_allclose(data.target, data.p4_true.astype(np.float64).sum(1), rtol=0, atol=1e-4)
    v = vector.array({k: data.target[:, i] for i, k in enumerate(("E", "px", "py", "pz"))})
    result = runner.invoke(cli, ["data", "inspect", str(zfile), "--json"])
    assert result.exit_code == 0, result.output
    target = json.loads(result.stdout)["target"]
    assert target["dim"] == 4
    assert target["mass_median"] == pytest.approx(np.median(v.mass), rel=1e-12)
    assert target["pt_median"] == pytest.approx(np.median(v.pt), rel=1e-12)
    assert 85 < target["mass_median"] < 95  # half the events are Z bosons, half a falling γ* spectrum
    text = runner.invoke(cli, ["data", "inspect", str(zfile)]).stdout
    assert (f"target: 4 values per event (E, px, py, pz): mass median {target['mass_median']:.1f} GeV, "
            f"pT median {target['pt_median']:.1f} GeV") in text


def test_inspect_of_files_without_or_with_a_one_column_target(runner, cli, zfile, tmp_path):
    data = load_events(zfile)
    arrays = {"p4": data.p4, "label": data.label}
    np.savez(tmp_path / "plain.npz", **arrays)
    np.savez(tmp_path / "one.npz", **arrays, target=np.ones(len(data)))
    plain = runner.invoke(cli, ["data", "inspect", str(tmp_path / "plain.npz"), "--json"])
    assert plain.exit_code == 0 and json.loads(plain.stdout)["target"] is None
    assert "target:" not in runner.invoke(cli, ["data", "inspect", str(tmp_path / "plain.npz")]).stdout
    one = runner.invoke(cli, ["data", "inspect", str(tmp_path / "one.npz")])
    assert one.exit_code == 0 and "target: 1 value per event" in one.stdout


def test_inspect_of_a_file_with_one_class_only(runner, cli, zfile, tmp_path):
    """A regression sample (every event label 0): the absent class is shown as "–", not a crash."""
    data = load_events(zfile)
    np.savez(tmp_path / "one-class.npz", p4=data.p4, label=np.zeros(len(data), dtype=np.int64),
             target=np.ones(len(data)))
    text = runner.invoke(cli, ["data", "inspect", str(tmp_path / "one-class.npz")])
    assert text.exit_code == 0, text.output
    assert "weights min / max" in text.stdout and "–" in text.stdout
    out = json.loads(runner.invoke(cli, ["data", "inspect", str(tmp_path / "one-class.npz"), "--json"]).stdout)
    assert out["classes"]["signal"]["events"] == 0 and out["classes"]["signal"]["weight_min"] is None
    assert out["classes"]["background"]["events"] == len(data)
