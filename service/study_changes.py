"""Changing a study after it was submitted: its budget, priority, retries and notes.

Plain functions over the shared database, free of FastAPI, like service.studies. Changes
to the budget are made under the study's budget lock (the one claims reserve under), so a
claim sees either the old n_trials or the new one, never a mix.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from optuna.storages import RDBStorage

from search_spaces.locks import locked_transaction
from search_spaces.study_rows import claim_lock_key, study_progress, to_study_row
from search_spaces.tables import studies_table
from service.schemas import StudyPublic, StudyUpdate
from service.studies import InvalidInput, get_study, require_row

# The spec fields a change rewrites, beside the row's own columns where it has them.
_SPEC_FIELDS = ("n_trials", "priority", "max_retries")


class BudgetConflict(Exception):
    """A change the study's budget cannot take as it stands (HTTP 409); the message says
    what is left and what to do."""


def update_study(storage: RDBStorage, name: str, update: StudyUpdate) -> StudyPublic:
    """Change what `update` sets and leave the rest; the study's status stays as it is.

    Growing `n_trials` past what is counted makes a completed study running again (its
    status is derived from the count); a stopped or failed study stays so until resumed.
    `n_trials` below the trials already counted is a `BudgetConflict`.
    """
    changes = update.model_dump(exclude_unset=True, exclude_none=True)
    if not changes:
        raise InvalidInput(
            ["body"], "nothing to change: give n_trials, priority, max_retries or notes"
        )
    row = require_row(storage, name)
    s = studies_table.c
    with locked_transaction(storage.engine, claim_lock_key(name)) as conn:
        current = conn.execute(sa.select(studies_table).where(s.name == name)).first()
        if current is None:  # deleted meanwhile
            return get_study(storage, name)
        row = to_study_row(current)
        n_trials = changes.get("n_trials")
        if n_trials is not None:
            counted = study_progress(storage.engine, name, row.study_id).counted
            if n_trials < counted:
                raise BudgetConflict(
                    f"n_trials: {n_trials} is below the {counted} trials this study has "
                    f"already counted; it can shrink to {counted} at least"
                )
        spec: dict[str, Any] = {**row.spec, **{k: changes[k] for k in _SPEC_FIELDS if k in changes}}
        values: dict[str, Any] = {"spec": json.dumps(spec)}
        for column in ("n_trials", "priority"):
            if column in changes:
                values[column] = changes[column]
        if "notes" in changes:
            values["notes"] = changes["notes"] or None
        conn.execute(sa.update(studies_table).where(s.name == name).values(values))
    if spec != row.spec:
        # The copy Optuna keeps with the study (registration wrote it) follows.
        storage.set_study_user_attr(row.study_id, "noisetune_spec", spec)
    return get_study(storage, name)
