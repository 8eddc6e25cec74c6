"""A stack's recorder on real databases: waiting reports go together, outcomes to each member."""

from __future__ import annotations

import threading

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import StudySpec
from search_spaces.study_rows import register_study
from worker.claims import Claim, claim_trial
from worker.stack_run import _Recorder, plan_stacks
from worker.trial_log import TrialOutput


@pytest.fixture
def storage(worker_storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    return worker_storage


def claims(storage: optuna.storages.RDBStorage, n: int) -> list[Claim]:
    spec = {
        "name": "recorded",
        "task": "quadratic",
        "search_space": "paper-gamma",
        "n_trials": n,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
    }
    register_study(storage, StudySpec.model_validate(spec))
    claimed = [claim_trial(storage, "w", "h", "cpu", "recorded") for _ in range(n)]
    assert all(c is not None for c in claimed)
    return claimed  # type: ignore[return-value]


def test_waiting_reports_go_in_one_transaction_and_stop_only_their_member(
    storage: optuna.storages.RDBStorage,
) -> None:
    group = claims(storage, 6)
    recorder = _Recorder(group, threading.Event(), TrialOutput(group), None)
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(storage.engine, "commit", count)
    try:
        gate = threading.Event()
        recorder.pool.submit(gate.wait)  # the recorder is busy while the epoch ends
        for i in range(6):
            recorder.report_for(i)(1, {"loss": float(i)})
        # Meanwhile a reaper gave trial 4 up as lost.
        storage.set_trial_state_values(group[4].trial._trial_id, TrialState.FAIL)
        commits.clear()
        gate.set()
        epoch_1 = recorder.last[5]
        assert epoch_1 is not None
        epoch_1.result()
        assert len(commits) == 1  # six reports, one transaction
        stopped = []
        for i in range(6):  # epoch 2 waits for epoch 1's reports, and learns what they decided
            try:
                recorder.report_for(i)(2, {"loss": float(i) / 2})
            except optuna.exceptions.UpdateFinishedTrialError:
                stopped.append(i)
        recorder.close()
    finally:
        sa.event.remove(storage.engine, "commit", count)
    assert stopped == [4]
    values = [
        storage.get_trial(c.trial._trial_id).intermediate_values for c in group
    ]  # fmt: skip
    assert values[4] == {}
    assert values[:4] + values[5:] == [{1: float(i), 2: i / 2} for i in (0, 1, 2, 3, 5)]
    assert [len(curve) for curve in recorder.curves] == [2, 2, 2, 2, 1, 2]


def test_retries_are_grouped_by_where_they_resume(storage: optuna.storages.RDBStorage) -> None:
    group = claims(storage, 6)
    mark = {"epoch": 2, "data": "own"}
    saved = {
        group[1].trial.number: {"stack": mark},
        group[2].trial.number: {"stack": mark},
        group[3].trial.number: {"stack": {**mark, "epoch": 3}},
        group[4].trial.number: {"model": {}, "epoch": 2},  # a lone run's: it resumes alone
    }
    planned = plan_stacks(group, lambda config: (), saved)
    numbers = [[c.trial.number for c in g] for g in planned]
    n = [c.trial.number for c in group]
    assert numbers == [[n[0], n[5]], [n[1], n[2]], [n[3]], [n[4]]]
