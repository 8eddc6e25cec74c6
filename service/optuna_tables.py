"""Optuna's own tables, read directly.

One page of trials then costs a handful of queries whatever its size, where
storage.get_trial costs several per trial and get_all_trials reads the whole study.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache

import sqlalchemy as sa
from optuna.distributions import BaseDistribution, json_to_distribution

from search_spaces.storage import optuna_user_attrs

trials = sa.table(
    "trials",
    *map(sa.column, ("trial_id", "number", "study_id", "state")),
    sa.column("datetime_start", sa.DateTime),
    sa.column("datetime_complete", sa.DateTime),
)
params = sa.table(
    "trial_params",
    *map(sa.column, ("trial_id", "param_id", "param_name", "param_value", "distribution_json")),
)
values = sa.table("trial_values", *map(sa.column, ("trial_id", "objective", "value", "value_type")))
user_attrs = optuna_user_attrs
steps = sa.table(
    "trial_intermediate_values",
    *map(sa.column, ("trial_id", "step", "intermediate_value", "intermediate_value_type")),
)

SPECIAL = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}


@lru_cache(maxsize=4096)
def distribution(distribution_json: str) -> BaseDistribution:
    return json_to_distribution(distribution_json)


def stored_float(value: float | None, kind: str) -> float | None:
    return SPECIAL.get(kind, value)


def utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)  # Optuna stores naive UTC


system_attrs = sa.table(
    "trial_system_attributes", *map(sa.column, ("trial_id", "key", "value_json"))
)
