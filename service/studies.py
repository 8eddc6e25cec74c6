"""Studies as the service sees them: create, read, stop, resume, delete, trials, importance.

Plain functions over the shared database, free of FastAPI: the API and the CLI both call
them, and errors are domain exceptions that the app maps to HTTP status codes.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from optuna.storages import RDBStorage

from search_spaces import ResourceLimitError, StudySpec, check_resources
from search_spaces._study_spec import NAME_PATTERN
from search_spaces.study_rows import (
    StudyRow,
    get_study_row,
    list_study_rows,
    register_study,
    set_study_status,
    study_progress,
    study_status,
    unregister_study,
)
from service.schemas import (
    TRIAL_STATES,
    BestTrialPublic,
    ProgressPublic,
    StudiesPublic,
    StudyPublic,
)

# Priority lives in a 32-bit column; bigger values would fail in the database, not here.
PRIORITY_RANGE = (-(2**31), 2**31 - 1)


class StudyNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no study named {name!r}")


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
    from service.warm_start import warm_start_trials  # it raises this module's errors

    register_study(storage, spec, warm_start_trials(storage, spec))
    return get_study(storage, spec.name)


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
            finished=progress.counted,
            running=progress.running,
            waiting=progress.waiting,
            warm_start=progress.warm_start,
        ),
        counts={state: progress.by_state.get(state, 0) for state in TRIAL_STATES},
        best_trial=_best_trial(storage, row.study_id),
        created_at=datetime.fromtimestamp(row.created_at, tz=UTC),
        priority=row.priority,
        fail_reason=row.fail_reason,
        notes=row.notes,
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
    require_row(storage, name)
    if not unregister_study(storage, name):
        raise StudyNotFound(name)  # deleted meanwhile
