"""Claims, reservations and the reaper on real databases: the crash windows of a claim.

A claim reserves budget slots under the study's lock, asks Optuna outside it, then records
the trials. A worker can die between any two of those steps; these tests leave the
database as such a worker would and check what the survivors make of it.
"""

from __future__ import annotations

import os
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import StudySpec
from search_spaces.storage import reservations_table, trial_runs_table, workers_table
from service.studies import create_study
from worker.claims import (
    claim_trial,
    finish_trial,
    reap_lost_trials,
    release_own_trials,
)


def make_study(storage: optuna.storages.RDBStorage, name: str, n_trials: int) -> None:
    spec = {
        "name": name,
        "task": "quadratic",
        "search_space": "paper-gamma",
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "max_retries": 1,
    }
    create_study(storage, StudySpec.model_validate(spec))


def register(storage: optuna.storages.RDBStorage, worker_id: str, heartbeat_age: float) -> None:
    at = time.time() - heartbeat_age
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(workers_table).values(
                id=worker_id, host="h", pid=os.getpid(), device="cpu", started_at=at,
                heartbeat_at=at, heartbeat_interval=1.0, state="alive",
            )
        )  # fmt: skip


def reserve_as_dead_worker(storage: optuna.storages.RDBStorage, study: str) -> None:
    """A worker that reserved a slot and died before asking Optuna."""
    register(storage, "dead", heartbeat_age=60.0)
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(reservations_table).values(
                study_name=study, worker_id="dead", claim="c0", created_at=time.time()
            )
        )


def states(storage: optuna.storages.RDBStorage, study: str) -> list[str]:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return [t.state.name for t in trials]


def test_a_dead_workers_reservation_holds_its_slot_until_reaped(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, "s", n_trials=2)
    reserve_as_dead_worker(storage, "s")
    register(storage, "live", heartbeat_age=0.0)
    first = claim_trial(storage, "live", "h", "cpu", "s")
    assert first is not None
    # One slot is the dead worker's: the budget is full although only one trial exists.
    assert claim_trial(storage, "live", "h", "cpu", "s") is None
    reap_lost_trials(storage, orphan_grace_s=60.0)
    with storage.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(reservations_table)).scalar() == 0
        )
    second = claim_trial(storage, "live", "h", "cpu", "s")
    assert second is not None and second.trial.number == 1
    assert claim_trial(storage, "live", "h", "cpu", "s") is None


def test_an_orphan_is_failed_only_after_the_grace_period_and_its_retry_requeued(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, "s", n_trials=3)
    study = optuna.load_study(study_name="s", storage=storage)
    study.enqueue_trial({"eta": 0.3, "gamma": 0.5}, user_attrs={"attempt": 1, "retry_of": 7})
    # A claimer that popped the queued retry and died before recording its claim.
    orphan = study.ask()
    register(storage, "live", heartbeat_age=0.0)
    recorded = claim_trial(storage, "live", "h", "cpu", "s")
    assert recorded is not None

    reap_lost_trials(storage, orphan_grace_s=60.0)  # first sighting: could be a claim in flight
    assert states(storage, "s")[orphan.number] == "RUNNING"
    reap_lost_trials(storage, orphan_grace_s=0.0)
    frozen = storage.get_trial(orphan._trial_id)
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["fail_reason"] == "worker lost while claiming"
    # The recorded claim is untouched; the popped retry is queued again, attempt unchanged.
    assert storage.get_trial(recorded.trial._trial_id).state == TrialState.RUNNING
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"], t.user_attrs["attempt"]) for t in waiting] == [
        ({"eta": 0.3, "gamma": 0.5}, 1)
    ]


def test_release_own_trials_gives_up_a_claim_whose_answer_was_lost(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, "s", n_trials=2)
    register(storage, "w", heartbeat_age=0.0)
    claim = claim_trial(storage, "w", "h", "cpu", "s")
    assert claim is not None
    with storage.engine.begin() as conn:  # and a reservation of a claim that broke off
        conn.execute(
            sa.insert(reservations_table).values(
                study_name="s", worker_id="w", claim="c1", created_at=time.time()
            )
        )
    assert release_own_trials(storage, "w") == 1
    frozen = storage.get_trial(claim.trial._trial_id)
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["fail_reason"] == "claim interrupted by a database error"
    with storage.engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(reservations_table)).scalar() == 0
        )
        run = conn.execute(
            sa.select(trial_runs_table).where(trial_runs_table.c.trial_id == claim.trial._trial_id)
        ).one()
    assert run.counted is False or run.counted == 0
    # Not the trial's fault: its parameters come back with the same attempt, and both
    # slots are free again (the given-up trial holds none).
    retry = claim_trial(storage, "w", "h", "cpu", "s")
    assert retry is not None and retry.trial.params == claim.trial.params
    assert retry.attempt == 0
    assert claim_trial(storage, "w", "h", "cpu", "s") is not None


def test_a_result_for_a_trial_reaped_meanwhile_is_refused_and_changes_nothing(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, "s", n_trials=2)
    register(storage, "slow", heartbeat_age=0.0)
    claim = claim_trial(storage, "slow", "h", "cpu", "s")
    assert claim is not None
    with storage.engine.begin() as conn:  # the worker goes silent
        conn.execute(sa.update(workers_table).values(heartbeat_at=time.time() - 60))
    assert reap_lost_trials(storage) == 1
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        finish_trial(claim, TrialState.COMPLETE, 0.5, metrics={"loss": 0.5}, wall_time_s=1.0)
    frozen = storage.get_trial(claim.trial._trial_id)
    assert frozen.state == TrialState.FAIL
    assert "metrics" not in frozen.user_attrs and "wall_time_s" not in frozen.user_attrs
    assert frozen.user_attrs["fail_reason"].startswith("worker slow lost")


def test_a_claim_records_who_runs_it_and_a_result_its_attributes(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, "s", n_trials=1)
    register(storage, "w", heartbeat_age=0.0)
    claim = claim_trial(storage, "w", "node7", "cuda:1", "s")
    assert claim is not None
    attrs = storage.get_trial(claim.trial._trial_id).user_attrs
    assert attrs == {"worker": "w", "host": "node7", "device": "cuda:1", "attempt": 0}
    curve = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": float("nan")}]
    finish_trial(claim, TrialState.COMPLETE, 1.5, metrics={"loss": 1.5}, curve=curve,
                 wall_time_s=2.34567)  # fmt: skip
    frozen = storage.get_trial(claim.trial._trial_id)
    assert frozen.state == TrialState.COMPLETE and frozen.value == 1.5
    assert frozen.user_attrs["metrics"] == {"loss": 1.5}
    assert frozen.user_attrs["curve"][1] == {"epoch": 2, "loss": None}  # JSON has no NaN
    assert frozen.user_attrs["wall_time_s"] == 2.346
    with storage.engine.connect() as conn:
        worker = conn.execute(sa.select(workers_table).where(workers_table.c.id == "w")).one()
    assert (worker.study_name, worker.trial_number) == ("s", 0)


def test_the_last_point_of_a_grid_is_recorded_without_error(
    storage: optuna.storages.RDBStorage,
) -> None:
    # GridSampler stops the study once every point was tried, which Optuna allows only
    # inside optimize(); a worker's last result must still be recorded cleanly.
    spec = {
        "name": "grid",
        "task": "quadratic",
        "search_space": "paper",
        "n_trials": 3,
        "sampler": {"type": "grid"},
        "pruner": {"type": "none"},
    }
    create_study(storage, StudySpec.model_validate(spec))
    register(storage, "w", heartbeat_age=0.0)
    seen = set()
    for _ in range(3):
        claim = claim_trial(storage, "w", "h", "cpu", "grid")
        assert claim is not None
        seen.add(claim.trial.params["eta"])
        finish_trial(claim, TrialState.COMPLETE, 1.0)
    assert len(seen) == 3
    assert states(storage, "grid") == ["COMPLETE"] * 3


@pytest.mark.parametrize("told_by", ["worker", "optuna"])
def test_results_are_told_as_study_tell_tells_them(
    storage: optuna.storages.RDBStorage, told_by: str
) -> None:
    make_study(storage, "s", n_trials=3)
    register(storage, "w", heartbeat_age=0.0)
    pruned, done, failed = (claim_trial(storage, "w", "h", "cpu", "s") for _ in range(3))
    assert pruned is not None and done is not None and failed is not None
    pruned.trial.report(0.9, 1)
    pruned.trial.report(0.7, 2)
    if told_by == "worker":
        finish_trial(pruned, TrialState.PRUNED, None)
        finish_trial(done, TrialState.COMPLETE, 0.25)
        finish_trial(failed, TrialState.FAIL, None, fail_reason="diverged")
    else:
        pruned.study.tell(pruned.trial, state=TrialState.PRUNED)
        done.study.tell(done.trial, 0.25)
        failed.study.tell(failed.trial, state=TrialState.FAIL)
    p, d, f = (storage.get_trial(c.trial._trial_id) for c in (pruned, done, failed))
    assert (p.state, p.value) == (TrialState.PRUNED, 0.7)  # the last reported value
    assert (d.state, d.value, d.datetime_complete is not None) == (TrialState.COMPLETE, 0.25, True)
    assert (f.state, f.value, f.datetime_complete is not None) == (TrialState.FAIL, None, True)
    if told_by == "worker":
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            finish_trial(done, TrialState.COMPLETE, 0.5)
        assert storage.get_trial(done.trial._trial_id).value == 0.25
