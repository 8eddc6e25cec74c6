"""Parameter sets queued by hand: checked against the study's space, counted in its budget.

Each set becomes one WAITING trial with those parameters fixed (the sampler draws any left
out) and the ``queued`` mark in its record. Workers pop a waiting trial before sampling a
new one, and Optuna hands each to exactly one of them (see worker.claims). Queued trials
count in n_trials like any other, so no more are queued than the budget has left.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.storages import RDBStorage

from search_spaces import StudySpec, trial_attrs
from search_spaces.locks import locked_transaction
from search_spaces.optuna_adapter import enqueue_params
from search_spaces.points import PointError, queued_params
from search_spaces.study_rows import claim_lock_key, queue_room
from service.schemas import QueuedTrialCreate, QueuedTrialPublic, QueuedTrialsPublic
from service.studies import InvalidInput, require_row
from service.study_changes import BudgetConflict

# A body may queue a list; more than a whole study's largest budget is never needed.
MAX_QUEUED_AT_ONCE = 10_000


def enqueue(
    storage: RDBStorage, name: str, sets: Sequence[QueuedTrialCreate], *, listed: bool = True
) -> QueuedTrialsPublic:
    """Queue each parameter set of `sets` (all or none); `listed` says whether the body was
    a list, for the location of an error.

    `InvalidInput` names the first parameter that is unknown, out of range, a fixed one
    given another value, or conditional without its parents; `BudgetConflict` when more
    sets were given than the budget has left.
    """
    row = require_row(storage, name)
    if not sets:
        raise InvalidInput(["body"], "give at least one parameter set ({'params': {...}})")
    if len(sets) > MAX_QUEUED_AT_ONCE:
        raise InvalidInput(["body"], f"at most {MAX_QUEUED_AT_ONCE} parameter sets at once")
    space = StudySpec.from_stored(row.spec).space
    checked = []
    for i, s in enumerate(sets):
        try:
            checked.append(queued_params(space, s.params))
        except PointError as exc:
            where: list[str | int] = ["body", i] if listed else ["body"]
            prefix = f"[{i}].params" if listed else "params"
            raise InvalidInput([*where, "params", exc.param], f"{prefix}.{exc}") from None
    queued = []
    with locked_transaction(storage.engine, claim_lock_key(name)) as conn:
        room = queue_room(conn, row)
        if len(checked) > room.left:
            raise BudgetConflict(
                f"{len(checked)} parameter sets given, but the budget has {room.left} "
                f"trials left (n_trials {room.n_trials}: {room.used} finished or running, "
                f"{room.waiting} queued); grow n_trials first (PATCH /api/v1/studies/{name} "
                f"or `noisetune study set {name} --n-trials N`)"
            )
        for params in checked:
            marks = {trial_attrs.QUEUED: True}
            number = enqueue_params(storage, row.study_id, params, marks)
            queued.append(QueuedTrialPublic(number=number, params=params))
    return QueuedTrialsPublic(data=queued, count=len(queued))
