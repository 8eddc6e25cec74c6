"""Claiming trials: reserve budget slots, ask Optuna, record who runs what.

A claim is three steps: reserve slots of the study's budget in a short transaction under
the study's lock, ask() Optuna outside the lock, then record the claims and drop the
reservations in one transaction. A worker can die between any two; the reaper
(worker.claims._reaper) finds what it left behind.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa

from search_spaces import FloatParam, IntParam, StudySpec, trial_attrs
from search_spaces.locks import locked_transaction
from search_spaces.optuna_adapter import trial_db_id, trials_table, write_user_attrs
from search_spaces.storage import now
from search_spaces.study_rows import StudyRow, claim_lock_key, slots_used
from search_spaces.tables import reservations_table, studies_table, trial_runs_table, workers_table
from worker.claims._budget import candidate_lists, drop_reservations
from worker.claims._cache import caches
from worker.claims._claim import Claim, study_spec, trials_per_stack
from worker.claims._reaper import fail_orphan
from worker.guarded_sampler import GuardedSampler, guarded_optimizers
from worker.tasks import warm_up

log = logging.getLogger("worker.claims")


class _ReservationsLost(Exception):
    """A claim's reserved slots were freed before it could record its trials."""


@dataclass
class _Asked:
    """A trial asked of Optuna, before its claim is recorded."""

    study: optuna.Study
    trial: optuna.Trial
    attempt: int
    error: BaseException | None


def claim_trial(
    storage: optuna.storages.RDBStorage, worker_id: str, host: str, device: str, only: str | None
) -> Claim | None:
    """Start one trial of the best servable study, or return None when there is none."""
    claims = claim_trials(storage, worker_id, host, device, only, 1)
    return claims[0] if claims else None


def claim_trials(
    storage: optuna.storages.RDBStorage,
    worker_id: str,
    host: str,
    device: str,
    only: str | None,
    k: int,
) -> list[Claim]:
    """Start up to `k` trials of one study (the best servable one).

    Three steps: reserve budget slots in a short transaction under the study's lock (so
    racing workers never overshoot `n_trials`), ask() Optuna outside the lock, then record
    the claims and drop the reservations in one transaction. Fewer than `k` come back when
    less budget is left, and fewer when its trials cannot be stacked or train many seeds
    (`trials_per_stack`).
    An empty list means there is nothing to serve.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()  # claim latency, lock wait included: see /metrics
    engine = storage.engine
    candidates = (c for listed in candidate_lists(engine, only) for c in listed)
    for candidate in candidates:
        try:
            spec = study_spec(candidate)
        except Exception as exc:
            _skip_unloadable(candidate, exc)
            continue
        started += warm_up(spec.definition)  # a first trial's imports: not the claim's time
        # Trials that cannot share a stack run one after another: claiming more would only
        # leave them waiting while other workers could have trained them.
        reserved = _reserve(engine, candidate.name, worker_id, trials_per_stack(spec, k))
        if reserved is None:
            continue
        claim_id, n, first_seed_number = reserved
        try:
            asked = _ask(storage, candidate, spec, n, first_seed_number)
            with engine.begin() as conn:
                _record_claims(conn, candidate.name, asked, worker_id, host, device, started)
                dropped = conn.execute(
                    sa.delete(reservations_table).where(reservations_table.c.claim == claim_id)
                )
                if dropped.rowcount != n:
                    raise _ReservationsLost  # rolls the records back
        except _ReservationsLost:
            # A reaper found this worker lost (a stalled heartbeat) and gave its slots to
            # others: training these trials could overshoot n_trials. They never trained.
            log.warning("claim on %s lost its reserved slots; giving its trials up", candidate.name)
            for a in asked:
                fail_orphan(storage, trial_db_id(a.trial), candidate.name, pending_up_to=-1)
            continue
        except BaseException:
            # Free the slots now rather than when the reaper finds this worker lost. A trial
            # asked but not recorded is an orphan: the reaper fails it (see _reap_orphans).
            drop_reservations(engine, reservations_table.c.claim == claim_id)
            raise
        claims = []
        for a in asked:
            # Sampling happens after the claim: it is the sampler's cost, not the claim's.
            error = a.error or _sample(a, spec)
            claims.append(
                Claim(row=candidate, spec=spec, study=a.study, trial=a.trial, attempt=a.attempt,
                      engine=engine, error=error)
            )  # fmt: skip
        return claims
    return []


def _sample(asked: _Asked, spec: StudySpec) -> BaseException | None:
    """Suggest the trial's parameters; what the sampler raised, if it failed."""
    try:
        suggest_all(asked.trial, spec)
    except Exception as exc:
        return exc
    sampler = asked.study.sampler
    return sampler.error if isinstance(sampler, GuardedSampler) else None


# Studies this process cannot load (a task not installed here, a spec it cannot read)
# are warned about once (caches.unloadable), then left to workers that can.


def _skip_unloadable(row: StudyRow, exc: Exception) -> None:
    key = (row.name, row.created_at)
    if key not in caches.unloadable:
        caches.unloadable.add(key)
        log.error("study %s cannot be served by this worker: %s: %s",
                  row.name, type(exc).__name__, exc)  # fmt: skip


def _reserve(
    engine: sa.Engine, study_name: str, worker_id: str, want: int
) -> tuple[str, int, int] | None:
    """Reserve up to `want` slots of the study's budget: (claim id, slots, first seed number).

    Seed numbers: trial numbers run 0, 1, ... per study, and every reservation will become
    a trial, so trials + reservations is the number the next new trial will most likely
    get. A lone worker's trials are seeded by their own numbers (replays are exact); racing
    workers never share a seed number.
    """
    s, t, p = studies_table.c, trials_table.c, reservations_table.c
    trials = sa.select(sa.func.count()).where(t.study_id == s.study_id).scalar_subquery()
    pending = sa.select(sa.func.count()).where(p.study_name == s.name).scalar_subquery()
    query = sa.select(
        s.status, s.n_trials, slots_used(s.name).label("used"), (trials + pending).label("next")
    ).where(s.name == study_name)
    with locked_transaction(engine, claim_lock_key(study_name)) as conn:
        row = conn.execute(query).first()
        if row is None or row.status != "running":
            return None
        n = min(want, row.n_trials - row.used)
        if n <= 0:
            return None
        claim_id = uuid.uuid4().hex
        slot = {"study_name": study_name, "worker_id": worker_id, "claim": claim_id}
        conn.execute(sa.insert(reservations_table), [{**slot, "created_at": now()}] * n)
    return claim_id, n, int(row.next)


def _ask(
    storage: optuna.storages.RDBStorage,
    row: StudyRow,
    spec: StudySpec,
    n: int,
    first_seed_number: int,
) -> list[_Asked]:
    """ask() `n` trials: each moves to RUNNING (or a queued retry is taken).

    A sampler or pruner that fails does not stop the ask: the trial is asked all the same
    and carries the error, to be failed with it (see worker.guarded_sampler).
    """
    asked = []
    for i in range(n):
        # One study object per trial, its sampler seeded for its own number.
        study = copy.copy(caches.loaded_study(storage, row.name, row.study_id))
        sampler, study.pruner, error = guarded_optimizers(spec, first_seed_number + i)
        study.sampler = sampler
        trial = study.ask()
        attempt = int(trial.user_attrs.get(trial_attrs.ATTEMPT, 0))
        asked.append(_Asked(study, trial, attempt, error or sampler.error))
    return asked


def _record_claims(
    conn: sa.Connection,
    study_name: str,
    asked: list[_Asked],
    worker_id: str,
    host: str,
    device: str,
    started: float,
) -> None:
    """The claim records, the worker's current trial and who runs each trial: one transaction."""
    claim_seconds = time.perf_counter() - started
    conn.execute(
        sa.insert(trial_runs_table),
        [
            {
                "trial_id": trial_db_id(a.trial),
                "study_name": study_name,
                "number": a.trial.number,
                "worker_id": worker_id,
                "attempt": a.attempt,
                "counted": False,
                "claim_seconds": claim_seconds,
            }
            for a in asked
        ],
    )
    first = asked[0].trial
    # The worker row has room for one trial: the first; the heartbeat covers all.
    conn.execute(
        sa.update(workers_table)
        .where(workers_table.c.id == worker_id)
        .values(study_name=study_name, trial_id=trial_db_id(first), trial_number=first.number)
    )
    who = {trial_attrs.WORKER: worker_id, trial_attrs.HOST: host, trial_attrs.DEVICE: device}
    attrs = {}
    for a in asked:
        # A queued retry came with its attempt already set.
        extra = (
            {} if trial_attrs.ATTEMPT in a.trial.user_attrs else {trial_attrs.ATTEMPT: a.attempt}
        )
        attrs[trial_db_id(a.trial)] = {**who, **extra}
    write_user_attrs(conn, attrs)


def suggest_all(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample every active parameter of the space (or take a retried trial's queued values).

    A define-by-run space: parameters come in the space's order, parents first, and one
    whose `when` does not hold for the values drawn so far is not suggested at all, so the
    trial lacks it (and its sampler never sees it).
    """
    space = spec.space
    values: dict[str, Any] = dict(space.fixed)
    for name, p in space.sampled.items():
        if not p.active(values):
            continue
        if isinstance(p, FloatParam):
            values[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            values[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
        else:
            values[name] = trial.suggest_categorical(name, p.choices)
    return trial.params
