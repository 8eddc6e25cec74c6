"""Claiming, finishing and recovering trials: the worker's side of the database contract.

Budget rule: a study's `n_trials` counts trials that reached a result of their own
(complete, pruned, diverged, or failed with no retries left). A claim may take a slot only
while the slots in use (claimed trials that hold one, see HOLDS_SLOT, and reservations of
claims in flight) are fewer than n_trials, checked under a per-study lock, so any number of
racing workers never overshoot. A trial lost with its worker is marked FAIL, is not counted,
and its parameters are queued again (up to the study's `max_retries`).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import FloatParam, IntParam, StudySpec, build_pruner, build_sampler
from search_spaces.storage import (
    HOLDS_SLOT,
    RUNNING,
    StudyRow,
    advisory_lock,
    autocommit,
    get_study_row,
    list_study_rows,
    locked_transaction,
    now,
    optuna_trials,
    reservations_table,
    studies_table,
    study_progress,
    to_study_row,
    trial_runs_table,
    workers_table,
    write_user_attrs,
)
from worker.optuna_tell import tell
from worker.tasks import warm_up
from worker.tasks.base import json_safe

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class _ReservationsLost(Exception):
    """A claim's reserved slots were freed before it could record its trials."""


@dataclass
class Claim:
    row: StudyRow
    spec: StudySpec
    study: optuna.Study
    trial: optuna.Trial
    attempt: int
    engine: sa.Engine


@functools.cache
def _trial_cache(storage: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """One Optuna trial cache per process and storage, shared by every claim.

    `load_study` on the bare storage wraps it in a fresh cache each time, and ask() then
    reads the whole study: claims grew linearly with the study's size. A shared cache reads
    only what changed since the last claim.
    """
    return optuna.storages._CachedStorage(storage)


@functools.lru_cache(maxsize=256)
def _loaded_study(storage: optuna.storages.RDBStorage, name: str, study_id: int) -> optuna.Study:
    """A study object to copy per claim: load_study would cost a query every time."""
    sampler = optuna.samplers.RandomSampler()  # each copy gets its own (see _ask)
    return optuna.load_study(study_name=name, storage=_trial_cache(storage), sampler=sampler)


# A study's spec never changes (a study made again under its name has a new created_at):
# validate it once per study, not once per claim.
_specs: dict[tuple[str, float], StudySpec] = {}


def study_spec(row: StudyRow) -> StudySpec:
    key = (row.name, row.created_at)
    if key not in _specs:
        _specs[key] = StudySpec.from_stored(row.spec)
    return _specs[key]


def claim_lock_key(study_name: str) -> str:
    return f"noisetune-claim:{study_name}"


def _open_claims(study_name: Any) -> Any:
    """Claimed trials of a study with no result yet (a scalar subquery)."""
    r = trial_runs_table.c
    return (
        sa.select(sa.func.count())
        .where(r.study_name == study_name, sa.not_(r.counted), r.fail_reason.is_(None))
        .scalar_subquery()
    )


def _used(study_name: Any) -> Any:
    """Slots of a study's budget in use: claimed trials that hold one, and reservations."""
    r, p = trial_runs_table.c, reservations_table.c
    held = sa.select(sa.func.count()).where(r.study_name == study_name, HOLDS_SLOT)
    reserved = sa.select(sa.func.count()).where(p.study_name == study_name)
    return held.scalar_subquery() + reserved.scalar_subquery()


def servable_studies(engine: sa.Engine, only: str | None) -> list[StudyRow]:
    """Running studies with budget left that this worker may serve, best candidates first.

    One query. The budget is checked again under the study's lock when claiming: this list
    only saves locking studies that are plainly full.
    """
    s = studies_table.c
    query = sa.select(
        studies_table, _used(s.name).label("used"), _open_claims(s.name).label("open")
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
_candidates: dict[tuple[sa.Engine, str | None], tuple[float, list[StudyRow]]] = {}


def _candidate_lists(engine: sa.Engine, only: str | None) -> Iterator[list[StudyRow]]:
    """The last list of servable studies if it is recent, then (if that served nothing) a
    fresh one."""
    key = (engine, only)
    cached = _candidates.get(key)
    if cached is not None and time.monotonic() - cached[0] < CANDIDATES_TTL_S:
        yield cached[1]
    fresh = servable_studies(engine, only)
    _candidates[key] = (time.monotonic(), fresh)
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


def can_stack(spec: StudySpec) -> bool:
    """Whether trials of this study can train as one stack (repeats run one after another)."""
    definition = spec.definition
    return bool(definition.stackable and definition.stacked_trainer and spec.repeats == 1)


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
    less budget is left, and one when the study's trials cannot be stacked (`can_stack`).
    An empty list means there is nothing to serve.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    started = time.perf_counter()  # claim latency, lock wait included: see /metrics
    engine = storage.engine
    candidates = (c for listed in _candidate_lists(engine, only) for c in listed)
    for candidate in candidates:
        spec = study_spec(candidate)
        started += warm_up(spec.definition)  # a first trial's imports: not the claim's time
        # Trials that cannot share a stack run one after another: claiming more would only
        # leave them waiting while other workers could have trained them.
        reserved = _reserve(engine, candidate.name, worker_id, k if can_stack(spec) else 1)
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
            for _, trial, _ in asked:
                _fail_orphan(storage, trial._trial_id, candidate.name, pending_up_to=-1)
            continue
        except BaseException:
            # Free the slots now rather than when the reaper finds this worker lost. A trial
            # asked but not recorded is an orphan: the reaper fails it (see _reap_orphans).
            _drop_reservations(engine, reservations_table.c.claim == claim_id)
            raise
        claims = []
        for study, trial, attempt in asked:
            # Sampling happens after the claim: it is the sampler's cost, not the claim's.
            suggest_all(trial, spec)
            claims.append(
                Claim(row=candidate, spec=spec, study=study, trial=trial, attempt=attempt,
                      engine=engine)
            )  # fmt: skip
        return claims
    return []


def _reserve(
    engine: sa.Engine, study_name: str, worker_id: str, want: int
) -> tuple[str, int, int] | None:
    """Reserve up to `want` slots of the study's budget: (claim id, slots, first seed number).

    Seed numbers: trial numbers run 0, 1, ... per study, and every reservation will become
    a trial, so trials + reservations is the number the next new trial will most likely
    get. A lone worker's trials are seeded by their own numbers (replays are exact); racing
    workers never share a seed number.
    """
    s, t, p = studies_table.c, optuna_trials.c, reservations_table.c
    trials = sa.select(sa.func.count()).where(t.study_id == s.study_id).scalar_subquery()
    pending = sa.select(sa.func.count()).where(p.study_name == s.name).scalar_subquery()
    query = sa.select(
        s.status, s.n_trials, _used(s.name).label("used"), (trials + pending).label("next")
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


def _drop_reservations(engine: sa.Engine, which: Any) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(reservations_table).where(which))
    except sa.exc.SQLAlchemyError as exc:
        log.warning("could not free reserved slots (the reaper will): %s", exc)


def _ask(
    storage: optuna.storages.RDBStorage,
    row: StudyRow,
    spec: StudySpec,
    n: int,
    first_seed_number: int,
) -> list[tuple[optuna.Study, optuna.Trial, int]]:
    """ask() `n` trials: each moves to RUNNING (or a queued retry is taken)."""
    asked = []
    for i in range(n):
        # One study object per trial, its sampler seeded for its own number.
        study = copy.copy(_loaded_study(storage, row.name, row.study_id))
        study.sampler = build_sampler(spec, trial_number=first_seed_number + i)
        study.pruner = build_pruner(spec)
        trial = study.ask()
        asked.append((study, trial, int(trial.user_attrs.get("attempt", 0))))
    return asked


def _record_claims(
    conn: sa.Connection,
    study_name: str,
    asked: list[tuple[optuna.Study, optuna.Trial, int]],
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
                "trial_id": trial._trial_id,
                "study_name": study_name,
                "number": trial.number,
                "worker_id": worker_id,
                "attempt": attempt,
                "counted": False,
                "claim_seconds": claim_seconds,
            }
            for _, trial, attempt in asked
        ],
    )
    first = asked[0][1]
    # The worker row has room for one trial: the first; the heartbeat covers all.
    conn.execute(
        sa.update(workers_table)
        .where(workers_table.c.id == worker_id)
        .values(study_name=study_name, trial_id=first._trial_id, trial_number=first.number)
    )
    who = {"worker": worker_id, "host": host, "device": device}
    attrs = {}
    for _, trial, attempt in asked:
        # A queued retry came with its attempt already set.
        extra = {} if "attempt" in trial.user_attrs else {"attempt": attempt}
        attrs[trial._trial_id] = {**who, **extra}
    write_user_attrs(conn, attrs)


# A trial is asked before its claim is recorded, so a RUNNING trial without a claim record
# is normally a claim in flight (milliseconds). Such a claim holds its reservations until
# it records, and reserved before it asked: so if no reservation of the trial's study that
# existed when the trial was first seen is left, its claim is over and it is an orphan.
# Per database: trial id -> (when this process first saw it, the study's highest
# reservation id then).
_orphans_seen: dict[str, dict[int, tuple[float, int]]] = {}


def _fail_orphan(
    storage: optuna.storages.RDBStorage, trial_id: int, study_name: str, pending_up_to: int
) -> None:
    """FAIL a trial whose claimer died or broke off between ask() and recording its claim.

    Skipped while the study holds a reservation with id <= `pending_up_to` (the trial's
    claim may be among them). It never trained and holds no slot of the budget; a queued
    retry it had popped is queued again.
    """
    r, p, t = trial_runs_table.c, reservations_table.c, optuna_trials.c
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
        if not _fail_running(storage, trial_id, "worker lost while claiming"):
            return
        fixed = frozen.system_attrs.get("fixed_params")
        if fixed:
            attempt = int(frozen.user_attrs.get("attempt", 0))
            _requeue_in(storage, study_name, dict(fixed), attempt, frozen.number)
    log.warning("trial %s of %s: worker lost while claiming", frozen.number, study_name)


def suggest_all(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample every parameter of the space (or take the queued values of a retried trial)."""
    for name, p in spec.space.sampled.items():
        if isinstance(p, FloatParam):
            trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
        else:
            trial.suggest_categorical(name, p.choices)
    return trial.params


def _mark_run(engine: sa.Engine, trial_id: int, counted: bool, reason: str | None) -> None:
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
) -> None:
    """Record a trial's result: its attributes and claim record in one transaction, then tell.

    Raises UpdateFinishedTrialError when the trial was finished meanwhile (a reaper gave it
    up, or a retried tell after a dropped connection had in fact committed).
    """
    trial, study = claim.trial, claim.study
    attrs: dict[str, Any] = {}
    if metrics is not None:
        attrs["metrics"] = json_safe(metrics)
    if curve is not None:
        attrs["curve"] = json_safe(curve)
    if wall_time_s is not None:
        attrs["wall_time_s"] = round(wall_time_s, 3)
    if fail_reason is not None:
        attrs["fail_reason"] = fail_reason
    with claim.engine.begin() as conn:
        t, r = optuna_trials.c, trial_runs_table.c
        # Optuna refuses to change a finished trial; so does this.
        running = sa.exists().where(t.trial_id == trial._trial_id, t.state == RUNNING)
        marked = conn.execute(
            sa.update(trial_runs_table)
            .where(r.trial_id == trial._trial_id, running)
            .values(counted=counted, fail_reason=fail_reason)
        )
        if marked.rowcount == 0:
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"trial {trial.number} is no longer running"
            )
        write_user_attrs(conn, {trial._trial_id: attrs})
    tell(study, trial, state, value)


def requeue(study: optuna.Study, params: dict[str, Any], attempt: int, retry_of: int) -> None:
    study.enqueue_trial(params, user_attrs={"attempt": attempt, "retry_of": retry_of})


def _requeue_in(
    storage: optuna.storages.RDBStorage,
    study_name: str,
    params: dict[str, Any],
    attempt: int,
    retry_of: int,
) -> None:
    requeue(optuna.load_study(study_name=study_name, storage=storage), params, attempt, retry_of)


def _fail_running(storage: optuna.storages.RDBStorage, trial_id: int, reason: str) -> bool:
    """FAIL a RUNNING trial nobody trains, with its reason; False if it finished meanwhile."""
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def fail_and_maybe_retry(claim: Claim, reason: str, *, retry_counts: bool) -> bool:
    """FAIL the trial; queue its parameters again while retries are left.

    `retry_counts` is False for an interrupted worker (SIGTERM): that is not the trial's
    fault, so it does not use up a retry. Returns whether the parameters were queued again.
    """
    spec = claim.spec
    retry = not retry_counts or claim.attempt < spec.max_retries
    finish_trial(claim, TrialState.FAIL, None, fail_reason=reason, counted=not retry)
    if retry:
        next_attempt = claim.attempt + 1 if retry_counts else claim.attempt
        requeue(claim.study, claim.trial.params, next_attempt, claim.trial.number)
    return retry


def _reap_orphans(storage: optuna.storages.RDBStorage, grace_s: float) -> None:
    """FAIL the trials this process has seen RUNNING without a claim record for `grace_s`
    whose claims are over (see _orphans_seen)."""
    query = sa.text(
        "SELECT t.trial_id, s.name, (SELECT max(p.id) FROM noisetune_reservations p "
        "WHERE p.study_name = s.name) FROM trials t "
        "JOIN noisetune_studies s ON s.study_id = t.study_id "
        "LEFT JOIN noisetune_trial_runs r ON r.trial_id = t.trial_id "
        "WHERE t.state = 'RUNNING' AND r.trial_id IS NULL"
    )
    with autocommit(storage.engine) as conn:
        found = {row[0]: (row[1], row[2] or 0) for row in conn.execute(query)}
    clock = time.monotonic()
    seen = _orphans_seen.setdefault(str(storage.engine.url), {})
    for trial_id in set(seen) - set(found):
        del seen[trial_id]
    for trial_id, (study_name, highest_reservation) in found.items():
        first_seen, pending_up_to = seen.setdefault(trial_id, (clock, highest_reservation))
        if clock - first_seen >= grace_s:
            _fail_orphan(storage, trial_id, study_name, pending_up_to)


def _worker_lost() -> sa.ColumnElement[bool]:
    """A worker that exited, was given up, or missed two of its own heartbeat intervals."""
    w = workers_table.c
    return sa.or_(w.state != "alive", w.heartbeat_at < now() - 2 * w.heartbeat_interval)


def _free_lost_reservations(storage: optuna.storages.RDBStorage) -> None:
    """Budget slots reserved by workers found lost (or gone) return to their studies."""
    lost = sa.select(workers_table.c.id).where(_worker_lost())
    _drop_reservations(storage.engine, reservations_table.c.worker_id.in_(lost))


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
    r, t, w = trial_runs_table.c, optuna_trials.c, workers_table.c
    query = (
        sa.select(r.trial_id, r.study_name, r.number, r.worker_id, r.attempt, w.heartbeat_at)
        .select_from(
            trial_runs_table.join(optuna_trials, t.trial_id == r.trial_id).join(
                workers_table, w.id == r.worker_id
            )
        )
        .where(t.state == RUNNING, _worker_lost())
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
    query = sa.text(
        "SELECT r.trial_id, r.study_name, r.number, r.attempt FROM noisetune_trial_runs r "
        "JOIN trials t ON t.trial_id = r.trial_id "
        "WHERE r.worker_id = :w AND t.state = 'RUNNING'"
    )
    with storage.engine.connect() as conn:
        mine = conn.execute(query, {"w": worker_id}).all()
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
        spec = study_spec(row)
        retry = not retry_counts or attempt < spec.max_retries
        if not _fail_running(storage, trial_id, reason):
            return False  # its worker finished it after all
        _mark_run(engine, trial_id, counted=not retry, reason=reason)
        params = frozen.params or frozen.system_attrs.get("fixed_params") or {}
        if retry and params:
            next_attempt = attempt + 1 if retry_counts else attempt
            _requeue_in(storage, study_name, dict(params), next_attempt, number)
    log.warning("trial %s of %s: %s", number, study_name, reason)
    return True
