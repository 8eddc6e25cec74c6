"""A study's trials, one page at a time, as the API and the dashboard show them."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from optuna.storages import RDBStorage

from search_spaces import trial_attrs
from search_spaces.optuna_adapter import (
    distribution,
    intermediate_values_table,
    params_table,
    state_is,
    stored_float,
    system_attrs_table,
    trials_table,
    user_attrs_table,
    utc,
    values_table,
)
from search_spaces.study_rows import StudyRow
from search_spaces.trial_logs import read_log
from service.schemas import TRIAL_STATES, TrialPublic, TrialRecordPublic, TrialsPublic
from service.studies import InvalidInput, require_row

# The user attrs a trial's page row shows, with the type each must have.
_ATTRS = {
    key: trial_attrs.TYPES[key]
    for key in (
        trial_attrs.WORKER,
        trial_attrs.HOST,
        trial_attrs.DEVICE,
        trial_attrs.ATTEMPT,
        trial_attrs.METRICS,
        trial_attrs.FAIL_REASON,
        trial_attrs.RUNS,
        trial_attrs.QUEUED,
        trial_attrs.WARM_START,
    )
}


# What a trial without the attribute (or with one of an unexpected type) shows.
_MISSING: dict[str, Any] = {key: None for key in _ATTRS} | {trial_attrs.QUEUED: False}


def _well_formed(key: str, value: Any) -> bool:
    if not isinstance(value, _ATTRS[key]):
        return False
    if key == trial_attrs.WARM_START and isinstance(value, dict):
        return isinstance(value.get("study"), str) and isinstance(value.get("number"), int)
    return True


def parse_state(state: str | None) -> str | None:
    if state is None or state == "":
        return None
    upper = state.upper()
    if upper not in TRIAL_STATES:
        raise InvalidInput(
            ["query", "state"],
            f"state: unknown trial state {state!r}; allowed: {', '.join(TRIAL_STATES)}",
        )
    return upper


def list_trials(
    storage: RDBStorage, name: str, *, state: str | None = None, offset: int = 0, limit: int = 100
) -> TrialsPublic:
    """One page of a study's trials by number; `count` covers every trial the filter matches."""
    row = require_row(storage, name)
    data, count = _load_page(storage.engine, row.study_id, parse_state(state), offset, limit)
    return TrialsPublic(data=data, count=count)


def _load_page(
    engine: sa.Engine,
    study_id: int,
    state: str | None,
    offset: int,
    limit: int,
    number: int | None = None,
    *,
    after: int | None = None,
    counted: bool = True,
) -> tuple[list[TrialPublic], int]:
    """A page by number: from `offset`, or (`after`, a keyset) the trials numbered above it;
    with the count of every trial the filter matches unless `counted` is False (then -1)."""
    t_ = trials_table
    where = [t_.c.study_id == study_id]
    if number is not None:
        where.append(t_.c.number == number)
    if state is not None:
        where.append(state_is(state))
    with engine.connect() as conn:
        total = -1
        if counted:
            count = conn.execute(sa.select(sa.func.count()).select_from(t_).where(*where))
            total = int(count.scalar_one())
        if after is not None:
            where.append(t_.c.number > after)
        page = conn.execute(
            sa.select(t_).where(*where).order_by(t_.c.number).offset(offset).limit(limit)
        ).all()
        ids = [t.trial_id for t in page]

        def rows(table: sa.TableClause, *extra: Any) -> list[Any]:
            query = sa.select(table).where(table.c.trial_id.in_(ids), *extra)
            return list(conn.execute(query).all()) if ids else []

        params = rows(params_table)
        values = rows(values_table, values_table.c.objective == 0)
        attrs = rows(user_attrs_table, user_attrs_table.c.key.in_(_ATTRS))
        steps = rows(intermediate_values_table)
        # A queued trial (a retry, or enqueued by hand) has its parameters fixed already.
        queued = rows(system_attrs_table, system_attrs_table.c.key == "fixed_params")
    fields: dict[int, dict[str, Any]] = {
        t.trial_id: {"params": {}, "value": None, "intermediate_values": {}} for t in page
    }
    for q in queued:
        fixed = json.loads(q.value_json)
        if isinstance(fixed, dict):
            fields[q.trial_id]["params"] = fixed
    for p in sorted(params, key=lambda p: p.param_id):
        dist = distribution(p.distribution_json)
        fields[p.trial_id]["params"][p.param_name] = dist.to_external_repr(p.param_value)
    for v in values:
        fields[v.trial_id]["value"] = stored_float(v.value, v.value_type)
    for a in attrs:
        value = json.loads(a.value_json)
        # A value of an unexpected type is shown as missing rather than failing the page.
        fields[a.trial_id][a.key] = value if _well_formed(a.key, value) else _MISSING[a.key]
    for s in sorted(steps, key=lambda s: s.step):
        value = stored_float(s.intermediate_value, s.intermediate_value_type)
        fields[s.trial_id]["intermediate_values"][s.step] = value
    data = []
    for t in page:
        start, end = utc(t.datetime_start), utc(t.datetime_complete)
        duration = (end - start).total_seconds() if start and end else None
        data.append(
            TrialPublic.model_validate(
                _MISSING
                | fields[t.trial_id]
                | dict(
                    number=t.number,
                    state=t.state,
                    datetime_start=start,
                    datetime_complete=end,
                    duration_s=duration,
                )
            )
        )
    return data, total


def page_after(
    engine: sa.Engine, study_id: int, state: str | None, after: int, limit: int
) -> list[TrialPublic]:
    """Up to `limit` trials numbered above `after`, by number (a keyset page: reading a
    whole study page by page costs each page the same, however far in)."""
    return _load_page(engine, study_id, state, 0, limit, after=after, counted=False)[0]


class TrialNotFound(LookupError):
    def __init__(self, name: str, number: int) -> None:
        super().__init__(f"study {name!r} has no trial number {number}")


def find_trial(storage: RDBStorage, name: str, number: int) -> tuple[StudyRow, int]:
    """The study's row and trial `number`'s id in Optuna's tables; 404s when either is none."""
    row = require_row(storage, name)
    try:
        return row, storage.get_trial_id_from_study_id_trial_number(row.study_id, number)
    except KeyError:
        raise TrialNotFound(name, number) from None


def trial_id_of(storage: RDBStorage, name: str, number: int) -> int:
    """Trial `number` of the study, as Optuna's row id; `TrialNotFound` (404) if none."""
    return find_trial(storage, name, number)[1]


def get_trial(storage: RDBStorage, name: str, number: int) -> TrialRecordPublic:
    """Trial `number` in full: its list entry, curve, the trial it retries, its wall time."""
    row, trial_id = find_trial(storage, name, number)
    listed, _ = _load_page(storage.engine, row.study_id, None, 0, 1, number=number)
    return full_record(listed[0], storage.get_trial_user_attrs(trial_id))


# The user attrs a full record adds to a trial's list entry.
RECORD_ATTRS = (
    trial_attrs.CURVE,
    trial_attrs.RETRY_OF,
    trial_attrs.WALL_TIME_S,
    trial_attrs.RESUMED_FROM_EPOCH,
    trial_attrs.RUNS,
    trial_attrs.RUN_CURVES,
)


def full_record(listed: TrialPublic, attrs: dict[str, Any]) -> TrialRecordPublic:
    """A trial's full record: its list entry plus what `attrs` (its user attrs, at least
    RECORD_ATTRS of them) add."""
    curve = attrs.get(trial_attrs.CURVE)
    retry_of, wall = attrs.get(trial_attrs.RETRY_OF), attrs.get(trial_attrs.WALL_TIME_S)
    resumed = attrs.get(trial_attrs.RESUMED_FROM_EPOCH)
    curve = curve if isinstance(curve, list) else []
    return TrialRecordPublic.model_validate(
        listed.model_dump()
        | {
            "runs": _runs_with_curves(attrs, curve),
            "curve": curve,
            "retry_of": retry_of if isinstance(retry_of, int) else None,
            "wall_time_s": wall if isinstance(wall, int | float) else None,
            "resumed_from_epoch": resumed if isinstance(resumed, int) else None,
        }
    )


def _runs_with_curves(attrs: dict[str, Any], curve: list[Any]) -> list[dict[str, Any]] | None:
    """Each run of the trial with its curve (a lone run's is the trial's)."""
    runs = attrs.get(trial_attrs.RUNS)
    if not isinstance(runs, list):
        return None
    curves = attrs.get(trial_attrs.RUN_CURVES)
    if not isinstance(curves, list) or len(curves) != len(runs):
        curves = [curve] if len(runs) == 1 else [[] for _ in runs]
    return [{**run, "curve": c} for run, c in zip(runs, curves, strict=True)]


def trial_log(storage: RDBStorage, name: str, number: int) -> str:
    """What trial `number` printed, and its traceback if it failed ("" before it printed)."""
    log = read_log(storage.engine, trial_id_of(storage, name, number))
    return "" if log is None else log.render()
