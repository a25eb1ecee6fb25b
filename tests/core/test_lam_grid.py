"""λ chosen on validation (``run_compare(lam_grid=...)``, ``symfw compare --lam-grid``): the same
number of trainings for every spec, the choice on the validation split only, processes change nothing."""

import json
import math
from pathlib import Path

import pytest
import torch
from toy_events import comparable, one_thread, toy_events  # noqa: F401 - one_thread: autouse fixture

import symfw
from symfw.core import executors as X
from symfw.core.compare import BUDGET_RULE, check_lam_grid, run_compare, search_plan, select_on_validation
from symfw.core.errors import UsageError
from symfw.core.spec import PenaltyRef
from symfw.core.training import RunSettings, member_seeds, with_training_overrides

SETTINGS = RunSettings(data="toy", seeds=2)
LAMS = [10.0, 0.0, 1.0]  # given unsorted: the grid is sorted


def small(preset, name, penalty=None):
    spec = symfw.load_spec(preset)
    update = {"name": name, "head": spec.head.model_copy(update={"hidden": [16]})}
    if penalty is not None:
        update["penalties"] = [PenaltyRef(name=penalty, lam=1.0)]
    return with_training_overrides(spec.model_copy(update=update), epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def data():
    return toy_events(300, weighted=True)


@pytest.fixture(scope="module")
def specs():
    return [small("pfn", "base"), small("pfn", "sealed", "seal-group")]


@pytest.fixture(scope="module")
def reference(specs, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lam") / "cmp"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return out, run_compare(specs, data, SETTINGS, out, vectorize="no", plots=False, lam_grid=LAMS)
    finally:
        torch.set_num_threads(threads)


def main_fraction(out: Path, run: str) -> dict:
    return json.loads((out / run / "results.json").read_text())["fractions"][0]


def test_every_spec_gets_the_same_number_of_trainings_and_keeps_its_best_on_validation(reference):
    out, summary = reference
    selection = summary["selection"]
    assert selection["lam_grid"] == [0.0, 1.0, 10.0] and selection["grid"] is None
    assert selection["budget"] == {"trials_per_spec": 3, "rule": BUDGET_RULE}
    base, sealed = selection["specs"]["base"], selection["specs"]["sealed"]
    assert [t["run"] for t in base["trials"]] == [f"base/seeds-{r}" for r in range(3)]
    assert [t["run"] for t in sealed["trials"]] == ["sealed/lam-0", "sealed/lam-1", "sealed/lam-10"]
    # each penalised trial trained with its λ, the spec's other settings unchanged
    for t in sealed["trials"]:
        spec = symfw.load_spec(out / t["run"] / "spec.toml")
        assert [p.lam for p in spec.penalties] == [t["lam"]] and t["seed_replica"] is None
    # the baseline's trials are seed replicas: replica 0 shares every spec's seeds, the others are fresh
    seeds = [[m["seed"] for m in main_fraction(out, t["run"])["members"]] for t in base["trials"]]
    assert seeds[0] == member_seeds(SETTINGS.seed, 2) == [m["seed"] for m in main_fraction(out, "sealed/lam-1")["members"]]
    assert len({s for member in seeds for s in member}) == 6
    run_json = [json.loads((out / t["run"] / "run.json").read_text())["settings"] for t in base["trials"]]
    assert "trial" not in run_json[0] and [r["trial"] for r in run_json[1:]] == [1, 2]
    # λ = 0 is the baseline itself: the same seeds and data, so the same training, to the bit
    assert sealed["trials"][0]["val_auc"] == base["trials"][0]["val_auc"]
    assert sealed["trials"][1]["val_auc"] != sealed["trials"][0]["val_auc"]
    for name, entry in selection["specs"].items():
        for t in entry["trials"]:  # each trial's score is its members' mean final validation AUC
            val = [m["final"]["val"]["auc"] for m in main_fraction(out, t["run"])["members"]]
            assert t["val_auc"] == pytest.approx(sum(val) / len(val))
        best = max(entry["trials"], key=lambda t: t["val_auc"])
        assert entry["run"] == best["run"]
        row = next(r for r in summary["rows"] if r["spec"] == name)
        assert (row["lam"], row["seed_replica"]) == (best["lam"], best["seed_replica"])
        chosen = main_fraction(out, best["run"])["summary"]["final_test"]["auc"]["mean"]
        assert row["final_test_auc"]["mean"] == pytest.approx(chosen)


def test_lam_grid_in_two_processes_gives_the_results_of_one_after_the_other(specs, data, reference, tmp_path):
    _, ref = reference
    summary = run_compare(specs, data, SETTINGS, tmp_path, vectorize="no", plots=False, lam_grid=LAMS,
                          executor=X.ProcessExecutor(jobs=2, threads=1))
    assert comparable(summary) == comparable(ref)


def fake_result(val: float | None, test: float | None) -> dict:
    """A run's results with one member: only what selection may read, plus a test value it must not."""
    final = {"val": {"auc": val}}
    if test is not None:
        final["test"] = {"auc": test}
    return {"fractions": [{"fraction": 1.0, "primary": "auc", "direction": "max", "lr": 1e-3,
                           "members": [{"final": final}]}]}


def test_the_choice_reads_validation_and_never_test(specs):
    plans = search_plan(specs, None, [0.1, 1.0, 10.0])
    # validation prefers λ = 10 and seed replica 1, test the opposite: validation wins
    chosen, selection = select_on_validation(
        [[fake_result(0.70, 0.90), fake_result(0.80, 0.60), fake_result(0.75, 0.99)],
         [fake_result(0.60, 0.95), fake_result(0.61, 0.90), fake_result(0.90, 0.10)]],
        plans, ["base", "sealed"], None, [0.1, 1.0, 10.0])
    assert selection["specs"]["base"]["seed_replica"] == 1 and selection["specs"]["sealed"]["lam"] == 10.0
    assert chosen[1]["fractions"][0]["members"][0]["final"]["test"]["auc"] == 0.10
    # results without any test metric choose the same: test is never read; a NaN trial never wins
    _, again = select_on_validation(
        [[fake_result(0.70, None), fake_result(0.80, None), fake_result(math.nan, None)],
         [fake_result(0.60, None), fake_result(0.61, None), fake_result(0.90, None)]],
        plans, ["base", "sealed"], None, [0.1, 1.0, 10.0])
    assert {n: e["run"] for n, e in again["specs"].items()} == {"base": "base/seeds-1", "sealed": "sealed/lam-10"}
    assert again["specs"]["base"]["trials"][2]["val_auc"] is None


def test_with_both_grids_every_spec_trains_lr_times_lam_grid(specs):
    plans = search_plan(specs, [1e-3, 3e-3], [0.1, 1.0])
    assert [len(p) for p in plans] == [4, 4]
    assert [t.folder for t in plans[0]] == ["lr-0.001-seeds-0", "lr-0.001-seeds-1", "lr-0.003-seeds-0",
                                            "lr-0.003-seeds-1"]
    assert [t.folder for t in plans[1]] == ["lr-0.001-lam-0.1", "lr-0.001-lam-1", "lr-0.003-lam-0.1", "lr-0.003-lam-1"]
    spec = plans[1][3].apply(specs[1])
    assert spec.training.lr == 3e-3 and spec.penalties[0].lam == 1.0


@pytest.mark.parametrize("grid, message", [
    ([], "the λ grid (--lam-grid) is empty"),
    ([0.1, -1.0], "needs finite numbers >= 0, got -1"),
    ([math.nan], "needs finite numbers >= 0, got nan"),
    ([1.0, math.inf], "needs finite numbers >= 0, got inf"),
    ([1.0, 0.5, 1.0], "gives 1 more than once"),
    ([1.0, 1.0000001], "has values too close to tell apart (lam-1, lam-1)"),
])
def test_bad_lam_grids_are_refused(grid, message):
    with pytest.raises(UsageError) as err:
        check_lam_grid(grid)
    assert message in str(err.value)


def test_a_lam_grid_without_penalties_or_with_matched_init_is_refused_before_anything_is_written(specs, data, tmp_path):
    with pytest.raises(UsageError, match="none of the compared specs has a penalty"):
        run_compare([specs[0], specs[0]], data, SETTINGS, tmp_path / "a", lam_grid=[1.0])
    with pytest.raises(UsageError, match="--lam-grid and --matched-init do not combine"):
        run_compare(specs, data, RunSettings(data="toy", matched_init=True), tmp_path / "b", lam_grid=[1.0])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_seed_replicas_leave_replica_0_and_old_records_unchanged():
    assert member_seeds(7, 3, 0) == member_seeds(7, 3)
    assert not set(member_seeds(7, 3, 1)) & set(member_seeds(7, 3)) and member_seeds(7, 3, 1) != member_seeds(7, 3, 2)
    assert "trial" not in RunSettings().record() and RunSettings(trial=2).record()["trial"] == 2
    assert RunSettings.from_record(RunSettings(trial=2).record()).trial == 2
    with pytest.raises(UsageError, match="trial must be an integer"):
        RunSettings(trial=-1)
