"""The typed checkpoint: round trip, and refusal of damaged or foreign files with one line
(in the API, on ``symfw train --resume`` and in ``symfw diagnose``)."""

import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture
from typer.testing import CliRunner

import symfw
from symfw.core.checkpoint import Checkpoint, CheckpointError
from symfw.core.data import save_events
from symfw.core.training import RunSettings, load_members, run_training, with_training_overrides


def small():
    spec = symfw.load_spec("pfn")
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [16]})})
    return with_training_overrides(spec, epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck") / "run"
    run_training(small(), toy_events(300), RunSettings(data="toy", seeds=2), out)
    return out


def ckpt_path(run):
    return run / "fraction-1" / "checkpoint.pt"


def copy_run(run, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def test_round_trip_keeps_every_field(run, tmp_path):
    ck = Checkpoint.load(ckpt_path(run))
    assert ck.epoch == 2 and len(ck.seeds) == 2 and len(ck.history) == 2
    ck.save(tmp_path / "again.pt")
    again = Checkpoint.load(tmp_path / "again.pt")
    assert again.checksum() == ck.checksum()
    assert all(torch.equal(again.params[k], v) for k, v in ck.params.items())
    assert again.best_epoch == ck.best_epoch and again.history == ck.history


def flip_a_byte_inside(path, tensor: torch.Tensor):
    raw = bytearray(path.read_bytes())
    needle = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()[:32]
    at = raw.find(needle)
    assert at > 0, "tensor bytes not found in the file"
    raw[at + 5] ^= 0x10  # one bit of a mantissa: still a finite float
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_the_tensor_data_is_refused(run, tmp_path):
    target = copy_run(run, tmp_path)
    ck = Checkpoint.load(ckpt_path(target))
    flip_a_byte_inside(ckpt_path(target), next(iter(ck.params.values())))
    with pytest.raises(CheckpointError, match="do not match the recorded checksum"):
        Checkpoint.load(ckpt_path(target))
    with pytest.raises(CheckpointError, match="checksum"):
        load_members(target)


def structure_cases(ck: Checkpoint):
    name = next(iter(ck.params))
    record = lambda **kw: {"format": "symfw-checkpoint", "version": 2, "checksum": ck.checksum(),  # noqa: E731
                           **{**ck.__dict__, **kw}}
    wrong_shape = {**ck.params, name: ck.params[name][:, :1]}
    nan = {**ck.params, name: torch.full_like(ck.params[name], float("nan"))}
    missing = dict(record())
    missing.pop("optimizer")
    return {
        "a foreign dict": ({"state_dict": ck.params}, "not a symfw checkpoint"),
        "a list": ([1, 2], "not a symfw checkpoint"),
        "another version": ({**record(), "version": 1}, "format version 1"),
        "a missing key": (missing, "missing optimizer"),
        "a wrong shape": (record(params=wrong_shape), f"params.{name} is"),
        "a NaN weight": (record(params=nan), f"params.{name} holds NaN"),
        "a short history": (record(history=ck.history[:1]), "history must hold one record per epoch"),
    }


@pytest.mark.parametrize("case", ["a foreign dict", "a list", "another version", "a missing key", "a wrong shape",
                                  "a NaN weight", "a short history"])
def test_a_checkpoint_of_the_wrong_structure_is_refused(run, tmp_path, case):
    target = copy_run(run, tmp_path)
    ck = Checkpoint.load(ckpt_path(target))
    content, message = structure_cases(ck)[case]
    torch.save(content, ckpt_path(target))
    spec = symfw.load_spec(target / "spec.toml")
    from symfw.core.ensemble import Ensemble

    with pytest.raises(CheckpointError, match=message):
        Checkpoint.load(ckpt_path(target), Ensemble(spec, [0]).member_shapes())


def test_a_directory_or_garbage_in_place_of_the_checkpoint_is_refused(tmp_path):
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint file"):
        Checkpoint.load(tmp_path / "dir.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        Checkpoint.load(tmp_path / "junk.pt")


@pytest.fixture
def cli():
    from symfw.cli.app import app

    return app


def test_resume_and_diagnose_refuse_a_damaged_checkpoint_with_one_line(run, tmp_path, cli):
    data = tmp_path / "toy.npz"
    save_events(toy_events(300), data)
    spec = tmp_path / "spec.toml"
    symfw.write_spec(symfw.load_spec(run / "spec.toml"), spec)
    out = tmp_path / "r"
    runner = CliRunner()
    first = runner.invoke(cli, ["train", str(spec), "--data", str(data), "--seeds", "2", "--out", str(out), "-q",
                                "--device", "cpu"])
    assert first.exit_code == 0, first.output
    (out / "results.json").unlink()  # as if killed before the end
    (out / "fraction-1" / "results.json").unlink()
    ck = Checkpoint.load(ckpt_path(out))
    flip_a_byte_inside(ckpt_path(out), ck.params[sorted(ck.params)[-1]])
    for args in (["train", str(spec), "--data", str(data), "--seeds", "2", "--out", str(out), "--resume", "-q",
                  "--device", "cpu"],
                 ["diagnose", "invariance", str(out), "--data", str(data), "--out", str(tmp_path / "inv")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        err = result.stderr.strip()
        assert err == err.splitlines()[0] and "checksum" in err and "Traceback" not in result.output, err
