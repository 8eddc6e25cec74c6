"""A study's trials as CSV or JSON Lines, produced a page at a time.

Both formats are generators of text chunks over keyset pages of trials (by number), each
page read in its own short connection: a study of 100,000 trials is never held in memory,
and a slow reader holds no transaction open. The API streams them
(``GET .../trials?format=csv|jsonl``) and ``noisetune export`` writes them to a file.

CSV: one row per trial, with a header; numbers as numbers, missing values as empty cells,
times in ISO 8601 (UTC), so that ``pandas.read_csv`` gives each column its type. Columns:
number, state, value, ``params_<name>`` per sampled parameter of the space,
``metrics_<name>`` per final metric any trial recorded (the task's metrics first),
fail_reason, worker, device, datetime_start, datetime_complete, wall_time_s, and origin
(``sampler``, ``queued`` by hand, ``retry`` or ``warm_start``).

JSON Lines: one trial's full record per line, as ``GET .../trials/N`` answers it (curves
and runs included).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from optuna.storages import RDBStorage

from search_spaces import StudySpec, trial_attrs
from search_spaces.optuna_adapter import trials_table, user_attrs_table
from search_spaces.study_rows import StudyRow
from service.schemas import TrialPublic
from service.studies import require_row
from service.trials import RECORD_ATTRS, full_record, page_after, parse_state

ExportFormat = Literal["csv", "jsonl"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv", "jsonl": "application/x-ndjson"}
# Trials per page: CSV rows are small; a full record carries its curves.
CSV_PAGE, JSONL_PAGE, KEYS_PAGE = 1000, 200, 5000


def export_trials(
    storage: RDBStorage, name: str, fmt: ExportFormat, state: str | None = None
) -> Iterator[str]:
    """The study's trials (those in `state`, if given) in `fmt`, as chunks of text.

    The study is looked up now (`StudyNotFound` before the first chunk); its trials are
    read as the chunks are taken.
    """
    row = require_row(storage, name)
    wanted = parse_state(state)
    if fmt == "csv":
        return _csv(storage.engine, row, wanted)
    return _jsonl(storage.engine, row, wanted)


def _pages(engine: sa.Engine, row: StudyRow, state: str | None, size: int) -> Iterator[list[Any]]:
    after = -1
    while True:
        page = page_after(engine, row.study_id, state, after, size)
        if not page:
            return
        yield page
        after = page[-1].number


def _attrs_by_number(
    engine: sa.Engine, study_id: int, numbers: list[int], keys: Iterable[str]
) -> dict[int, dict[str, Any]]:
    """The user attrs `keys` of the study's trials `numbers`, by trial number."""
    t, a = trials_table.c, user_attrs_table.c
    query = (
        sa.select(t.number, a.key, a.value_json)
        .select_from(user_attrs_table.join(trials_table, t.trial_id == a.trial_id))
        .where(t.study_id == study_id, t.number.in_(numbers), a.key.in_(list(keys)))
    )
    out: dict[int, dict[str, Any]] = {n: {} for n in numbers}
    with engine.connect() as conn:
        for number, key, value in conn.execute(query):
            out[number][key] = json.loads(value)
    return out


def _jsonl(engine: sa.Engine, row: StudyRow, state: str | None) -> Iterator[str]:
    for page in _pages(engine, row, state, JSONL_PAGE):
        attrs = _attrs_by_number(engine, row.study_id, [t.number for t in page], RECORD_ATTRS)
        yield "".join(full_record(t, attrs[t.number]).model_dump_json() + "\n" for t in page)


# -- CSV ----------------------------------------------------------------------------------


def _metric_names(engine: sa.Engine, row: StudyRow, declared: Iterable[str]) -> list[str]:
    """Every final metric a trial of the study recorded, the task's declared ones first.

    Read before the first row (a CSV's columns come first), by trial id in pages of the
    metrics attribute alone: only the names are kept.
    """
    t, a = trials_table.c, user_attrs_table.c
    names = dict.fromkeys(declared)
    seen: dict[str, None] = {}
    after = -1
    while True:
        query = (
            sa.select(a.trial_id, a.value_json)
            .select_from(user_attrs_table.join(trials_table, t.trial_id == a.trial_id))
            .where(t.study_id == row.study_id, a.key == trial_attrs.METRICS, a.trial_id > after)
            .order_by(a.trial_id)
            .limit(KEYS_PAGE)
        )
        with engine.connect() as conn:
            page = conn.execute(query).all()
        if not page:
            break
        for _, value in page:
            metrics = json.loads(value)
            if isinstance(metrics, dict):
                seen.update((k, None) for k, v in metrics.items() if _scalar(v))
        after = page[-1].trial_id
    return [*names, *(k for k in seen if k not in names)]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _cell(value: Any) -> Any:
    """A value as CSV writes it: empty when missing, floats exactly (repr), NaN and
    infinities as pandas reads them."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else repr(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _origin(trial: TrialPublic, retry_of: Any) -> str:
    if trial.warm_start is not None:
        return "warm_start"
    if trial.queued:
        return "queued"
    return "retry" if isinstance(retry_of, int) else "sampler"


def _csv(engine: sa.Engine, row: StudyRow, state: str | None) -> Iterator[str]:
    spec = StudySpec.from_stored(row.spec)
    params = list(spec.space.sampled)
    metrics = _metric_names(engine, row, spec.definition.metrics)
    header = [
        "number",
        "state",
        "value",
        *(f"params_{p}" for p in params),
        *(f"metrics_{m}" for m in metrics),
        "fail_reason",
        "worker",
        "device",
        "datetime_start",
        "datetime_complete",
        "wall_time_s",
        "origin",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    yield buffer.getvalue()
    extra = (trial_attrs.WALL_TIME_S, trial_attrs.RETRY_OF)
    for page in _pages(engine, row, state, CSV_PAGE):
        buffer.seek(0)
        buffer.truncate()
        attrs = _attrs_by_number(engine, row.study_id, [t.number for t in page], extra)
        for t in page:
            mine = attrs[t.number]
            final = t.metrics or {}
            wall = mine.get(trial_attrs.WALL_TIME_S)
            cells = [
                t.number,
                t.state,
                t.value,
                *(t.params.get(p) for p in params),
                *(final.get(m) if _scalar(final.get(m)) else None for m in metrics),
                t.fail_reason,
                t.worker,
                t.device,
                t.datetime_start,
                t.datetime_complete,
                wall if isinstance(wall, int | float) and not isinstance(wall, bool) else None,
                _origin(t, mine.get(trial_attrs.RETRY_OF)),
            ]
            writer.writerow([_cell(c) for c in cells])
        yield buffer.getvalue()
