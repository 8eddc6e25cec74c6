"""Claims, reservations and the reaper on real databases: the crash windows of a claim.

A claim reserves budget slots under the study's lock, asks Optuna outside it, then records
the trials. A worker can die between any two of those steps; these tests leave the
database as such a worker would and check what the survivors make of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import StudySpec
from search_spaces.study_rows import register_study
from search_spaces.tables import reservations_table, trial_runs_table, workers_table
from worker.claims import (
    claim_trial,
    finish_trial,
    reap_lost_trials,
    release_own_trials,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def storage(worker_storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    """Claims run in workers: their storage, as a worker opens it."""
    return worker_storage


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
    register_study(storage, StudySpec.model_validate(spec))


def register(storage: optuna.storages.RDBStorage, worker_id: str, heartbeat_age: float) -> None:
    at = time.time() - heartbeat_age
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(workers_table).values(
                id=worker_id, host="h", pid=os.getpid(), device="cpu", started_at=at,
                heartbeat_at=at, heartbeat_interval=1.0, state="alive",
            )
        )  # fmt: skip


def reserve(storage: optuna.storages.RDBStorage, study: str, worker_id: str, claim: str) -> None:
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(reservations_table).values(
                study_name=study, worker_id=worker_id, claim=claim, created_at=time.time()
            )
        )


def reserve_as_dead_worker(storage: optuna.storages.RDBStorage, study: str) -> None:
    """A worker that reserved a slot and died before asking Optuna."""
    register(storage, "dead", heartbeat_age=60.0)
    reserve(storage, study, "dead", "c0")


def rows(storage: optuna.storages.RDBStorage, table: sa.Table) -> int:
    with storage.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


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
    assert rows(storage, reservations_table) == 0
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


def test_a_claim_in_flight_is_never_taken_for_an_orphan(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, "s", n_trials=3)
    register(storage, "slow", heartbeat_age=0.0)
    # A live worker reserved and asked, and has not recorded its claim yet: however long
    # that takes (a stalled disk), its trial is not failed while its reservation stands.
    reserve(storage, "s", "slow", "c1")
    in_flight = optuna.load_study(study_name="s", storage=storage).ask()
    for _ in range(3):
        reap_lost_trials(storage, orphan_grace_s=0.0)
    assert states(storage, "s") == ["RUNNING"]
    # A reservation made after the trial was first seen is another claim's, not its own.
    reserve(storage, "s", "slow", "c2")
    with storage.engine.begin() as conn:
        conn.execute(sa.delete(reservations_table).where(reservations_table.c.claim == "c1"))
    reap_lost_trials(storage, orphan_grace_s=0.0)
    frozen = storage.get_trial(in_flight._trial_id)
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["fail_reason"] == "worker lost while claiming"


def test_a_claim_whose_slots_were_freed_meanwhile_records_nothing(
    storage_url: str, storage: optuna.storages.RDBStorage
) -> None:
    """A worker found lost mid-claim (its heartbeat stalled) must not train its trials: its
    slots went back to the study, and another worker may have taken them."""
    make_study(storage, "s", n_trials=1)
    register(storage, "stalled", heartbeat_age=60.0)
    reaper = optuna.storages.RDBStorage(storage_url)  # another worker's process
    asked = []

    # The other worker reaps after the trial is asked, before the claim is recorded.
    def note_ask(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO trials "):
            asked.append(True)

    def reap_once(conn) -> None:  # type: ignore[no-untyped-def]
        if len(asked) == 1:
            asked.append(True)
            reap_lost_trials(reaper, orphan_grace_s=60.0)

    sa.event.listen(storage.engine, "after_cursor_execute", note_ask)
    # On a connection's checkout: outside any transaction (on SQLite, a worker's takes the
    # write lock at BEGIN, which the reaper would wait for).
    sa.event.listen(storage.engine, "engine_connect", reap_once)
    try:
        assert claim_trial(storage, "stalled", "h", "cpu", "s") is None
    finally:
        sa.event.remove(storage.engine, "after_cursor_execute", note_ask)
        sa.event.remove(storage.engine, "engine_connect", reap_once)
        reaper.engine.dispose()
    assert len(asked) == 2  # the reaper did run in between
    (trial,) = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "worker lost while claiming"
    assert rows(storage, trial_runs_table) == 0
    # Its slot is free: a live worker gets the study's one trial.
    register(storage, "live", heartbeat_age=0.0)
    assert claim_trial(storage, "live", "h", "cpu", "s") is not None


ASK_QUEUED = """
import json, pathlib, sys, time
import optuna
from search_spaces.storage import open_storage

url, ready, me, peers = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
study = optuna.load_study(study_name="s", storage=open_storage(url, worker=True))
(ready / me).touch()
while len(list(ready.iterdir())) < peers:  # start asking together
    time.sleep(0.01)
print(json.dumps([study.ask()._trial_id for _ in range(10)]))
"""


@pytest.mark.slow
def test_racing_worker_processes_never_pop_one_queued_trial_twice(
    storage_url: str, storage: optuna.storages.RDBStorage, tmp_path: Path
) -> None:
    """Optuna pops a queued trial by reading it WAITING and then writing RUNNING; on
    SQLite that needs the workers' write lock at BEGIN (without it, about a quarter of
    40 pops went to two workers at once)."""
    make_study(storage, "s", n_trials=40)
    study = optuna.load_study(study_name="s", storage=storage)
    for i in range(40):
        study.enqueue_trial({"eta": 0.3, "gamma": i / 40})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ASK_QUEUED, storage_url, str(ready), str(i), "4"],
            stdout=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        for i in range(4)
    ]
    popped = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    ids = [trial_id for got in popped for trial_id in got]
    assert len(ids) == 40 and len(set(ids)) == 40, sorted(ids)


def test_release_own_trials_gives_up_a_claim_whose_answer_was_lost(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, "s", n_trials=2)
    register(storage, "w", heartbeat_age=0.0)
    claim = claim_trial(storage, "w", "h", "cpu", "s")
    assert claim is not None
    reserve(storage, "s", "w", "c1")  # and a reservation of a claim that broke off
    assert release_own_trials(storage, "w") == 1
    frozen = storage.get_trial(claim.trial._trial_id)
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["fail_reason"] == "claim interrupted by a database error"
    assert rows(storage, reservations_table) == 0
    with storage.engine.connect() as conn:
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
    register_study(storage, StudySpec.model_validate(spec))
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
