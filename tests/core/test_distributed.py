"""Data-parallel training (gloo on CPU): agreement with one process, resume, rank 0 writes.

Data-parallel training is the one epoch loop with a DataParallelStepper
(``run_training(..., parallel=info)``).

Two ranks are spawned with :func:`symfw.core.distributed.launch` (torch.multiprocessing, the
environment torchrun would set). Tolerances, for 2 ranks × 3 epochs on 600 toy events:

- float64: every epoch's training loss and validation AUC, and the final test AUC, agree with
  the single-process run of the same global batch size to 1e-9 (measured: ≤ 2e-16);
- float32: training losses agree to 2e-3 relative, the last epoch's validation AUCs and the final
  test AUCs to 0.03. One process normalises with torch's fused batch norm, the ranks with their
  synchronised statistics: the two round differently from the first step, and training amplifies
  it as between two machines. Measured: one member's losses differ by up to 7e-4 relative (the
  same between two single-process runs that differ only in their batch-norm kernels), the other's
  by 3e-7; AUCs of the last epoch by ≤ 0.021. The AUCs of the first epochs, of models barely better
  than chance, are not compared: rounding alone moves them by up to 0.05 — the spread between
  seeds is 0.07.
"""

import json
import math
import os

import pytest
import torch
from toy_events import one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core import distributed as D
from symfw.core.errors import SpecError, SymfwError, UsageError
from symfw.testing import random_events
from symfw.core.training import RunSettings, run_training, with_training_overrides

EVENTS, EPOCHS, SEEDS = 600, 3, 2


def small(preset="hybrid"):
    spec = symfw.load_spec(preset)
    spec = spec.model_copy(update={"head": spec.head.model_copy(update={"hidden": [32, 16]})})
    return with_training_overrides(spec, epochs=EPOCHS, batch_size=64)


SETTINGS = RunSettings(data="toy", seeds=SEEDS)


class Killed(Exception):
    pass


def kill_at(epoch):
    def on_epoch(record):
        if record["epoch"] == epoch:
            raise Killed(f"epoch {epoch}")

    return on_epoch


def ddp(spec, data, settings, out=None, *, info, **kwargs):
    return run_training(spec, data, settings, out, parallel=info, **kwargs)


def forbid_writes():
    """Make every run-directory write of this rank fail (only rank 0 may write)."""
    from symfw.core import runs

    def refuse(*args, **kwargs):
        raise PermissionError(f"rank {os.environ['RANK']} wrote to the run directory")

    runs.atomic_write = runs.atomic_write_json = runs.atomic_write_text = refuse


# --------------------------------------------------------------------------- spawned ranks


def penalised(weighted=True):
    """A small PFN with a deterministic Γ_δ (exact over the generators, no random signs)."""
    spec = small("pfn-seal-infinitesimal")
    options = {"random_signs": False, "weighted": weighted}
    penalty = spec.penalties[0].model_copy(update={"options": options, "lam": 0.1})
    return spec.model_copy(update={"penalties": [penalty]})


def killed_rank(out):
    data = toy_events(EVENTS, weighted=True)
    with D.process_group("cpu") as info:
        on_epoch = kill_at(2) if info.is_main else None
        ddp(small(), data, SETTINGS, out, dtype=torch.float64, info=info, on_epoch=on_epoch)


def main_rank(killed_out, full_out):
    data = toy_events(EVENTS, weighted=True)
    with D.process_group("cpu") as info:
        if not info.is_main:
            forbid_writes()
        resumed = ddp(small(), data, SETTINGS, killed_out, resume=True, dtype=torch.float64, info=info)
        full = ddp(small(), data, SETTINGS, full_out, dtype=torch.float64, info=info)
        f32 = ddp(small(), data, SETTINGS, None, dtype=torch.float32, info=info)
        pen = {w: ddp(penalised(w), data, SETTINGS, None, dtype=torch.float64, info=info)
               for w in (True, False)}
    return {"resumed": resumed, "full": full, "f32": f32, "penalised": pen, "world_size": info.world_size}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    with pytest.raises(SymfwError, match="failed on rank 0: .*Killed: epoch 2"):
        D.launch(2, killed_rank, root / "killed", threads=1)
    killed_lines = (root / "killed" / "fraction-1" / "metrics.jsonl").read_text().splitlines()
    values = D.launch(2, main_rank, root / "killed", root / "full", threads=1)
    return root, killed_lines, values


def single(dtype, spec=None):
    spec = spec if spec is not None else small()
    return run_training(spec, toy_events(EVENTS, weighted=True), SETTINGS, vectorize="no", dtype=dtype)


def curves(results):
    f = results["fractions"][0]
    return f["curves"]["loss"], f["curves"]["val_auc"], [m["final"]["test"]["auc"] for m in f["members"]]


def without_times(results):
    out = json.loads(json.dumps(results))
    for f in out["fractions"]:
        f.pop("train_time_s")
    return out


# --------------------------------------------------------------------------- tests


def test_two_ranks_agree_with_one_process_of_the_same_global_batch_float64(two_ranks):
    _, _, values = two_ranks
    ddp, one = values[0]["full"], single(torch.float64)
    assert values[0]["world_size"] == 2
    f = ddp["fractions"][0]
    assert f["mode"] == "ddp" and f["world_size"] == 2 and "gloo" in f["mode_reason"]
    for a, b in zip(curves(ddp), curves(one)):
        torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                   atol=1e-9, rtol=0)
    assert f["members"][1]["final"]["test"]["auc"] > 0.7  # it learned something
    assert values[1]["full"] == ddp  # every rank returns the same results


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
def test_penalised_training_on_two_ranks_agrees_with_one_process_float64(two_ranks, weighted):
    # penalty passes normalise with the recorded global-batch statistics on every rank, and each
    # rank's penalty is scaled by its share of the batch's weight (or events), so the ranks'
    # shares average to the single-process penalty of the global batch
    _, _, values = two_ranks
    ddp, one = values[0]["penalised"][weighted], single(torch.float64, penalised(weighted))
    for a, b in zip(curves(ddp), curves(one)):
        torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                   atol=1e-9, rtol=0)


def test_two_ranks_agree_with_one_process_float32_within_the_stated_tolerance(two_ranks):
    _, _, values = two_ranks
    (loss_a, auc_a, test_a), (loss_b, auc_b, test_b) = curves(values[0]["f32"]), curves(single(torch.float32))
    torch.testing.assert_close(torch.tensor(loss_a), torch.tensor(loss_b), rtol=2e-3, atol=0)
    for a, b in zip(auc_a[-1] + test_a, auc_b[-1] + test_b):
        assert abs(a - b) < 0.03


def test_killed_run_resumes_to_the_uninterrupted_result_and_only_rank_0_writes(two_ranks):
    root, killed_lines, values = two_ranks
    # killed after epoch 2 (both members, trained one after the other within every step)
    assert [(json.loads(x)["member"], json.loads(x)["epoch"]) for x in killed_lines] == [
        (0, 1), (1, 1), (0, 2), (1, 2)
    ]
    assert without_times(values[0]["resumed"]) == without_times(values[0]["full"])
    metrics = [(root / d / "fraction-1" / "metrics.jsonl").read_text() for d in ("killed", "full")]
    assert metrics[0] == metrics[1]
    # rank 1 had every run-directory write refused, and the runs still completed
    assert (root / "full" / "results.json").is_file() and not list(root.rglob("*.tmp"))


def test_trained_members_load_like_single_process_ones(two_ranks):
    from symfw.core.training import load_members, prepare_split

    root, _, values = two_ranks
    models = load_members(root / "full")
    assert len(models) == SEEDS
    data = toy_events(EVENTS, weighted=True)
    split = prepare_split(data, SETTINGS)
    t = data.subset(split.test).tensors(dtype=torch.float64)
    from symfw.core import metrics as M

    with torch.no_grad():
        logits = models[1].double()(t["p4"], t["mask"]).numpy()
    auc = M.auc(data.label[split.test], logits, data.weight[split.test])
    assert auc == pytest.approx(values[0]["full"]["fractions"][0]["members"][1]["final"]["test"]["auc"], abs=1e-9)


# --------------------------------------------------------------------------- one rank, in process


@pytest.fixture
def one_rank(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(D.free_port()))
    with D.process_group("cpu") as info:
        yield info


@pytest.mark.parametrize("epoch", [1, 2])
def test_resume_after_a_kill(one_rank, tmp_path, epoch):
    data, spec = toy_events(300), small("pfn")
    full = ddp(spec, data, SETTINGS, tmp_path / "full", info=one_rank)
    with pytest.raises(Killed):
        ddp(spec, data, SETTINGS, tmp_path / "r", info=one_rank, on_epoch=kill_at(epoch))
    resumed = ddp(spec, data, SETTINGS, tmp_path / "r", resume=True, info=one_rank)
    assert without_times(resumed) == without_times(full)
    again = ddp(spec, data, SETTINGS, tmp_path / "r", resume=True, info=one_rank)
    assert again == resumed  # a finished run is read back


def test_single_process_and_data_parallel_checkpoints_resume_each_other(one_rank, tmp_path):
    # one checkpoint format: a data-parallel run resumes in one process and vice versa, to the
    # uninterrupted result (float64; one rank computes what one process does)
    data, spec = toy_events(300), small("pfn")
    kw = dict(dtype=torch.float64, vectorize="no")
    full = run_training(spec, data, SETTINGS, tmp_path / "full", **kw)
    with pytest.raises(Killed):
        run_training(spec, data, SETTINGS, tmp_path / "sp", on_epoch=kill_at(1), **kw)
    resumed = ddp(spec, data, SETTINGS, tmp_path / "sp", resume=True, info=one_rank, dtype=torch.float64)
    with pytest.raises(Killed):
        ddp(spec, data, SETTINGS, tmp_path / "dp", info=one_rank, on_epoch=kill_at(1), dtype=torch.float64)
    resumed_sp = run_training(spec, data, SETTINGS, tmp_path / "dp", resume=True, **kw)
    for res in (resumed, resumed_sp):
        for a, b in zip(curves(res), curves(full)):
            torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                       atol=1e-9, rtol=0)


def test_bad_input_is_a_usage_error_on_every_rank(one_rank, tmp_path):
    data = toy_events(300)
    ddp(small("pfn"), data, RunSettings(data="toy", fractions=(0.5,)), tmp_path / "r", info=one_rank)
    with pytest.raises(UsageError, match="already holds a run"):
        ddp(small("pfn"), data, RunSettings(data="toy"), tmp_path / "r", info=one_rank)
    with pytest.raises(SpecError, match="batch_size: Input should be greater than or equal to 2"):
        with_training_overrides(small("pfn"), batch_size=1)
    # each of W ranks needs two events of every batch
    stepper = type("S", (), {"info": D.DistInfo(0, 2, 0, "gloo", torch.device("cpu"))})()
    with pytest.raises(UsageError, match="batch_size 3 is too small for 2 rank"):
        D.DataParallelStepper.steps(stepper, 64, 3)
    assert D.DataParallelStepper.steps(stepper, 64, 4) == D.global_steps(64, 4, 2)


def test_shards_cover_each_global_batch_once():
    for world in (1, 2, 3, 4):
        for n in (2, 7, 64):
            parts = [D.shard(n, D.DistInfo(r, world, r, "gloo", torch.device("cpu"))) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1
    assert D.global_steps(130, 64, 2) == [(0, 64), (64, 128), (128, 130)]
    assert D.global_steps(130, 64, 4) == [(0, 64), (64, 128)]  # 2 events cannot feed 4 ranks


def test_sync_batchnorm_conversion_keeps_names_state_and_outputs():
    model = symfw.build_model(small("hybrid")).double()
    with torch.no_grad():  # values a float32 copy would round
        for mod in model.modules():
            if hasattr(mod, "running_mean"):
                mod.running_mean.normal_()
                mod.weight.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p4 = random_events(32, 2)
    mask = torch.ones(32, 2, dtype=torch.bool)
    model.train()
    out = model(p4, mask)
    model.load_state_dict(before)
    D.convert_sync_batchnorm(model)
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"SyncMaskedBatchNorm", "SyncBatchNorm1d"} <= kinds and "BatchNorm1d" not in kinds
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) and after[k].dtype == before[k].dtype for k in before)
    # without a process group of several ranks the synchronised layers compute what the originals do
    torch.testing.assert_close(model(p4, mask), out, rtol=0, atol=0)
    assert not math.isnan(float(out.detach().sum()))
