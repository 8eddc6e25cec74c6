"""Contained failures on real databases: a broken study fails its trials, never its worker.

A spec stored before today's checks can still hold a sampler option that only breaks while
sampling; a trainer can raise on import. Each such trial fails with the exception's type
and message, the worker goes on, and after `max_consecutive_failures` in a row the study is
stopped as failed until its owner resumes it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import optuna
import pytest
import sqlalchemy as sa

from search_spaces import StudySpec
from search_spaces.study_rows import (
    StudyRow,
    get_study_row,
    register_study,
    set_study_status,
    study_progress,
    study_status,
)
from search_spaces.tables import studies_table
from worker.claims import claim_trial
from worker.runner import Worker
from worker.study_failures import update_streak
from worker.trial_run import run_claimed_trial


def _study(storage: optuna.storages.RDBStorage, name: str) -> tuple[StudyRow, str, dict[str, int]]:
    """The study's row, its status as the API shows it, and its trials by state."""
    row = get_study_row(storage.engine, name)
    assert row is not None
    progress = study_progress(storage.engine, name, row.study_id)
    return row, study_status(row, progress), progress.by_state


@pytest.fixture
def storage(worker_storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    return worker_storage


def _spec(name: str, n_trials: int = 6, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": "quadratic",
        "task_config": {"epochs": 2},
        "search_space": "paper-gamma",
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "max_retries": 1,
        **extra,
    }


def _store_unchecked(storage: optuna.storages.RDBStorage, name: str, **changes: Any) -> None:
    """A study whose stored spec holds what today's submission checks would refuse, as a
    spec stored by an earlier release can."""
    register_study(storage, StudySpec.model_validate(_spec(name)))
    spec = {**_spec(name), **changes}
    with storage.engine.begin() as conn:
        conn.execute(
            sa.update(studies_table)
            .where(studies_table.c.name == name)
            .values(spec=json.dumps({**spec, "metric": "loss", "direction": "minimize"}))
        )


def _fail_reasons(storage: optuna.storages.RDBStorage, name: str) -> list[str]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [
        str(t.user_attrs.get("fail_reason"))
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "FAIL"
    ]


POISON_TPE = {"type": "tpe", "seed": 0, "options": {"n_startup_trials": 0, "gamma": 0.25}}


def test_a_sampler_that_breaks_while_sampling_fails_the_trial_not_the_claim(
    storage: optuna.storages.RDBStorage,
) -> None:
    _store_unchecked(storage, "poison", sampler=POISON_TPE)
    claim = claim_trial(storage, "w", "h", "cpu", None)
    assert claim is not None and isinstance(claim.error, TypeError)
    run_claimed_trial(claim, "cpu", threading.Event())
    [reason] = _fail_reasons(storage, "poison")
    assert reason.startswith("sampler or pruner failed: TypeError: ")
    assert "not callable" in reason
    # Retried with the parameters it was queued with (none), not the stand-in ones.
    waiting = optuna.load_study(study_name="poison", storage=storage).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.WAITING,)
    )
    assert len(waiting) == 1 and waiting[0].params == {}


def test_a_worker_fails_a_broken_study_and_goes_on_to_the_next(
    storage: optuna.storages.RDBStorage,
) -> None:
    _store_unchecked(storage, "poison", sampler=POISON_TPE, priority=5)
    register_study(storage, StudySpec.model_validate(_spec("healthy", n_trials=3)))
    worker = Worker(str(storage.engine.url.render_as_string(False)), "cpu", None, 5.0)
    assert worker.run(max_trials=None, exit_when_idle=True) == 0

    poison, status, counts = _study(storage, "poison")
    assert status == "failed"
    assert counts["FAIL"] == 3  # one worker: exactly the limit, then no more claims
    assert poison.fail_reason is not None
    assert "3 trials in a row" in poison.fail_reason and "TypeError" in poison.fail_reason
    assert _study(storage, "healthy")[1] == "completed"


def test_the_streak_counts_exceptions_in_a_row_and_a_result_ends_it(
    storage: optuna.storages.RDBStorage,
) -> None:
    register_study(storage, StudySpec.model_validate(_spec("s")))

    def apply(effect: Any) -> bool:
        with storage.engine.begin() as conn:
            return update_streak(conn, "s", effect, 3, "ImportError: no module named 'x'")

    assert [apply("exception"), apply("exception"), apply(None)] == [False, False, False]
    assert apply("result") is False  # a trial with a result of its own ends the streak
    assert [apply("exception"), apply("exception")] == [False, False]
    assert get_study_row(storage.engine, "s").status == "running"  # type: ignore[union-attr]
    assert apply("exception") is True
    row = get_study_row(storage.engine, "s")
    assert row is not None and row.status == "failed"
    assert row.fail_reason == (
        "stopped after 3 trials in a row failed with an exception; "
        "last: ImportError: no module named 'x'"
    )
    assert apply("exception") is False  # failed once; later failures change nothing

    set_study_status(storage.engine, "s", "running")  # resume clears the failure
    row = get_study_row(storage.engine, "s")
    assert row is not None and row.status == "running" and row.fail_reason is None
    assert [apply("exception"), apply("exception")] == [False, False]


def test_a_database_error_in_training_does_not_count_toward_the_streak() -> None:
    from worker.study_failures import counts_as_failure

    assert counts_as_failure(ImportError("x")) and counts_as_failure(RuntimeError("x"))
    assert not counts_as_failure(sa.exc.OperationalError("SELECT 1", {}, Exception("down")))
    assert not counts_as_failure(optuna.exceptions.StorageInternalError("lost connection"))


@pytest.mark.parametrize(
    ("sampler", "pruner"),
    [
        ({"type": "tpe", "options": {"n_startup_trials": "abc"}}, {"type": "none"}),
        ({"type": "tpe", "options": {"constraints_func": "x"}}, {"type": "none"}),
        ({"type": "cmaes", "options": {"independent_sampler": {}}}, {"type": "none"}),
        ({"type": "random"}, {"type": "hyperband", "options": {"reduction_factor": "x"}}),
    ],
    ids=["tpe-startup-text", "tpe-constraints-text", "cmaes-sampler-dict", "hyperband-text"],
)
def test_no_stored_poison_option_stops_a_worker(
    storage: optuna.storages.RDBStorage, sampler: dict[str, Any], pruner: dict[str, Any]
) -> None:
    _store_unchecked(storage, "poison", sampler=sampler, pruner=pruner, n_trials=4)
    worker = Worker(str(storage.engine.url.render_as_string(False)), "cpu", None, 5.0)
    assert worker.run(max_trials=None, exit_when_idle=True) == 0
    _, status, _ = _study(storage, "poison")
    # Whatever the option breaks, the study ends: failed with the reason, or completed.
    assert status in ("failed", "completed")
    if status == "failed":
        assert all(r.split(":")[0].strip() for r in _fail_reasons(storage, "poison"))


def test_a_trial_over_its_timeout_fails_counts_and_is_not_retried(
    storage: optuna.storages.RDBStorage,
) -> None:
    spec = _spec("slow", n_trials=2, max_consecutive_failures=1, trial_timeout_s=0.3)
    spec["task_config"] = {"epochs": 6, "sleep_s": 0.15}
    register_study(storage, StudySpec.model_validate(spec))
    worker = Worker(str(storage.engine.url.render_as_string(False)), "cpu", None, 5.0)
    assert worker.run(max_trials=None, exit_when_idle=True) == 0
    study = optuna.load_study(study_name="slow", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # counted: no retry queued
    for t in trials:
        assert t.user_attrs["fail_reason"] == "timeout after 0.3 s"
        assert 2 <= len(t.user_attrs["curve"]) < 6  # stopped at the report past 0.3 s
    row, status, _ = _study(storage, "slow")
    # A timeout is the trial's result, not an exception: it never fails the study.
    assert status == "completed" and row.fail_reason is None


def test_a_timeout_is_at_most_seven_days() -> None:
    with pytest.raises(ValueError, match="trial_timeout_s"):
        StudySpec.model_validate(_spec("long", trial_timeout_s=8 * 86400))
    assert StudySpec.model_validate(_spec("ok", trial_timeout_s=3600)).trial_timeout_s == 3600
