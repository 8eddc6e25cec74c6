"""Recording how a trial ended: its result, or its failure and whether it runs again.

Retry rule (`next_attempt`): a trial that failed through no fault of its worker's
(SIGTERM) is queued again with the same attempt number; any other failure uses up one of
the study's `max_retries`, and the last one counts in the budget so that a study always
ends.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import trial_attrs
from search_spaces.optuna_adapter import (
    state_is,
    trial_db_id,
    trial_storage,
    trials_table,
    write_user_attrs,
)
from search_spaces.tables import trial_runs_table
from worker.claims._claim import Claim
from worker.optuna_tell import tell
from worker.study_failures import StreakEffect, update_streak
from worker.tasks.base import json_safe

log = logging.getLogger("worker.claims")


def next_attempt(attempt: int, max_retries: int, *, retry_counts: bool) -> int | None:
    """The attempt number a failed trial runs again with, or None when it is not retried.

    `retry_counts` is False when the failure was not the trial's (an interrupted worker):
    it is always retried and does not use up a retry.
    """
    if not retry_counts:
        return attempt
    return attempt + 1 if attempt < max_retries else None


def mark_run(engine: sa.Engine, trial_id: int, counted: bool, reason: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(trial_runs_table)
            .where(trial_runs_table.c.trial_id == trial_id)
            .values(counted=counted, fail_reason=reason)
        )


def finish_trial(
    claim: Claim,
    state: TrialState,
    value: float | None,
    *,
    metrics: dict[str, Any] | None = None,
    curve: list[dict[str, Any]] | None = None,
    wall_time_s: float | None = None,
    fail_reason: str | None = None,
    counted: bool = True,
    streak: StreakEffect = None,
    runs: dict[str, list[Any]] | None = None,
) -> None:
    """Record a trial's result: its attributes and claim record in one transaction, then tell.

    `streak` moves the study's failure streak in the same transaction (see
    worker.study_failures): "exception" for a trial that failed with one, "result" for one
    with a result of its own.

    Raises UpdateFinishedTrialError when the trial was finished meanwhile (a reaper gave it
    up, or a retried tell after a dropped connection had in fact committed).
    """
    trial, study = claim.trial, claim.study
    attrs: dict[str, Any] = {}
    if metrics is not None:
        attrs[trial_attrs.METRICS] = json_safe(metrics)
    if curve is not None:
        attrs[trial_attrs.CURVE] = json_safe(curve)
    if wall_time_s is not None:
        attrs[trial_attrs.WALL_TIME_S] = round(wall_time_s, 3)
    if fail_reason is not None:
        attrs[trial_attrs.FAIL_REASON] = fail_reason
    if runs:  # the runs of each seed (trial_attrs.RUNS, and RUN_CURVES)
        attrs.update(json_safe(runs))
    with claim.engine.begin() as conn:
        t, r = trials_table.c, trial_runs_table.c
        # Optuna refuses to change a finished trial; so does this.
        running = sa.exists().where(t.trial_id == trial_db_id(trial), state_is("RUNNING"))
        marked = conn.execute(
            sa.update(trial_runs_table)
            .where(r.trial_id == trial_db_id(trial), running)
            .values(counted=counted, fail_reason=fail_reason)
        )
        if marked.rowcount == 0:
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"trial {trial.number} is no longer running"
            )
        write_user_attrs(conn, {trial_db_id(trial): attrs})
        limit = claim.spec.max_consecutive_failures
        update_streak(conn, claim.row.name, streak, limit, fail_reason)
    tell(study, trial, state, value)


def requeue(
    study: optuna.Study,
    params: dict[str, Any],
    attempt: int,
    retry_of: int,
    first: int,
    *,
    queued: bool = False,
) -> None:
    """Queue a trial's parameters again; `first` is its first attempt's number (the key of
    its checkpoints, which the retry resumes from). A retry of parameters queued by hand
    (`queued`) is marked so too: it is the record that runs them."""
    attrs: dict[str, Any] = {trial_attrs.ATTEMPT: attempt, trial_attrs.RETRY_OF: retry_of}
    if queued:
        attrs[trial_attrs.QUEUED] = True
    study.enqueue_trial(params, user_attrs={**attrs, trial_attrs.FIRST_ATTEMPT: first})


def queued_by_hand(user_attrs: dict[str, Any]) -> bool:
    return user_attrs.get(trial_attrs.QUEUED) is True


def first_attempt(number: int, user_attrs: dict[str, Any]) -> int:
    """The number of the first attempt of trial `number`, whose user attributes these are."""
    first = user_attrs.get(trial_attrs.FIRST_ATTEMPT)
    return first if isinstance(first, int) else number


def requeue_in(
    storage: optuna.storages.RDBStorage,
    study_name: str,
    params: dict[str, Any],
    attempt: int,
    retry_of: int,
    first: int,
    *,
    queued: bool = False,
) -> None:
    study = optuna.load_study(study_name=study_name, storage=storage)
    requeue(study, params, attempt, retry_of, first, queued=queued)


def fail_running(storage: optuna.storages.RDBStorage, trial_id: int, reason: str) -> bool:
    """FAIL a RUNNING trial nobody trains, with its reason; False if it finished meanwhile."""
    try:
        storage.set_trial_user_attr(trial_id, trial_attrs.FAIL_REASON, reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def fail_and_maybe_retry(
    claim: Claim,
    reason: str,
    *,
    retry_counts: bool,
    streak: StreakEffect = None,
    curve: list[dict[str, Any]] | None = None,
    wall_time_s: float | None = None,
) -> bool:
    """FAIL the trial; queue its parameters again while retries are left.

    `retry_counts` is False for an interrupted worker (SIGTERM): that is not the trial's
    fault, so it does not use up a retry. A trial whose sampler failed (`claim.error`) is
    queued with only the parameters it was queued with, not the stand-in ones it was given.
    Returns whether the parameters were queued again.
    """
    retry = next_attempt(claim.attempt, claim.spec.max_retries, retry_counts=retry_counts)
    finish_trial(claim, TrialState.FAIL, None, fail_reason=reason, counted=retry is None,
                 streak=streak, curve=curve, wall_time_s=wall_time_s)  # fmt: skip
    if retry is not None:
        params = claim.trial.params
        if claim.error is not None:
            trial = claim.trial
            fixed = (
                trial_storage(trial).get_trial_system_attrs(trial_db_id(trial)).get("fixed_params")
            )
            params = dict(fixed or {})
        trial = claim.trial
        first = first_attempt(trial.number, trial.user_attrs)
        queued = queued_by_hand(trial.user_attrs)
        requeue(claim.study, params, retry, trial.number, first, queued=queued)
    return retry is not None
