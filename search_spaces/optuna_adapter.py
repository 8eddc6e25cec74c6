"""Everything noisetune uses of Optuna beyond its public API, in one place.

Optuna is a dependency we do not own. Its public API costs a transaction, or a read of the
whole study, where a fleet of workers and a dashboard over 10,000 trials need one query;
so noisetune reads and writes Optuna's tables directly, and uses a few private attributes
of its trials, studies and storages. All of that is here, checked by
tests/search_spaces/test_optuna_adapter.py against the installed Optuna: an upgrade that
changes any of it breaks this module and its tests, loudly, and nothing else.

- Tables: Optuna's RDB layout (schema v3 and later), as SQLAlchemy table clauses.
- Writes: user attributes, intermediate values and complete trials as Optuna stores them,
  many at once; a queued trial as ``Study.enqueue_trial`` makes it, with its number.
- Private attributes: a trial's id and its cached FrozenTrial, a study's storage, Optuna's
  trial cache (``_CachedStorage``), and the helpers ``Study.tell`` and ``Trial.should_prune``
  use internally.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.storages._rdb import models as _models
from optuna.trial import FrozenTrial, TrialState

from search_spaces.storage import upsert

# -- tables ----------------------------------------------------------------------------------

trials_table = sa.table(
    "trials",
    *map(sa.column, ("trial_id", "number", "study_id", "state")),
    sa.column("datetime_start", sa.DateTime),
    sa.column("datetime_complete", sa.DateTime),
)
params_table = sa.table(
    "trial_params",
    *map(sa.column, ("trial_id", "param_id", "param_name", "param_value", "distribution_json")),
)
values_table = sa.table(
    "trial_values", *map(sa.column, ("trial_id", "objective", "value", "value_type"))
)
user_attrs_table = sa.table(
    "trial_user_attributes", *map(sa.column, ("trial_id", "key", "value_json"))
)
system_attrs_table = sa.table(
    "trial_system_attributes", *map(sa.column, ("trial_id", "key", "value_json"))
)
intermediate_values_table = sa.table(
    "trial_intermediate_values",
    *map(sa.column, ("trial_id", "step", "intermediate_value", "intermediate_value_type")),
)
# Writes go through Optuna's own Table object: its value-type column is an enum that needs
# Optuna's type. Reads use the plain clause above: the kind as text, with no enum to build
# per row (a dashboard reads tens of thousands of them).
_intermediate_values_model = _models.TrialIntermediateValueModel.__table__
FINITE = _models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE

# How Optuna stores floats JSON cannot carry: a value-type column beside the value.
_SPECIAL = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}


def state_is(*states: str) -> Any:
    """Optuna's state column is an enum on PostgreSQL: compare with literals, not a text
    parameter (which PostgreSQL would refuse to compare with the enum)."""
    for state in states:
        TrialState[state]  # a KeyError names a state Optuna does not have
    column = trials_table.c.state
    literals: list[Any] = [sa.literal_column(f"'{state}'") for state in states]
    return column == literals[0] if len(literals) == 1 else column.in_(literals)


def stored_float(value: float | None, kind: Any) -> float | None:
    """A value as Optuna stored it, with its kind (``FINITE``, ``INF_POS``, ...).

    Called once per stored value when a dashboard reads a large study: finite values, by
    far the most, take the first test.
    """
    if kind == "FINITE" or kind is FINITE:
        return value
    special = _SPECIAL.get(str(getattr(kind, "name", kind)).split(".")[-1])
    return special if special is not None else value


@lru_cache(maxsize=4096)
def distribution(distribution_json: str) -> BaseDistribution:
    """A parameter's distribution from its stored JSON (parsed once per distinct text)."""
    return json_to_distribution(distribution_json)


def trial_state(raw: Any) -> TrialState:
    """A state column's value (an enum member, or its name as text) as a TrialState."""
    return raw if isinstance(raw, TrialState) else TrialState[str(raw).split(".")[-1]]


def utc(raw: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (Optuna stores naive UTC)."""
    if raw is None:
        return None
    when = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    return when.replace(tzinfo=UTC)


def naive(raw: Any) -> datetime | None:
    """A stored time as the naive UTC datetime FrozenTrial holds."""
    if raw is None or (isinstance(raw, datetime) and raw.tzinfo is None):
        return raw  # as Optuna stores it, the common case
    when = utc(raw)
    return None if when is None else when.replace(tzinfo=None)


# -- writes ----------------------------------------------------------------------------------


def write_user_attrs(conn: sa.Connection, attrs: dict[int, dict[str, Any]]) -> None:
    """Set user attributes (``{trial_id: {key: value}}``) in the caller's transaction.

    Stored as Optuna stores them (JSON text, one row per key, a new value replaces the old).
    `Trial.set_user_attr` costs a transaction per attribute; a claim or a result writes
    several at once. The caller checks, in the same transaction, that the trials are still
    RUNNING: Optuna refuses to change a finished trial.
    """
    rows = [
        {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
        for trial_id, items in attrs.items()
        for k, v in items.items()
    ]
    if rows:
        upsert(conn, user_attrs_table, ["trial_id", "key"], rows)


def write_intermediate_values(
    conn: sa.Connection, values: dict[int, tuple[int, float]]
) -> set[int]:
    """Store ``{trial_id: (step, finite value)}`` as ``Trial.report`` would, in the caller's
    transaction, for the trials still RUNNING; returns their ids (the others were finished
    meanwhile, and Optuna refuses to change a finished trial).

    ``Trial.report`` costs a transaction of three statements per value: a stack reporting
    many members' epochs at once writes them all with two.
    """
    if not values:
        return set()
    t = trials_table.c
    running = set(
        conn.execute(
            sa.select(t.trial_id).where(t.trial_id.in_(list(values)), state_is("RUNNING"))
        ).scalars()
    )
    rows = [
        {
            "trial_id": trial_id,
            "step": step,
            "intermediate_value": value,
            "intermediate_value_type": FINITE,
        }
        for trial_id, (step, value) in values.items()
        if trial_id in running
    ]
    if rows:
        upsert(conn, _intermediate_values_model, ["trial_id", "step"], rows)
    return running


_trial_model = _models.TrialModel.__table__
_param_model = _models.TrialParamModel.__table__
_value_model = _models.TrialValueModel.__table__
_user_attr_model = _models.TrialUserAttributeModel.__table__


def insert_complete_trials(
    conn: sa.Connection, study_id: int, trials: Sequence[FrozenTrial]
) -> None:
    """Add COMPLETE single-objective `trials` (params, distributions, value, user attrs) to
    a study no one else is adding to yet, in the caller's transaction, as
    ``Study.add_trials`` would store them, numbered after the study's trials.

    ``add_trials`` costs a locked transaction of a dozen statements per trial (about 0.1 s
    each on PostgreSQL); a warm start copies hundreds at once with five statements in all.
    """
    if not trials:
        return
    for trial in trials:
        if trial.state != TrialState.COMPLETE or trial.value is None:
            raise ValueError(f"only complete single-objective trials are inserted, got {trial}")
    t = trials_table.c
    first = conn.execute(sa.select(sa.func.count()).where(t.study_id == study_id)).scalar_one()
    now = datetime.now()  # naive, as Optuna stores its times
    rows = [
        {
            "number": int(first) + i,
            "study_id": study_id,
            "state": TrialState.COMPLETE,
            "datetime_start": trial.datetime_start or now,
            "datetime_complete": trial.datetime_complete or now,
        }
        for i, trial in enumerate(trials)
    ]
    returned = conn.execute(
        sa.insert(_trial_model).returning(_trial_model.c.trial_id, sort_by_parameter_order=True),
        rows,
    )
    ids = [r.trial_id for r in returned]
    params, values, attrs = [], [], []
    for trial_id, trial in zip(ids, trials, strict=True):
        for name, value in trial.params.items():
            dist = trial.distributions[name]
            params.append(
                {
                    "trial_id": trial_id,
                    "param_name": name,
                    "param_value": dist.to_internal_repr(value),
                    "distribution_json": distribution_to_json(dist),
                }
            )
        assert trial.value is not None  # checked above
        stored, kind = _models.TrialValueModel.value_to_stored_repr(float(trial.value))
        values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
        for key, attr in trial.user_attrs.items():
            attrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(attr)})
    for table, batch in ((_param_model, params), (_value_model, values), (_user_attr_model, attrs)):
        if batch:
            conn.execute(sa.insert(table), batch)


def enqueue_params(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    params: dict[str, Any],
    user_attrs: dict[str, Any],
) -> int:
    """Queue `params` as ``Study.enqueue_trial`` does (a WAITING trial whose parameters are
    fixed, Optuna's ``fixed_params``), and return the queued trial's number, which
    ``enqueue_trial`` does not."""
    template = optuna.trial.create_trial(
        state=TrialState.WAITING, system_attrs={"fixed_params": params}, user_attrs=user_attrs
    )
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    return storage.get_trial_number_from_id(trial_id)


# -- private attributes ----------------------------------------------------------------------


def set_trial_system_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """What a sampler's ``before_trial`` writes about a trial (as Optuna's grid sampler does)."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def trial_db_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's row id in Optuna's tables (``trial_id`` there)."""
    return int(trial._trial_id)


def trial_storage(trial: optuna.Trial) -> optuna.storages.BaseStorage:
    """The storage `trial` writes through (its study's, a trial cache where one is used)."""
    return trial.storage


def frozen_trial(trial: optuna.Trial) -> FrozenTrial:
    """The FrozenTrial Optuna keeps current with every suggest and report made through
    `trial` (reading it back would cost a dozen statements)."""
    return trial._cached_frozen_trial


def note_reported(trial: optuna.Trial, step: int, value: float) -> None:
    """Keep `trial`'s cached copy as ``Trial.report`` keeps it, after a direct write."""
    trial._cached_frozen_trial.intermediate_values[step] = value


def latest_trial(trial: optuna.Trial) -> FrozenTrial:
    """The trial as ``Trial.should_prune`` hands it to the pruner."""
    return trial._get_latest_trial()


def cached_storage(storage: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """Optuna's trial cache over `storage`: reads only what changed since its last read."""
    return optuna.storages._CachedStorage(storage)


def filter_study(study: optuna.Study, trial: FrozenTrial) -> optuna.Study:
    """The study as its pruner partitions it (Hyperband's brackets), as ``Study.tell`` shows
    it to the sampler."""
    return optuna.pruners._filter_study(study, trial)


def quiet_in_memory_studies() -> None:
    """Keep Optuna from logging each throwaway in-memory study it is asked to create."""
    logging.getLogger("optuna.storages._in_memory").setLevel(logging.WARNING)


def read_once(study: optuna.Study) -> optuna.Study | None:
    """The study with its trials read from the database at most once (None if it cannot)."""
    if not isinstance(study._storage, optuna.storages._CachedStorage):
        return None
    judged = copy.copy(study)
    judged._storage = _CacheReadOnce(study._storage)
    return judged


class _CacheReadOnce(optuna.storages._CachedStorage):
    """A view of a process's Optuna trial cache that updates it from the database once.

    Every pruner reads the study's trials through its storage, Hyperband's bracket studies
    included; through this view, one group of reports costs one read, however many trials
    it judges. Writes (rung attributes) go straight to the database, as the cache's do.
    """

    def __init__(self, cache: optuna.storages._CachedStorage) -> None:
        self.__dict__.update(cache.__dict__)  # the same trials, dicts and lock
        self._read: set[int] = set()

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        if study_id not in self._read:
            super()._read_trials_from_remote_storage(study_id)
            self._read.add(study_id)
