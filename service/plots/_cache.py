"""Per-process caches: one snapshot per study, refreshed incrementally, and finished figures.

A dashboard polls every few seconds; reading 10,000 trials each time would take seconds.
So a snapshot is kept per study and only re-read when a cheap signature query says the
study changed, and then only the trials that are new or were unfinished last time
(finished trials never change again). Figures are cached as JSON text under the
snapshot's signature, so a warm request is a dictionary lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial

from search_spaces.optuna_adapter import (
    intermediate_values_table,
    params_table,
    state_is,
    trial_db_id,
    trials_table,
    user_attrs_table,
)
from service.plots._reader import read_trials
from service.plots._snapshot import FINISHED, StudySnapshot
from service.studies import require_row

MAX_SNAPSHOTS = 8
MAX_FIGURES = 512


def _signature_query(study_id: int) -> Any:
    t = trials_table.c
    query = sa.select(t.state, sa.func.count(), sa.func.max(t.trial_id))
    return query.where(t.study_id == study_id).group_by(t.state)


def _live_query(study_id: int) -> Any:
    """Unfinished trials change in place (params, curves, attributes): count their rows."""
    t = trials_table.c
    unfinished = sa.and_(t.study_id == study_id, state_is("RUNNING", "WAITING"))

    def rows_of(table: Any) -> Any:
        joined = table.join(trials_table, t.trial_id == table.c.trial_id)
        return sa.select(sa.func.count()).select_from(joined).where(unfinished).scalar_subquery()

    return sa.select(*map(rows_of, (intermediate_values_table, params_table, user_attrs_table)))


def _signature(engine: sa.Engine, study_id: int) -> tuple[Any, ...]:
    with engine.connect() as conn:
        rows = conn.execute(_signature_query(study_id)).all()
        live: tuple[Any, ...] = ()
        if any(str(state) in ("RUNNING", "WAITING") for state, _, _ in rows):
            live = tuple(conn.execute(_live_query(study_id)).one())
    return (tuple(sorted((str(s), int(n), int(m)) for s, n, m in rows)), live)


def _load_changed(
    storage: optuna.storages.RDBStorage, study_id: int, old: dict[int, FrozenTrial]
) -> list[FrozenTrial]:
    """All trials, re-reading only those that are new or were unfinished in `old`."""
    unfinished = {tid for tid, t in old.items() if t.state not in FINISHED}
    newest = max(old, default=-1)
    try:
        fresh = read_trials(storage.engine, study_id, newest, unfinished)
    except (sa.exc.SQLAlchemyError, KeyError, ValueError, TypeError):
        # Optuna's tables changed shape: its own API is slower but always right.
        return storage.get_all_trials(study_id, deepcopy=False)
    merged = dict(old)
    merged.update({trial_db_id(t): t for t in fresh})
    return list(merged.values())


class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: StudySnapshot | None = None


class SnapshotCache:
    """The latest snapshot of each study, keyed by storage URL and study name."""

    def __init__(self, size: int = MAX_SNAPSHOTS) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def get(self, storage: optuna.storages.RDBStorage, name: str) -> StudySnapshot:
        engine = storage.engine
        row = require_row(storage, name)
        key = (str(engine.url), name)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        # One reader per study at a time: concurrent polls wait for one refresh, not N.
        with entry.lock:
            signature = (row.study_id, _signature(engine, row.study_id))
            snap = entry.snapshot
            if snap is not None and snap.signature == signature:
                return snap
            old = {} if snap is None or snap.study_id != row.study_id else _by_id(snap)
            trials = _load_changed(storage, row.study_id, old)
            trials.sort(key=lambda t: t.number)
            snap = StudySnapshot(name, row.study_id, row.spec, tuple(trials), signature)
            entry.snapshot = snap
            return snap

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _by_id(snap: StudySnapshot) -> dict[int, FrozenTrial]:
    return {trial_db_id(t): t for t in snap.trials}


class ResultCache:
    """A bounded LRU of computed results (figure JSON, importances) under exact keys."""

    def __init__(self, size: int = MAX_FIGURES) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get_or_compute(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


snapshots = SnapshotCache()
figures = ResultCache()
importances = ResultCache(64)
analyses = ResultCache(64)
