"""When the workers stop a study as ``failed``: the one home of the failure-streak rule.

A study whose trials keep failing with an exception (the trainer does not import, its data
does not load, its training code raises, its sampler breaks) would otherwise have every
worker of the fleet fail its trials one after another. The study's ``failure_streak``
counts trials that failed with an exception since the last one that did not, across all
workers, in the database; at the spec's ``max_consecutive_failures`` (default 3) the
workers set the study ``failed`` with the reason, and no worker claims it again until its
owner resumes it (which clears the streak).

What does not count: divergence (the schedule's result), pruning, a stopped worker
(SIGTERM), a lost worker, and errors of the database (the trial's code is not at fault).
Any trial with a result of its own (complete, pruned, diverged) ends a streak.
"""

from __future__ import annotations

import logging
from typing import Literal

import sqlalchemy as sa

from search_spaces.tables import studies_table
from worker.db_retry import DB_ERRORS

log = logging.getLogger("noisetune.worker")

# How a finished trial moves its study's streak: an exception adds one, a result of its
# own resets it, anything else (interrupted, lost) leaves it.
StreakEffect = Literal["exception", "result"] | None


def counts_as_failure(exc: BaseException) -> bool:
    """Whether an exception that ended a trial counts toward its study's failure streak."""
    return not isinstance(exc, DB_ERRORS)


def update_streak(
    conn: sa.Connection, study_name: str, effect: StreakEffect, limit: int, reason: str | None
) -> bool:
    """Apply a trial's `effect` in the caller's transaction; True when the study fails now."""
    s = studies_table.c
    if effect == "result":
        conn.execute(
            sa.update(studies_table)
            .where(s.name == study_name, s.failure_streak > 0)
            .values(failure_streak=0)
        )
        return False
    if effect != "exception":
        return False
    streak = conn.execute(
        sa.update(studies_table)
        .where(s.name == study_name)
        .values(failure_streak=sa.func.coalesce(s.failure_streak, 0) + 1)
        .returning(s.failure_streak)
    ).scalar_one_or_none()
    if streak is None or streak < limit:
        return False
    why = f"stopped after {streak} trials in a row failed with an exception; last: {reason}"
    failed = conn.execute(
        sa.update(studies_table)
        .where(s.name == study_name, s.status == "running")
        .values(status="failed", fail_reason=why)
    )
    if failed.rowcount:
        log.error("study %s failed: %s", study_name, why)
    return bool(failed.rowcount)
