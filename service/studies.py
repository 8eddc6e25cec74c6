"""Studies as the service sees them: create, read, stop, resume, delete, trials, importance.

Plain functions over the shared database, free of FastAPI: the API and the CLI both call
them, and errors are domain exceptions that the app maps to HTTP status codes.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import RDBStorage

from search_spaces import ResourceLimitError, StudySpec, check_resources
from search_spaces._study_spec import NAME_PATTERN
from search_spaces.locks import advisory_lock
from search_spaces.storage import now
from search_spaces.study_rows import (
    StudyRow,
    get_study_row,
    list_study_rows,
    set_study_status,
    study_progress,
    study_status,
)
from search_spaces.tables import studies_table, trial_runs_table
from service.schemas import (
    TRIAL_STATES,
    BestTrialPublic,
    ProgressPublic,
    StudiesPublic,
    StudyPublic,
)

STUDIES_LOCK = "noisetune-studies"
# Priority lives in a 32-bit column; bigger values would fail in the database, not here.
PRIORITY_RANGE = (-(2**31), 2**31 - 1)


class StudyNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no study named {name!r}")


class StudyExists(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a study named {name!r} already exists")


class InvalidInput(ValueError):
    """Input that passed parsing but cannot be used; `loc` names the field at fault."""

    def __init__(self, loc: list[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def _check_storable(payload: Any, loc: list[str | int]) -> None:
    """Reject what JSON columns and responses cannot hold faithfully (NaN, infinities)."""
    if isinstance(payload, float) and not math.isfinite(payload):
        raise InvalidInput(loc, f"{'.'.join(map(str, loc[1:]))}: must be a finite number")
    if isinstance(payload, dict):
        for key, value in payload.items():
            _check_storable(value, [*loc, key])
    elif isinstance(payload, list):
        for i, value in enumerate(payload):
            _check_storable(value, [*loc, i])


def create_study(
    storage: RDBStorage, spec: StudySpec, *, max_trial_memory: int | None = None
) -> StudyPublic:
    """Create the Optuna study and its noisetune row, under a lock so names stay unique.

    With `max_trial_memory` (bytes), a study whose trials the task estimates may need more
    is refused (`InvalidInput` with the estimate).
    """
    if max_trial_memory is not None:
        try:
            check_resources(spec, max_trial_memory)
        except ResourceLimitError as exc:
            raise InvalidInput(["body", "task_config"], str(exc)) from None
    # Checked before the JSON dump, which would quietly turn NaN and infinities into null.
    _check_storable(spec.model_dump(), ["body"])
    low, high = PRIORITY_RANGE
    if not low <= spec.priority <= high:
        raise InvalidInput(["body", "priority"], f"priority: must be in [{low}, {high}]")
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
                conn.execute(
                    sa.insert(studies_table).values(
                        name=spec.name,
                        study_id=study_id,
                        spec=json.dumps(payload),
                        status="running",
                        priority=spec.priority,
                        n_trials=spec.n_trials,
                        created_at=now(),
                    )
                )
        except BaseException:
            # Leave no Optuna study behind without its row: workers would never see it.
            storage.delete_study(study_id)
            raise
    return get_study(storage, spec.name)


def _optuna_study_id(storage: RDBStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def require_row(storage: RDBStorage, name: str) -> StudyRow:
    """The study's row, or `StudyNotFound` (HTTP 404): the one lookup of a study by name."""
    # A name no spec can have is unknown without asking the database (which may refuse
    # it outright, e.g. PostgreSQL and NUL characters).
    row = get_study_row(storage.engine, name) if re.fullmatch(NAME_PATTERN, name) else None
    if row is None:
        raise StudyNotFound(name)
    return row


def _best_trial(storage: RDBStorage, study_id: int) -> BestTrialPublic | None:
    try:
        best = storage.get_best_trial(study_id)
    except ValueError:  # no complete trial yet
        return None
    return BestTrialPublic(number=best.number, value=best.value, params=best.params)


def _public(storage: RDBStorage, row: StudyRow) -> StudyPublic:
    progress = study_progress(storage.engine, row.name, row.study_id)
    return StudyPublic(
        name=row.name,
        spec=row.spec,
        status=study_status(row, progress),  # type: ignore[arg-type]
        n_trials=row.n_trials,
        progress=ProgressPublic(
            finished=progress.counted, running=progress.running, waiting=progress.waiting
        ),
        counts={state: progress.by_state.get(state, 0) for state in TRIAL_STATES},
        best_trial=_best_trial(storage, row.study_id),
        created_at=datetime.fromtimestamp(row.created_at, tz=UTC),
        priority=row.priority,
        fail_reason=row.fail_reason,
    )


def get_study(storage: RDBStorage, name: str) -> StudyPublic:
    return _public(storage, require_row(storage, name))


def list_studies(storage: RDBStorage) -> StudiesPublic:
    data = [_public(storage, row) for row in list_study_rows(storage.engine)]
    return StudiesPublic(data=data, count=len(data))


def set_status(storage: RDBStorage, name: str, status: str) -> StudyPublic:
    """Stop (workers take no new trials; running ones finish) or resume a study.

    Resuming a failed study clears its failure: workers serve it again.
    """
    require_row(storage, name)
    set_study_status(storage.engine, name, status)
    return get_study(storage, name)


def delete_study(storage: RDBStorage, name: str) -> None:
    engine = storage.engine
    with advisory_lock(engine, STUDIES_LOCK):
        row = require_row(storage, name)
        study_id = _optuna_study_id(storage, name)
        if study_id is not None:
            storage.delete_study(study_id)
        with engine.begin() as conn:
            conn.execute(sa.delete(trial_runs_table).where(trial_runs_table.c.study_name == name))
            conn.execute(sa.delete(studies_table).where(studies_table.c.name == row.name))
