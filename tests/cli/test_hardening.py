"""Hardening (issue 17): every bad input is one line on stderr with exit code 2, no traceback, and
nothing new or changed on disk; run folders are locked, checked on resume, never escaped."""

import errno
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import tomli_w
import torch
from fake_plugins import FakeEntryPoint, install
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture
from typer.testing import CliRunner

import symfw
import symfw.core.limits as limits
from symfw.cli.app import app
from symfw.core.data import save_events
from symfw.core.registry import get_registry
from symfw.core.runs import FolderLock, safe_dirname


def tiny_spec() -> dict:
    """A hybrid with every component (pfn, minkowski → mlp, leading-pt, weighted-pt) at width 8."""
    spec = get_registry().preset("hybrid")
    return symfw.core.spec.resolve_spec({
        **spec, "name": "tiny", "latent_dim": 4,
        "general": {"encoder": {"name": "pfn", "options": {"phi": [8]}}},
        "invariant": {"invariants": {"name": "minkowski"}, "encoder": {"name": "mlp", "options": {"hidden": [8]}}},
        "combiner": {"name": "weighted-pt", "options": {"hidden": [8]}},
        "head": {"hidden": [8]}, "training": {"epochs": 1, "batch_size": 32},
    }).model_dump(exclude_none=True)


def write_variant(path, changes: dict) -> str:
    """The tiny spec with ``changes`` ({"a.b.c": value}; list items as "a.b[0]") as a TOML file."""
    spec = tiny_spec()
    for key, value in changes.items():
        node, parts = spec, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    path.write_text(tomli_w.dumps(spec))
    return path.name


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A folder with a data file, the tiny spec and one finished run (``done``)."""
    root = tmp_path_factory.mktemp("hardening")
    save_events(toy_events(120), root / "toy.npz")
    write_variant(root / "tiny.toml", {})
    torch.set_num_threads(1)
    here = os.getcwd()
    os.chdir(root)  # the run records the data as the tests give it: toy.npz
    try:
        result = CliRunner().invoke(app, [*TRAIN, "--out", "done"])
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ws(prepared, tmp_path, monkeypatch):
    """A fresh copy of the prepared folder as the working directory; 4 GiB of memory available."""
    work = tmp_path / "ws"
    shutil.copytree(prepared, work)
    monkeypatch.chdir(work)
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 4 * 2**30)
    return work


def snapshot(root) -> dict[str, str]:
    """Every file and folder under ``root``: its content hash (folders: 'dir')."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def refused(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("Error: ") and err == err.splitlines()[0], err
    assert fragment in err, err
    assert "Traceback" not in result.output


def unfinish(run) -> None:
    """Make a finished run look killed before its end, so --resume trains again."""
    (run / "results.json").unlink()
    (run / "fraction-1" / "results.json").unlink()


# --------------------------------------------------------------------------- the table

TRAIN = ["train", "tiny.toml", "--data", "toy.npz", "--device", "cpu", "-q"]
BIG = 10**9


def spec_case(changes):
    return lambda ws: ["train", write_variant(ws / "bad.toml", changes), "--data", "toy.npz", "--out", "r", "-q"]


def plant(path: str, content):
    def prepare(ws):
        target = ws / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if content == "dir":
            target.unlink(missing_ok=True)
            target.mkdir()
        else:
            target.write_text(content if isinstance(content, str) else json.dumps(content))
    return prepare


def then(*steps):
    def prepare(ws):
        args = None
        for step in steps:
            args = step(ws) or args
        return args
    return prepare


def args(*a):
    return lambda ws: list(a)


def huge_p4(scale):
    def prepare(ws):
        d = toy_events(60)
        np.savez(ws / "huge.npz", p4=d.p4 * scale, label=d.label)
    return prepare


OUT_COMMANDS = {
    "train": lambda out: [*TRAIN, "--out", out],
    "compare": lambda out: ["compare", "tiny.toml", "pfn", "--data", "toy.npz", "-q", "--out", out],
    "build": lambda out: ["build", "--preset", "pfn", "-q", "--out", out + "/spec.toml"],
    "data generate": lambda out: ["data", "generate", "zmumu", "--events", "100", "-q", "--out", out + "/z.npz"],
    "inspect --plots": lambda out: ["data", "inspect", "toy.npz", "--plots", out],
    "diagnose": lambda out: ["diagnose", "invariance", "tiny.toml", "--data", "toy.npz", "--events", "20", "--out", out],
    "data convert": lambda out: ["data", "convert", "toy.npz", out + "/toy.h5", "-q"],
}

CASES = {
    # 1. layer sizes inside component options
    "1 pfn phi = [-5]": (spec_case({"general.encoder.options.phi": [-5]}), "general.encoder.options.phi[0]"),
    "1 pfn phi = [0]": (spec_case({"general.encoder.options.phi": [0]}), "general.encoder.options.phi[0]"),
    "1 combiner hidden = [-64, 64]": (spec_case({"combiner.options.hidden": [-64, 64]}), "combiner.options.hidden[0]"),
    "1 invariant mlp hidden = [0]": (spec_case({"invariant.encoder.options.hidden": [0]}),
                                     "invariant.encoder.options.hidden[0]"),
    # 2. sizes beyond the memory available (4 GiB here)
    "2 a hidden layer of 1e9": (spec_case({"head.hidden": [BIG]}), "head.hidden[0] = 1000000000"),
    "2 latent_dim = 1e9": (spec_case({"latent_dim": BIG}), "latent_dim = 1000000000"),
    "2 n_particles = 1e9": (spec_case({"n_particles": BIG}), "n_particles = 1000000000"),
    "2 --seeds 100000": (args("train", "pfn", "--data", "toy.npz", "--seeds", "100000", "--out", "r"),
                         "seeds = 100000"),
    "2 train --events 1e12 of a generator": (args("train", "tiny.toml", "--data", "zmumu", "--events", str(10**12)),
                                             "--events 1000000000000"),
    "2 data generate --events 1e12": (args("data", "generate", "zmumu", "--events", str(10**12), "--out", "z.npz"),
                                      "--events 1000000000000"),
    "2 diagnose an untrained model of 1e9": (
        lambda ws: ["diagnose", "invariance", write_variant(ws / "b.toml", {"general.encoder.options.phi": [BIG]}),
                    "--data", "toy.npz"], "general.encoder.options.phi[0] = 1000000000"),
    # 3. NaN and infinities
    "3 lam = inf": (spec_case({"penalties": [{"name": "seal-group", "lam": float("inf")}]}), "penalties[0].lam"),
    "3 build --lam inf": (args("build", "--preset", "pfn-seal-group", "--lam", "inf"), "penalties[0].lam"),
    "3 max_rapidity = nan": (spec_case({"group.options.max_rapidity": float("nan")}), "group.options.max_rapidity"),
    "3 max_rapidity = inf": (spec_case({"group.options.max_rapidity": float("inf")}), "group.options.max_rapidity"),
    "3 augment rapidity = inf": (spec_case({"training.augment": {"group": "so3", "rapidity": float("inf")}}),
                                 "training.augment.rapidity"),
    "3 --lr inf": (args(*TRAIN, "--lr", "inf", "--out", "r"), "--lr"),
    "3 generate --resolution inf": (args("data", "generate", "zmumu", "--events", "100", "--resolution", "inf",
                                         "--out", "z.npz"), "resolution"),
    "3 generate --resolution 1e300 (inf events)": (args("data", "generate", "zmumu", "--events", "100",
                                                        "--resolution", "1e300", "--out", "z.npz"), "p4"),
    "3 --set z_width=Infinity": (args("data", "generate", "zmumu", "--events", "100", "--set", "z_width=Infinity",
                                      "--out", "z.npz"), "z_width"),
    "3 diagnose --rapidities 0,1000": (args("diagnose", "invariance", "done", "--rapidities", "0,1000", "--out", "inv"),
                                       "--rapidities"),
    # 4. finite in float64, too large for float32
    "4 p4 = 1e300": (then(huge_p4(1e300), args(*TRAIN, "--data", "huge.npz", "--out", "r")), "p4: values beyond"),
    "4 p4 = 1e30": (then(huge_p4(1e30), args(*TRAIN, "--data", "huge.npz", "--out", "r")), "p4: values beyond"),
    # 5. output paths (read-only and full file systems: faults below)
    **{f"5 {name} --out under /proc": (lambda ws, make=make: make("/proc/symfw-out"), "cannot write there")
       for name, make in OUT_COMMANDS.items()},
    **{f"5 {name} --out below a file": (lambda ws, make=make: make("toy.npz/sub"), "toy.npz is a file")
       for name, make in OUT_COMMANDS.items()},
    "5 build --out DIRECTORY": (args("build", "--preset", "pfn", "-q", "--out", "done"), "is a directory"),
    "5 data generate --out DIRECTORY": (then(lambda ws: (ws / "d.npz").mkdir(),
                                             args("data", "generate", "zmumu", "--out", "d.npz")), "is a directory"),
    # 6. threads and processes
    "6 --threads 100000": (args(*TRAIN, "--threads", "100000", "--out", "r"), "--threads must be at most"),
    "6 --ddp 100000": (args(*TRAIN, "--ddp", "100000", "--out", "r"), "--ddp must be at most"),
    "6 --jobs 100000": (args("compare", "tiny.toml", "pfn", "--data", "toy.npz", "--jobs", "100000"),
                        "--jobs must be at most"),
    # 6b. data files: formats and streaming
    "6b --chunk-events 0": (args(*TRAIN, "--stream", "--chunk-events", "0", "--out", "r"), "--chunk-events must be >= 1"),
    "6b --format nope": (args(*TRAIN, "--format", "nope", "--out", "r"), "--format: unknown file format 'nope'"),
    "6b --format of another layout": (args(*TRAIN, "--format", "energyflow", "--out", "r"),
                                      "energyflow npz: missing array 'X'"),
    "6b --stream a generated dataset": (args("train", "tiny.toml", "--data", "zmumu", "--stream", "--out", "r"),
                                        "--stream: is for data files"),
    "6b convert onto its input": (args("data", "convert", "toy.npz", "toy.npz"), "is the input file"),
    "6b convert to .csv": (args("data", "convert", "toy.npz", "toy.csv"), "unknown file type '.csv'"),
    "6b a glob matching nothing": (args(*TRAIN[:3], "nothing-*.h5", "--out", "r"), "no files match"),
    # 7. a folder holding other files
    "7 train into a folder with a results.json": (then(plant("mine/results.json", {"x": 1}),
                                                       args(*TRAIN, "--out", "mine")), "not symfw's"),
    "7 compare into a folder with other files": (then(plant("mine/notes.txt", "mine"), args(
        "compare", "tiny.toml", "pfn", "--data", "toy.npz", "-q", "--out", "mine")), "not symfw's"),
    # 8. checkpoints (the other cases: tests/core/test_checkpoint.py)
    "8 --resume with a directory as checkpoint": (then(lambda ws: unfinish(ws / "done"),
                                                       plant("done/fraction-1/checkpoint.pt", "dir"),
                                                       args(*TRAIN, "--out", "done", "--resume")),
                                                  "not a checkpoint file"),
    "8 diagnose with a directory as checkpoint": (then(plant("done/fraction-1/checkpoint.pt", "dir"),
                                                       args("diagnose", "invariance", "done")), "not a checkpoint file"),
    # 9. run files' JSON structure
    "9 run.json holding [1, 2]": (then(plant("done/run.json", [1, 2]), args(*TRAIN, "--out", "done", "--resume")),
                                  "run.json: not a symfw file"),
    "9 data.json holding a string": (then(plant("done/data.json", "\"x\""), args(*TRAIN, "--out", "done", "--resume")),
                                     "data.json: not a symfw file"),
    "9 results holding {x: 1}": (then(plant("done/fraction-1/results.json", {"x": 1}),
                                      args(*TRAIN, "--out", "done", "--resume")), "results.json: not a symfw results"),
    "9 results not JSON": (then(plant("done/fraction-1/results.json", "{"), args(*TRAIN, "--out", "done", "--resume")),
                           "not valid JSON"),
    "9 run.json settings of the wrong type, in diagnose": (
        then(plant("done/run.json", {"settings": {"seeds": "many"}}), args("diagnose", "invariance", "done")),
        "recorded settings are not valid"),
    "9 compare.json holding a list, in diagnose": (then(plant("cmp/compare.json", [1]),
                                                        args("diagnose", "invariance", "cmp")), "compare.json"),
    # 10. a locked run folder (another process holds it)
    "10 a locked run folder": (then(lambda ws: LOCKS.append(FolderLock(ws / "done").acquire()),
                                    args(*TRAIN, "--out", "done", "--resume")), "another symfw process"),
    "10 a locked new folder": (then(lambda ws: LOCKS.append(FolderLock(ws / "new").acquire()),
                                    args(*TRAIN, "--out", "new")), "another symfw process"),
}
LOCKS: list[FolderLock] = []

FAULTS = {  # (name, errno): the OS's answer to creating or syncing a file in the output folder
    "read-only": ("mkstemp", errno.EROFS),
    "full": ("fsync", errno.ENOSPC),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws, case):
    prepare, fragment = CASES[case]
    try:
        argv = prepare(ws)
        before = snapshot(ws)
        result = CliRunner().invoke(app, argv)
        refused(result, fragment)
        assert snapshot(ws) == before
    finally:
        while LOCKS:
            LOCKS.pop().release()


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_an_unwritable_output_file_system_is_refused_before_any_work(ws, monkeypatch, command, fault):
    name, code = FAULTS[fault]

    def failing(*a, **kw):
        raise OSError(code, os.strerror(code))

    argv = OUT_COMMANDS[command]("out")
    before = snapshot(ws)
    monkeypatch.setattr(tempfile if name == "mkstemp" else os, name, failing)
    result = CliRunner().invoke(app, argv)
    monkeypatch.undo()
    refused(result, os.strerror(code))
    assert snapshot(ws) == before


# --------------------------------------------------------------------------- what runs


def test_a_plugin_raising_system_exit_is_reported_like_other_failures(monkeypatch):
    def exits_on_import():
        raise SystemExit(3)

    def exits_in_hook():
        return type("P", (), {"register_groups": staticmethod(symfw.hookimpl(lambda register: exit(4)))})

    install(monkeypatch, FakeEntryPoint("quitter", exits_on_import), FakeEntryPoint("hooked", exits_in_hook))
    runner = CliRunner()
    listing = runner.invoke(app, ["plugins", "list", "--json"])
    assert listing.exit_code == 0, listing.output
    failures = {f["plugin"]: f["error"] for f in json.loads(listing.stdout)["failures"]}
    assert "SystemExit" in failures["quitter"] and "SystemExit" in failures["hooked"]
    assert runner.invoke(app, ["build", "--preset", "pfn", "--quiet"]).exit_code == 0


@pytest.mark.parametrize("name, folder", [
    ("../../x", "x"), ("/etc/passwd", "etc_passwd"), ("", "spec"), ("..", "spec"), ("a\x00b", "a_b"),
    ("é" * 300, "spec"), ("a" * 300, "a" * 100), ("ok-name_1.2", "ok-name_1.2"),
])
def test_spec_names_become_one_safe_folder(name, folder):
    assert safe_dirname(name) == folder


def test_train_default_folder_stays_in_runs_and_resume_removes_orphaned_tmp_files(ws):
    runner = CliRunner()
    spec = write_variant(ws / "escape.toml", {"name": "../../escape"})
    before = set(snapshot(ws))
    result = runner.invoke(app, ["train", spec, "--data", "toy.npz", "-q"])
    assert result.exit_code == 0, result.output
    new = set(snapshot(ws)) - before
    assert new and all(p == "runs" or p.startswith("runs/escape") for p in new), new
    assert not (ws.parent / "escape").exists() and not (ws.parent.parent / "escape").exists()
    # a killed write leaves .<name>.<random>.tmp files; --resume removes them, under the lock
    run = ws / "runs" / "escape"
    unfinish(run)
    orphans = [run / ".results.json.k1ll3d.tmp", run / "fraction-1" / ".checkpoint.pt.x7.tmp"]
    for path in orphans:
        path.write_bytes(b"half")
    again = runner.invoke(app, ["train", spec, "--data", "toy.npz", "-q", "--resume"])
    assert again.exit_code == 0, again.output
    assert not any(p.exists() for p in orphans) and (run / "results.json").is_file()
    assert (run / ".lock").is_file()  # the lock file stays (and is free again)
    with FolderLock(run):
        pass


def test_a_diverging_run_reports_nan_metrics_instead_of_crashing(ws):
    result = CliRunner().invoke(app, [*TRAIN, "--lr", "1e30", "--out", "r", "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads((ws / "r" / "fraction-1" / "results.json").read_text())
    assert results["members"][0]["final"]["test"]["auc"] is None  # NaN, written as null
    assert "NaN" not in (ws / "r" / "fraction-1" / "results.json").read_text()


def test_training_memory_estimate_names_the_batch_size_and_fits_the_presets(monkeypatch):
    spec = symfw.load_spec("pelican")
    big = spec.model_copy(update={"n_particles": 64, "training": spec.training.model_copy(update={"batch_size": 4096})})
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 2 * 2**30)
    with pytest.raises(symfw.core.errors.UsageError, match="training.batch_size = 4096"):
        limits.check_training(big, members=1, n_train=10**5, n_eval=100, n_events=10**5)
    monkeypatch.setattr(limits, "available_memory", lambda device="cpu": 1 * 2**30)
    for name in ("pfn", "invariant", "hybrid", "pelican"):  # the paper's sizes fit in 1 GiB
        limits.check_training(symfw.load_spec(name), members=3, n_train=12000, n_eval=4000, n_events=20000)


# --------------------------------------------------------------------------- properties

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import symfw.core.executors as executors  # noqa: E402


class ChecksPassed(BaseException):
    """Raised instead of a training too long for a test: every check before training passed."""


NUMBERS = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([0, -1, 2, 10**9, 10**12, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def numeric_fields(obj, path: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [f for k, v in obj.items() for f in numeric_fields(v, f"{path}.{k}" if path else k)]
    if isinstance(obj, list):
        return [f for i, v in enumerate(obj) for f in numeric_fields(v, f"{path}[{i}]")]
    return [path] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def set_field(spec: dict, path: str, value) -> dict:
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    node = spec
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return spec


def property_bases() -> dict[str, dict]:
    """Specs whose numeric fields together cover every built-in component's numeric options."""
    hybrid = tiny_spec()
    hybrid["penalties"] = [{"name": "seal-group", "lam": 0.1, "warmup_epochs": 1}]
    hybrid["training"]["augment"] = {"group": "so3", "rapidity": 0.5, "angle": 1.0}
    pelican = symfw.core.spec.resolve_spec({
        **get_registry().preset("pelican-spurions"), "latent_dim": 4, "head": {"hidden": [8]},
        "penalties": [{"name": "seal-infinitesimal", "lam": 0.1, "options": {"orbit_rapidity": [0, 0.5]}}],
        "training": {"epochs": 1, "batch_size": 32}}).model_dump(exclude_none=True)
    return {"hybrid": hybrid, "pelican": pelican}


BASES = property_bases()
FIELDS = [(name, path) for name, spec in BASES.items() for path in numeric_fields(spec)]


@pytest.fixture
def stub(monkeypatch):
    """Train for real only what is quick (≤ 2 epochs, small models, few particles); elsewhere stop at
    the training, every check before it having passed. ``stub.stop_all`` stops every training."""
    real = executors.train_ensemble

    def train_or_stop(job, tensors, *args, **kwargs):
        spec = job.spec
        built = limits._measured(spec, get_registry(), "build")
        quick = spec.training.epochs <= 2 and spec.n_particles <= 8 and built is not None and built[0] < 50_000
        if stub.stop_all or not quick:
            raise ChecksPassed
        return real(job, tensors, *args, **kwargs)

    def stop(*args, **kwargs):
        raise ChecksPassed

    monkeypatch.setattr(executors, "train_ensemble", train_or_stop)
    monkeypatch.setattr(executors.ProcessExecutor, "map", stop)
    monkeypatch.setattr(symfw.core.distributed, "launch", stop)
    stub.stop_all = False
    stub.count = 0
    return stub


def runs_or_refuses(argv) -> None:
    """symfw ran (exit 0, or stopped at the training) or refused with exit 2: never a crash."""
    try:
        result = CliRunner().invoke(app, argv)
    except ChecksPassed:
        return
    finally:
        torch.set_num_threads(1)  # --threads N changes this process's torch
    assert result.exit_code in (0, 2), (argv, result.output, repr(result.exception))
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        assert result.stderr.strip(), argv


@PROPERTY
@given(field=st.sampled_from(FIELDS), value=NUMBERS)
def test_any_number_in_any_spec_field_runs_or_is_refused(ws, stub, field, value):
    base, path = field
    stub.count += 1
    spec = ws / f"p{stub.count}.toml"
    spec.write_text(tomli_w.dumps(set_field(json.loads(json.dumps(BASES[base])), path, value)))
    runs_or_refuses(["train", spec.name, "--data", "toy.npz", "--out", f"out{stub.count}", "-q", "--device", "cpu"])


def listed(values) -> str:
    return ",".join(str(v) for v in values)


OPTIONS = {
    **{("train", o): lambda out: [*TRAIN, "--out", out] for o in (
        "--events", "--epochs", "--lr", "--batch-size", "--weight-decay", "--seeds", "--seed", "--fractions",
        "--train-pt-max", "--threads", "--ddp")},
    ("train", "--chunk-events"): lambda out: [*TRAIN, "--stream", "--out", out],
    **{("compare", o): lambda out: ["compare", "tiny.toml", "tiny.toml", "--data", "toy.npz", "--seeds", "1", "-q",
                                    "--out", out] for o in ("--retries", "--jobs", "--lr-grid", "--lam-grid")},
    ("build", "--lam"): lambda out: ["build", "--preset", "pfn-seal-group"],
    ("build", "--classes"): lambda out: ["build", "--preset", "pfn", "--task", "multiclass"],
    **{("data generate", o): lambda out: ["data", "generate", "zmumu", "--events", "200", "-q", "--out", out + ".npz"]
       for o in ("--events", "--seed", "--resolution", "--resolution-slope", "--signal-fraction")},
    **{("diagnose", o): lambda out: ["diagnose", "invariance", "done", "--data", "toy.npz", "--events", "40",
                                     "--rapidities", "0,1", "--json"] for o in ("--events", "--seed", "--fraction",
                                                                                  "--rapidities")},
}
LISTS = {"--fractions", "--lr-grid", "--lam-grid", "--rapidities"}


@PROPERTY
@given(option=st.sampled_from(sorted(OPTIONS)), values=st.lists(NUMBERS, min_size=1, max_size=3))
def test_any_number_in_any_numeric_option_runs_or_is_refused(ws, stub, option, values):
    command, name = option
    stub.count += 1
    stub.stop_all = command == "compare"
    text = listed(values) if name in LISTS else str(values[0])
    runs_or_refuses([*OPTIONS[option](f"out{stub.count}"), name, text])
