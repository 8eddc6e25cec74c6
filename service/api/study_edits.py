"""``/studies/{name}``: changing a study (PATCH) and queuing parameter sets by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from service import queued_trials, study_changes
from service.deps import ReadAccess, StorageDep, WriteAccess
from service.schemas import QueuedTrialCreate, QueuedTrialsPublic, StudyPublic, StudyUpdate

router = APIRouter(prefix="/studies", tags=["studies"], dependencies=[ReadAccess])


@router.patch("/{name}", dependencies=[WriteAccess])
def update_study(name: str, update: StudyUpdate, storage: StorageDep) -> StudyPublic:
    """Change `n_trials` (grow or shrink), `priority`, `max_retries` or `notes`.

    Growing `n_trials` makes a completed study running again, and workers pick it up; a
    stopped or failed study keeps its status until resumed. 409 when `n_trials` is below
    the trials already counted.
    """
    return study_changes.update_study(storage, name, update)


@router.post(
    "/{name}/trials",
    status_code=201,
    dependencies=[WriteAccess],
    responses={409: {"description": "more sets than the budget has left"}},
)
def queue_trials(
    name: str,
    body: Annotated[QueuedTrialCreate | list[QueuedTrialCreate], Body()],
    storage: StorageDep,
) -> QueuedTrialsPublic:
    """Queue one parameter set (`{"params": {...}}`) or a list of them.

    Each is checked against the study's space (422 naming an unknown parameter, a value out
    of range, or a fixed parameter given another value); parameters left out are sampled.
    Each set runs exactly once, counts in `n_trials`, and is marked `queued` in its record.
    409, naming what is left, when more sets are given than the budget has left.
    """
    listed = isinstance(body, list)
    sets = body if isinstance(body, list) else [body]
    return queued_trials.enqueue(storage, name, sets, listed=listed)
