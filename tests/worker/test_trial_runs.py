"""A trial's runs, one per seed: each kept, a diverged seed no longer ends the trial, and a
seed's run is the same alone and stacked."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces import StudySpec
from search_spaces.study_rows import register_study
from worker.claims import claim_trials
from worker.stack_run import run_claimed_stacks
from worker.tasks import deep_mlp
from worker.trial_runs import TrialRuns, aggregate, run_seeds

NAN = float("nan")


def test_seeds_are_the_config_seed_and_the_next_ones() -> None:
    assert run_seeds({}, 3) == [0, 1, 2]
    assert run_seeds({"seed": 7}, 2) == [7, 8]


def test_the_trial_reports_an_epoch_once_every_run_going_has_reported_it() -> None:
    told: list[tuple[int, dict[str, Any]]] = []
    runs = TrialRuns([0, 1, 2], lambda e, p: told.append((e, p)))
    reports = [runs.report_for(r) for r in range(3)]
    reports[0](1, {"loss": 1.0})
    reports[1](1, {"loss": 3.0})
    assert told == []
    reports[2](1, {"loss": 5.0})
    assert [e for e, _ in told] == [1] and told[0][1]["loss"] == 3.0
    assert told[0][1]["loss_std"] == pytest.approx(math.sqrt(8 / 3))
    # Seed 1 diverges at epoch 2: that epoch's mean is the other two's, and it ends.
    reports[0](2, {"loss": 0.5})
    reports[1](2, {"loss": NAN})
    assert not runs.done(1, {"loss": NAN, "diverged": True})
    reports[2](2, {"loss": 1.5})
    assert told[1] == (2, {"loss": 1.0, "loss_std": 0.5, "repeats": 2})
    reports[0](3, {"loss": 0.25})
    reports[2](3, {"loss": 0.75})  # seed 1 ended before epoch 3: it holds nothing up
    assert told[2][1]["loss"] == 0.5
    runs.done(0, {"loss": 0.25, "diverged": False})
    assert runs.done(2, {"loss": 0.75, "diverged": False})

    outcome = runs.outcome()
    assert isinstance(outcome, dict)
    assert outcome["loss"] == 0.5 and outcome["repeats"] == 2
    assert outcome["diverged"] is False and outcome["diverged_runs"] == 1
    assert [(r["seed"], r["diverged"]) for r in outcome["runs"]] == [
        (0, False),
        (1, True),
        (2, False),
    ]
    assert [p["loss"] for p in outcome["run_curves"][0]] == [1.0, 0.5, 0.25]
    assert [len(c) for c in outcome["run_curves"]] == [3, 2, 3]


def test_every_seed_diverged_is_a_diverged_trial() -> None:
    runs = TrialRuns([0, 1], None)
    for r in range(2):
        runs.report_for(r)(1, {"loss": NAN})
        runs.done(r, {"loss": NAN, "diverged": True})
    outcome = runs.outcome()
    assert isinstance(outcome, dict) and outcome["diverged"] is True
    assert outcome["diverged_runs"] == 2


def test_what_stops_the_trial_stops_every_run_at_its_next_report() -> None:
    def report(epoch: int, point: dict[str, Any]) -> None:
        if epoch == 2:
            raise optuna.TrialPruned("pruned at epoch 2")

    runs = TrialRuns([0, 1], report)
    a, b = runs.report_for(0), runs.report_for(1)
    a(1, {"loss": 1.0})
    b(1, {"loss": 1.0})
    a(2, {"loss": 1.0})
    with pytest.raises(optuna.TrialPruned):
        b(2, {"loss": 1.0})
    with pytest.raises(optuna.TrialPruned):
        a(3, {"loss": 1.0})
    assert isinstance(runs.outcome(), optuna.TrialPruned)


def test_a_resumed_run_reports_from_the_epoch_it_resumed_at() -> None:
    told: list[int] = []
    runs = TrialRuns([0], lambda e, p: told.append(e))
    for epoch in (12, 13):
        runs.report_for(0)(epoch, {"loss": 1.0})
    assert told == [12, 13]


def test_one_run_is_the_run_itself() -> None:
    assert aggregate([{"loss": 2.0, "diverged": False}]) == {"loss": 2.0, "diverged": False}
    runs = TrialRuns([4], None)
    runs.report_for(0)(1, {"loss": 2.0})
    runs.done(0, {"loss": 2.0, "diverged": False})
    outcome = runs.outcome()
    assert isinstance(outcome, dict)
    # A lone run's curve is the trial's own: its record keeps the seed and result only.
    assert outcome["runs"] == [
        {"seed": 4, "diverged": False, "metrics": {"loss": 2.0, "diverged": False}}
    ]
    assert "run_curves" not in outcome


def _study(storage: optuna.storages.RDBStorage, name: str, **fields: Any) -> None:
    spec = {"name": name, "pruner": {"type": "none"}, "sampler": {"type": "random", "seed": 0},
            **fields}  # fmt: skip
    register_study(storage, StudySpec.model_validate(spec))


def _train(storage: optuna.storages.RDBStorage, name: str, k: int) -> None:
    claims = claim_trials(storage, "w", "h", "cpu", name, k)
    run_claimed_stacks(claims, "cpu", threading.Event())


def test_a_diverged_seed_is_kept_and_the_others_still_run(
    worker_storage: optuna.storages.RDBStorage, make_client: Callable[..., Any]
) -> None:
    config = {"epochs": 3, "diverge_seeds": [1]}
    _study(worker_storage, "seeds", task="quadratic", search_space="paper", n_trials=1,
           repeats=3, task_config=config)  # fmt: skip
    _study(worker_storage, "all", task="quadratic", search_space="paper", n_trials=1,
           repeats=2, task_config={**config, "diverge_seeds": [0, 1]})  # fmt: skip
    _train(worker_storage, "seeds", 1)
    _train(worker_storage, "all", 1)

    (trial,) = optuna.load_study(study_name="seeds", storage=worker_storage).trials
    assert trial.state == TrialState.COMPLETE
    runs = trial.user_attrs["runs"]
    assert [(r["seed"], r["diverged"]) for r in runs] == [(0, False), (1, True), (2, False)]
    assert runs[1]["metrics"]["loss"] is None  # NaN is stored as null
    assert trial.value == pytest.approx(
        (runs[0]["metrics"]["loss"] + runs[2]["metrics"]["loss"]) / 2
    )
    assert trial.user_attrs["metrics"]["diverged_runs"] == 1
    assert [len(c) for c in trial.user_attrs["run_curves"]] == [3, 1, 3]
    assert sorted(trial.intermediate_values) == [1, 2, 3]

    # The API serves the runs: in lists without their curves, in the full record with them.
    client = make_client()
    (listed,) = client.get("/api/v1/studies/seeds/trials").json()["data"]
    assert [(r["seed"], r["diverged"]) for r in listed["runs"]] == [
        (0, False),
        (1, True),
        (2, False),
    ]
    assert "curve" not in listed["runs"][0]
    full = client.get("/api/v1/studies/seeds/trials/0").json()
    assert [len(r["curve"]) for r in full["runs"]] == [3, 1, 3]
    assert full["runs"][2]["metrics"] == runs[2]["metrics"]

    (failed,) = optuna.load_study(study_name="all", storage=worker_storage).trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"] == "diverged"
    assert [r["diverged"] for r in failed.user_attrs["runs"]] == [True, True]


SMALL = {"depth": 4, "width": 16, "epochs": 2, "batch_size": 200}


@pytest.mark.usefixtures("one_torch_thread")
def test_a_seeds_run_is_the_same_alone_and_stacked(
    worker_storage: optuna.storages.RDBStorage,
) -> None:
    space = {"eta": {"type": "categorical", "choices": [0.0, 0.3]}, "gamma": 0.55}
    _study(worker_storage, "stacked", task="deep_mlp", search_space=space, n_trials=2,
           repeats=3, task_config={**SMALL, "seed": 5})  # fmt: skip
    _train(worker_storage, "stacked", 8)  # both trials, six runs, one stack
    trials = optuna.load_study(study_name="stacked", storage=worker_storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        runs = trial.user_attrs["runs"]
        assert [r["seed"] for r in runs] == [5, 6, 7]  # every trial trains the same seeds
        for run in runs:
            alone = deep_mlp.train({**SMALL, "seed": run["seed"]}, eta=trial.params["eta"],
                                   gamma=0.55)  # fmt: skip
            for key in ("train_loss", "val_loss", "val_accuracy"):
                assert run["metrics"][key] == pytest.approx(alone[key], rel=1e-5), key
        accuracies = [r["metrics"]["val_accuracy"] for r in runs]
        assert trial.value == pytest.approx(sum(accuracies) / 3)
