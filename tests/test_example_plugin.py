"""The example plugin package in docs/examples installs and works end to end (as a user would).

It is installed with pip into a temporary folder put on PYTHONPATH, so the project's own
environment is untouched; commands run in subprocesses, as a user runs them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "symfw-beamline"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    env.pop("SYMFW_LOAD_PLUGINS", None)
    return env


def symfw(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "symfw", *args], env=env, capture_output=True, text=True, cwd=cwd)


def test_plugins_list_shows_the_package_name_and_version(env):
    result = symfw(env, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    theirs = {(c["kind"], c["name"]) for c in payload["components"] if c["source"] == "symfw-beamline 0.2.0"}
    assert theirs == {("group", "beam-stabilizer"), ("invariants", "lightcone"), ("context", "max-abs-eta"),
                      ("combiner", "gated")}
    assert payload["failures"] == []


def test_build_with_their_group_and_combiner(env, tmp_path):
    out = tmp_path / "beam.toml"
    result = symfw(env, "build", "--group", "beam-stabilizer", "--combiner", "gated", "--context", "max-abs-eta",
                   "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert 'name = "beam-stabilizer"' in text and 'name = "gated"' in text and "max_null = 1.0" in text


def test_empty_symfw_load_plugins_loads_no_third_party_plugin(env):
    result = symfw({**env, "SYMFW_LOAD_PLUGINS": ""}, "plugins", "list", "--json")
    payload = json.loads(result.stdout)
    assert all(c["source"] == "symfw (built-in)" for c in payload["components"])
    assert {c["name"] for c in payload["components"] if c["kind"] == "group"} >= {"lorentz"}


def test_the_examples_own_tests_pass_with_the_test_kit(env):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                            env=env, capture_output=True, text=True, cwd=EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_train_runs_on_their_spec_with_the_builtin_seal_penalty(env, tmp_path):
    """Their group gets SEAL's Γ_δ through its generators, with no extra code."""
    spec = tmp_path / "beam.toml"
    built = symfw(env, "build", "--group", "beam-stabilizer", "--combiner", "gated", "--context", "max-abs-eta",
                  "--penalty", "seal-infinitesimal", "--lam", "0.1", "--out", str(spec), "--quiet")
    assert built.returncode == 0, built.stderr
    out = tmp_path / "run"
    result = symfw({**env, "OMP_NUM_THREADS": "1"}, "train", str(spec), "--data", "zmumu", "--events", "800",
                   "--epochs", "2", "--seeds", "1", "--out", str(out), "--quiet", "--threads", "1")
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    text = json.dumps(results)
    assert "auc" in text
    aucs = [float(v) for v in _find(results, "auc")]
    assert aucs and all(0.0 <= a <= 1.0 for a in aucs)


def _find(obj, key):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and isinstance(v, (int, float)):
                yield v
            else:
                yield from _find(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find(v, key)
