"""Finding trials nobody trains any more, failing them and queuing them again.

A trial whose worker missed two of its own heartbeats (kill -9, a lost machine) is marked
FAIL, is not counted, and its parameters are queued again (up to the study's
`max_retries`). A trial asked of Optuna whose claim was never recorded (an orphan) is
failed once its claim can no longer record it. Any worker may reap; the study's claim lock
and Optuna's refusal to update a finished trial make it safe when several do at once.
"""

from __future__ import annotations

import logging
import time

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import trial_attrs
from search_spaces.locks import advisory_lock, autocommit
from search_spaces.optuna_adapter import state_is, trials_table
from search_spaces.study_rows import claim_lock_key, get_study_row
from search_spaces.tables import (
    reservations_table,
    studies_table,
    trial_runs_table,
    worker_lost,
    workers_table,
)
from worker.claims._budget import drop_reservations
from worker.claims._cache import caches
from worker.claims._claim import study_spec
from worker.claims._outcomes import (
    fail_running,
    first_attempt,
    mark_run,
    next_attempt,
    queued_by_hand,
    requeue_in,
)

log = logging.getLogger("worker.claims")


# A trial is asked before its claim is recorded, so a RUNNING trial without a claim record
# is normally a claim in flight (milliseconds). Such a claim holds its reservations until
# it records, and reserved before it asked: so if no reservation of the trial's study that
# existed when the trial was first seen is left, its claim is over and it is an orphan.
# What this process has seen is kept in caches.orphans_seen.


def fail_orphan(
    storage: optuna.storages.RDBStorage, trial_id: int, study_name: str, pending_up_to: int
) -> None:
    """FAIL a trial whose claimer died or broke off between ask() and recording its claim.

    Skipped while the study holds a reservation with id <= `pending_up_to` (the trial's
    claim may be among them). It never trained and holds no slot of the budget; a queued
    retry it had popped is queued again.
    """
    r, p, t = trial_runs_table.c, reservations_table.c, trials_table.c
    check = sa.select(
        sa.select(t.state).where(t.trial_id == trial_id).scalar_subquery().label("state"),
        sa.exists().where(r.trial_id == trial_id).label("recorded"),
        sa.exists().where(p.study_name == study_name, p.id <= pending_up_to).label("pending"),
    )
    with advisory_lock(storage.engine, claim_lock_key(study_name)):
        with autocommit(storage.engine) as conn:
            # One statement, one snapshot: a claim records and drops its reservations in
            # one transaction, so it cannot slip between these reads.
            found = conn.execute(check).one()
        if found.recorded or found.pending or found.state != "RUNNING":
            return  # recorded, perhaps still to be, or finished
        frozen = storage.get_trial(trial_id)
        if not fail_running(storage, trial_id, "worker lost while claiming"):
            return
        fixed = frozen.system_attrs.get("fixed_params")
        if fixed is not None:  # it was queued (perhaps with no parameters): queue it again
            attempt = int(frozen.user_attrs.get(trial_attrs.ATTEMPT, 0))
            first = first_attempt(frozen.number, frozen.user_attrs)
            queued = queued_by_hand(frozen.user_attrs)
            requeue_in(
                storage, study_name, dict(fixed), attempt, frozen.number, first, queued=queued
            )
    log.warning("trial %s of %s: worker lost while claiming", frozen.number, study_name)


def _reap_orphans(storage: optuna.storages.RDBStorage, grace_s: float) -> None:
    """FAIL the trials this process has seen RUNNING without a claim record for `grace_s`
    whose claims are over (see caches.orphans_seen)."""
    t, s, r, p = trials_table.c, studies_table.c, trial_runs_table.c, reservations_table.c
    highest = sa.select(sa.func.max(p.id)).where(p.study_name == s.name).scalar_subquery()
    query = (
        sa.select(t.trial_id, s.name, highest)
        .select_from(
            trials_table.join(studies_table, s.study_id == t.study_id).outerjoin(
                trial_runs_table, r.trial_id == t.trial_id
            )
        )
        .where(state_is("RUNNING"), r.trial_id.is_(None))
    )
    with autocommit(storage.engine) as conn:
        found = {row[0]: (row[1], row[2] or 0) for row in conn.execute(query)}
    clock = time.monotonic()
    seen = caches.orphans_seen.setdefault(str(storage.engine.url), {})
    for trial_id in set(seen) - set(found):
        del seen[trial_id]
    for trial_id, (study_name, highest_reservation) in found.items():
        first_seen, pending_up_to = seen.setdefault(trial_id, (clock, highest_reservation))
        if clock - first_seen >= grace_s:
            fail_orphan(storage, trial_id, study_name, pending_up_to)


def _free_lost_reservations(storage: optuna.storages.RDBStorage) -> None:
    """Budget slots reserved by workers found lost (or gone) return to their studies."""
    lost = sa.select(workers_table.c.id).where(worker_lost())
    drop_reservations(storage.engine, reservations_table.c.worker_id.in_(lost))


def reap_lost_trials(storage: optuna.storages.RDBStorage, orphan_grace_s: float = 20.0) -> int:
    """FAIL the RUNNING trials whose worker missed two of its own heartbeats; queue them again.

    Also frees the budget slots lost workers had reserved, and fails orphans: trials
    RUNNING without a claim record, seen by this process for `orphan_grace_s` (a worker
    passes two of its heartbeat intervals), whose claim holds no reservation any more.
    Any worker may run this; the per-study lock and Optuna's refusal to update a finished
    trial make it safe when several do at once, or when the lost worker comes back.
    """
    _free_lost_reservations(storage)
    _reap_orphans(storage, orphan_grace_s)
    r, t, w = trial_runs_table.c, trials_table.c, workers_table.c
    query = (
        sa.select(r.trial_id, r.study_name, r.number, r.worker_id, r.attempt, w.heartbeat_at)
        .select_from(
            trial_runs_table.join(trials_table, t.trial_id == r.trial_id).join(
                workers_table, w.id == r.worker_id
            )
        )
        .where(state_is("RUNNING"), worker_lost())
    )
    with storage.engine.connect() as conn:
        lost = conn.execute(query).all()
    reaped = 0
    for trial_id, study_name, number, worker_id, attempt, heartbeat_at in lost:
        reason = f"worker {worker_id} lost: no heartbeat since {heartbeat_at:.0f} (unix time)"
        if _give_up(storage, trial_id, study_name, number, attempt, reason, retry_counts=True):
            reaped += 1
            with storage.engine.begin() as conn:
                conn.execute(
                    sa.update(workers_table)
                    .where(workers_table.c.id == worker_id, workers_table.c.state == "alive")
                    .values(state="lost")
                )
    return reaped


def release_own_trials(storage: optuna.storages.RDBStorage, worker_id: str) -> int:
    """Give up RUNNING trials of this worker that it is not training.

    A worker trains one claim at a time, so before it claims again none of its trials should
    be RUNNING. One is when a claim committed but its answer was lost to a dropped
    connection and the claim was retried: its heartbeat would keep that trial RUNNING for
    ever. It never trained, so its retry is free. Reservations of such a claim go too.
    """
    with storage.engine.begin() as conn:
        conn.execute(
            sa.delete(reservations_table).where(reservations_table.c.worker_id == worker_id)
        )
    t, r = trials_table.c, trial_runs_table.c
    query = (
        sa.select(r.trial_id, r.study_name, r.number, r.attempt)
        .select_from(trial_runs_table.join(trials_table, t.trial_id == r.trial_id))
        .where(r.worker_id == worker_id, state_is("RUNNING"))
    )
    with storage.engine.connect() as conn:
        mine = conn.execute(query).all()
    reason = "claim interrupted by a database error"
    return sum(
        _give_up(storage, trial_id, study, number, attempt, reason, retry_counts=False)
        for trial_id, study, number, attempt in mine
    )


def _give_up(
    storage: optuna.storages.RDBStorage,
    trial_id: int,
    study_name: str,
    number: int,
    attempt: int,
    reason: str,
    *,
    retry_counts: bool,
) -> bool:
    """FAIL a RUNNING trial nobody trains and queue its parameters again while retries last."""
    engine = storage.engine
    with advisory_lock(engine, claim_lock_key(study_name)):
        row = get_study_row(engine, study_name)
        if row is None:
            return False
        frozen = storage.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING:
            return False
        retry = next_attempt(attempt, study_spec(row).max_retries, retry_counts=retry_counts)
        if not fail_running(storage, trial_id, reason):
            return False  # its worker finished it after all
        mark_run(engine, trial_id, counted=retry is None, reason=reason)
        # A space that fixes every parameter has none to queue: its retry is queued all the
        # same (with no parameters), so that it resumes the lost trial's checkpoint.
        params = frozen.params or frozen.system_attrs.get("fixed_params") or {}
        if retry is not None:
            first = first_attempt(number, frozen.user_attrs)
            queued = queued_by_hand(frozen.user_attrs)
            requeue_in(storage, study_name, dict(params), retry, number, first, queued=queued)
    log.warning("trial %s of %s: %s", number, study_name, reason)
    return True
