"""A study's row in noisetune's table: registering a study, reading it back, and where it
stands against its budget (the one home of the budget rule: `Progress.of`, `slots_used`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial
from sqlalchemy.engine import Engine

from search_spaces import trial_attrs
from search_spaces._study_spec import StudySpec
from search_spaces.locks import advisory_lock
from search_spaces.optuna_adapter import (
    insert_complete_trials,
    state_is,
    trials_table,
    user_attrs_table,
)
from search_spaces.tables import HOLDS_SLOT, reservations_table, studies_table, trial_runs_table


@dataclass(frozen=True)
class StudyRow:
    name: str
    study_id: int
    spec: dict[str, Any]
    status: str
    priority: int
    n_trials: int
    created_at: float
    fail_reason: str | None = None
    notes: str | None = None  # Markdown, as its owner wrote it


def to_study_row(r: Any) -> StudyRow:
    return StudyRow(
        name=r.name,
        study_id=r.study_id,
        spec=json.loads(r.spec),
        status=r.status,
        priority=r.priority,
        n_trials=r.n_trials,
        created_at=r.created_at,
        fail_reason=r.fail_reason,
        notes=r.notes,
    )


def get_study_row(engine: Engine, name: str) -> StudyRow | None:
    with engine.connect() as conn:
        r = conn.execute(sa.select(studies_table).where(studies_table.c.name == name)).first()
    return None if r is None else to_study_row(r)


def list_study_rows(engine: Engine) -> list[StudyRow]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(studies_table).order_by(studies_table.c.created_at)).all()
    return [to_study_row(r) for r in rows]


def set_study_status(engine: Engine, name: str, status: str) -> None:
    """Set a study's status by hand: why the workers failed it, and its streak, are cleared."""
    values = {"status": status, "fail_reason": None, "failure_streak": None}
    with engine.begin() as conn:
        conn.execute(sa.update(studies_table).where(studies_table.c.name == name).values(values))


@dataclass(frozen=True)
class Progress:
    """Where a study stands against its budget."""

    counted: int  # trials with a result of their own: complete, pruned, diverged
    running: int
    waiting: int
    by_state: dict[str, int]  # every trial by Optuna state, warm-started ones included
    warm_start: int = 0  # trials copied in from another study (COMPLETE, never counted)

    def budget_left(self, n_trials: int) -> int:
        return n_trials - self.counted - self.running

    @classmethod
    def of(cls, by_state: dict[str, int], counted_fails: int, warm_start: int = 0) -> Progress:
        """The budget rule: complete and pruned trials count, and failed ones that were
        marked counted (diverged, or out of retries); trials queued by hand count like any
        other. Trials copied in by a warm start (all COMPLETE) do not count."""
        complete = by_state.get("COMPLETE", 0) - warm_start
        counted = complete + by_state.get("PRUNED", 0) + counted_fails
        running, waiting = by_state.get("RUNNING", 0), by_state.get("WAITING", 0)
        return cls(
            counted=counted,
            running=running,
            waiting=waiting,
            by_state=by_state,
            warm_start=warm_start,
        )


def counted_fails() -> sa.Select[Any]:
    """Failed trials that count in their study's budget, by study name (a query)."""
    t, r = trials_table.c, trial_runs_table.c
    return (
        sa.select(r.study_name, sa.func.count())
        .select_from(trial_runs_table.join(trials_table, t.trial_id == r.trial_id))
        .where(r.counted, state_is("FAIL"))
        .group_by(r.study_name)
    )


def warm_started() -> sa.Select[Any]:
    """Trials copied in by a warm start, by study id (a query)."""
    t, a = trials_table.c, user_attrs_table.c
    return (
        sa.select(t.study_id, sa.func.count())
        .select_from(user_attrs_table.join(trials_table, t.trial_id == a.trial_id))
        .where(a.key == trial_attrs.WARM_START)
        .group_by(t.study_id)
    )


def study_progress(engine: Engine, name: str, study_id: int) -> Progress:
    """Counts by Optuna state, and the budget count, in three small queries."""
    t = trials_table.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.state, sa.func.count()).where(t.study_id == study_id).group_by(t.state)
        ).all()
        fails = conn.execute(counted_fails().where(trial_runs_table.c.study_name == name)).all()
        warm = conn.execute(warm_started().where(t.study_id == study_id)).all()
    by_state = {str(state): int(n) for state, n in rows}
    return Progress.of(by_state, sum(int(n) for _, n in fails), sum(int(n) for _, n in warm))


def claim_lock_key(study_name: str) -> str:
    """The lock that guards a study's budget: claims reserve slots under it, and changes to
    n_trials and parameters queued by hand are made under it."""
    return f"noisetune-claim:{study_name}"


def slots_used(study_name: Any) -> Any:
    """Slots of a study's budget in use: claimed trials that hold one, and reservations
    (a scalar expression; `study_name` a value or a column)."""
    r, p = trial_runs_table.c, reservations_table.c
    held = sa.select(sa.func.count()).where(r.study_name == study_name, HOLDS_SLOT)
    reserved = sa.select(sa.func.count()).where(p.study_name == study_name)
    return held.scalar_subquery() + reserved.scalar_subquery()


@dataclass(frozen=True)
class QueueRoom:
    """Room in a study's budget for trials queued by hand: n_trials less the slots in use
    and the trials already waiting (queued by hand or retries), each of which will take a
    slot when a worker claims it."""

    n_trials: int
    used: int
    waiting: int

    @property
    def left(self) -> int:
        return max(0, self.n_trials - self.used - self.waiting)


def queue_room(conn: sa.Connection, row: StudyRow) -> QueueRoom:
    """The study's room to queue, read in the caller's transaction (which holds the study's
    `claim_lock_key`, so that no claim or other queuing changes it meanwhile)."""
    t, s = trials_table.c, studies_table.c
    waiting = sa.select(sa.func.count()).where(t.study_id == row.study_id, state_is("WAITING"))
    query = sa.select(
        s.n_trials, slots_used(s.name).label("used"), waiting.scalar_subquery().label("waiting")
    ).where(s.name == row.name)
    found = conn.execute(query).one()
    return QueueRoom(int(found.n_trials), int(found.used), int(found.waiting))


def study_status(row: StudyRow, progress: Progress) -> str:
    """running, stopped or failed as stored; completed once the budget is spent and idle.

    A failed study stays failed even when its last trials spent the budget: the failure is
    what its owner needs to see.
    """
    if row.status != "failed" and progress.counted >= row.n_trials and progress.running == 0:
        return "completed"
    return row.status


STUDIES_LOCK = "noisetune-studies"


class StudyExists(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a study named {name!r} already exists")


def register_study(
    storage: RDBStorage, spec: StudySpec, warm_trials: Sequence[FrozenTrial] = ()
) -> None:
    """Create the Optuna study and its noisetune row, under a lock so names stay unique.

    The spec is stored whole with the study, so that any worker can rebuild its sampler
    and pruner (Optuna persists neither). `warm_trials` (a warm start's copies, complete)
    are added in the transaction that adds the row, so no worker samples before they are
    in. Validating what users send is the caller's.
    """
    payload = spec.model_dump(mode="json")
    engine = storage.engine
    with advisory_lock(engine, STUDIES_LOCK):
        taken = get_study_row(engine, spec.name) or _optuna_study_id(storage, spec.name)
        if taken is not None:
            raise StudyExists(spec.name)
        try:
            study = optuna.create_study(
                study_name=spec.name, storage=storage, direction=spec.direction
            )
        except optuna.exceptions.DuplicatedStudyError:
            raise StudyExists(spec.name) from None
        study_id = storage.get_study_id_from_name(spec.name)
        try:
            study.set_user_attr("noisetune_spec", payload)
            with engine.begin() as conn:
                insert_complete_trials(conn, study_id, warm_trials)
                conn.execute(
                    sa.insert(studies_table).values(
                        name=spec.name,
                        study_id=study_id,
                        spec=json.dumps(payload),
                        status="running",
                        priority=spec.priority,
                        n_trials=spec.n_trials,
                        created_at=time.time(),
                    )
                )
        except BaseException:
            # Leave no Optuna study behind without its row: workers would never see it.
            storage.delete_study(study_id)
            raise


def _optuna_study_id(storage: RDBStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def unregister_study(storage: RDBStorage, name: str) -> bool:
    """Delete the study, its trials and its noisetune rows; False if there was none."""
    engine = storage.engine
    with advisory_lock(engine, STUDIES_LOCK):
        if get_study_row(engine, name) is None:
            return False
        study_id = _optuna_study_id(storage, name)
        if study_id is not None:
            storage.delete_study(study_id)
        with engine.begin() as conn:
            conn.execute(sa.delete(trial_runs_table).where(trial_runs_table.c.study_name == name))
            conn.execute(sa.delete(studies_table).where(studies_table.c.name == name))
    return True
