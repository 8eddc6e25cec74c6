"""A study's budget: the slots in use, the claim lock, and which studies can be served.

Budget rule: a study's `n_trials` counts trials that reached a result of their own
(complete, pruned, diverged, or failed with no retries left). A claim may take a slot only
while the slots in use (claimed trials that hold one, see HOLDS_SLOT, and reservations of
claims in flight) are fewer than n_trials, checked under a per-study lock
(`claim_lock_key`), so any number of racing workers never overshoot. The rule and the
slot count live in search_spaces.study_rows; this module applies them to claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from search_spaces.locks import autocommit
from search_spaces.study_rows import (
    StudyRow,
    list_study_rows,
    slots_used,
    study_progress,
    to_study_row,
)
from search_spaces.tables import reservations_table, studies_table, trial_runs_table
from worker.claims._cache import caches

log = logging.getLogger("worker.claims")


def _open_claims(study_name: Any) -> Any:
    """Claimed trials of a study with no result yet (a scalar subquery)."""
    r = trial_runs_table.c
    return (
        sa.select(sa.func.count())
        .where(r.study_name == study_name, sa.not_(r.counted), r.fail_reason.is_(None))
        .scalar_subquery()
    )


def servable_studies(engine: sa.Engine, only: str | None) -> list[StudyRow]:
    """Running studies with budget left that this worker may serve, best candidates first.

    One query. The budget is checked again under the study's lock when claiming: this list
    only saves locking studies that are plainly full.
    """
    s = studies_table.c
    query = sa.select(
        studies_table, slots_used(s.name).label("used"), _open_claims(s.name).label("open")
    ).where(s.status == "running")
    if only is not None:
        query = query.where(s.name == only)
    with autocommit(engine) as conn:
        rows = conn.execute(query).all()
    # Higher priority first, then the study with the fewest running trials.
    ranked = sorted(
        (r for r in rows if r.used < r.n_trials), key=lambda r: (-r.priority, r.open, r.created_at)
    )
    return [to_study_row(r) for r in ranked]


# How long a worker may claim from its last list of candidates: the list only ranks them
# (the budget is checked again under each study's lock), and a worker that claims many
# short trials a second would otherwise ask for it before every claim.
CANDIDATES_TTL_S = 1.0


def candidate_lists(engine: sa.Engine, only: str | None) -> Iterator[list[StudyRow]]:
    """The last list of servable studies if it is recent, then (if that served nothing) a
    fresh one."""
    key = (engine, only)
    cached = caches.candidates.get(key)
    if cached is not None and time.monotonic() - cached[0] < CANDIDATES_TTL_S:
        yield cached[1]
    fresh = servable_studies(engine, only)
    caches.candidates[key] = (time.monotonic(), fresh)
    yield fresh


def unfinished_studies(engine: sa.Engine, only: str | None) -> list[str]:
    """Studies that still need work or are waiting on a trial running elsewhere."""
    names = []
    for row in list_study_rows(engine):
        if only is not None and row.name != only:
            continue
        progress = study_progress(engine, row.name, row.study_id)
        # A running trial may yet fail and be queued again, or be an orphan to reap.
        if row.status == "running" and (progress.counted < row.n_trials or progress.running):
            names.append(row.name)
    return names


def drop_reservations(engine: sa.Engine, which: Any) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(reservations_table).where(which))
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not free reserved slots (the reaper will): %s", exc)
