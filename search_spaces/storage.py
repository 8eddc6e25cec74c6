"""The database both sides share: Optuna's RDB storage plus noisetune's own tables.

The database is the only contract between the service and the workers. This module owns
the URL, the engine settings, the schema (created under a lock, so many processes may start
at once), and the locks that keep trial claims atomic.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models as optuna_models
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url

DEFAULT_STORAGE = "sqlite:///noisetune.db"
STORAGE_ENV = "NOISETUNE_STORAGE"

metadata = sa.MetaData()

studies_table = sa.Table(
    "noisetune_studies",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("study_id", sa.Integer, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    # running | stopped | failed; "completed" is derived from the trial counts.
    sa.Column("status", sa.String(16), nullable=False, default="running"),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("n_trials", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Why the workers stopped the study (status "failed"); cleared by resume.
    sa.Column("fail_reason", sa.Text),
    # Trials that failed with an exception since the last one that did not (NULL: none).
    sa.Column("failure_streak", sa.Integer),
)

workers_table = sa.Table(
    "noisetune_workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("study_name", sa.String(64)),
    sa.Column("trial_id", sa.Integer),
    sa.Column("trial_number", sa.Integer),
    sa.Column("started_at", sa.Float, nullable=False),
    # Unix seconds from the worker's clock; machines of one fleet are assumed NTP-synced.
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("heartbeat_interval", sa.Float, nullable=False),
    # alive | exited | lost
    sa.Column("state", sa.String(16), nullable=False, default="alive"),
)

trial_runs_table = sa.Table(
    "noisetune_trial_runs",
    metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("study_name", sa.String(64), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("worker_id", sa.String(64), index=True),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    # Whether the trial reached a result of its own and so counts in the study's budget.
    sa.Column("counted", sa.Boolean, nullable=False, default=False),
    sa.Column("fail_reason", sa.Text),
    # Seconds the worker spent claiming the trial (lock wait, budget check, ask): /metrics.
    sa.Column("claim_seconds", sa.Float),
)

# A slot of a study's budget taken by a claim that has not recorded its trials yet: claims
# reserve under the study's lock, then ask Optuna outside it. A claimer that dies leaves
# its reservations to the reaper (they are freed once its worker is found lost).
reservations_table = sa.Table(
    "noisetune_reservations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(64), nullable=False, index=True),
    sa.Column("worker_id", sa.String(64), nullable=False, index=True),
    sa.Column("claim", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # Ids only grow, never reused: the reaper tells claims older than a trial by them.
    sqlite_autoincrement=True,
)

tokens_table = sa.Table(
    "noisetune_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("created_at", sa.Float, nullable=False),
    # Unix seconds; last use is recorded at most once a minute per token.
    sa.Column("last_used_at", sa.Float),
    # Revoked tokens stay listed (who had access, until when) and never authorize again.
    sa.Column("revoked_at", sa.Float),
)


# Optuna's tables that noisetune writes besides Optuna (see write_user_attrs).
optuna_trials = sa.table("trials", *map(sa.column, ("trial_id", "study_id", "number", "state")))
optuna_user_attrs = sa.table(
    "trial_user_attributes", *map(sa.column, ("trial_id", "key", "value_json"))
)
# Optuna's own Table object: its value-type column is an enum that needs Optuna's type.
optuna_intermediate_values = optuna_models.TrialIntermediateValueModel.__table__
FINITE = optuna_models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
# Optuna's state column is an enum on PostgreSQL: compare with a literal, not a text parameter.
RUNNING: sa.ColumnClause[Any] = sa.literal_column("'RUNNING'")

# A claimed trial holds one of its study's n_trials slots unless it was given up without a
# result of its own (lost, interrupted, failed with retries left): those, and only those,
# have a fail_reason and are not counted.
HOLDS_SLOT = sa.or_(trial_runs_table.c.counted, trial_runs_table.c.fail_reason.is_(None))


# A worker is lost once it missed this many of its own heartbeat intervals (kill -9, a lost
# machine): the reaper then fails its trials, and the dashboard stops showing it.
MISSED_BEATS = 2


def worker_lost(at: float | None = None) -> sa.ColumnElement[bool]:
    """Workers that exited, were given up, or missed MISSED_BEATS of their own intervals."""
    w = workers_table.c
    at = time.time() if at is None else at
    return sa.or_(w.state != "alive", w.heartbeat_at < at - MISSED_BEATS * w.heartbeat_interval)


def resolve_url(url: str | None = None) -> str:
    """`--storage`, else ``NOISETUNE_STORAGE``, else a SQLite file in the working directory."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def engine_kwargs(url: str, worker: bool = False) -> dict[str, Any]:
    """Engine settings for the server or (`worker`) a worker.

    The server pings each pooled connection before use, so a request after a database
    restart does not fail. Workers do not: they retry any operation a dropped connection
    broke (worker.db_retry), and a ping per checkout would double the round trips of their
    many small transactions.
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        # A long busy timeout lets several local workers queue for SQLite's one writer.
        return {"connect_args": {"timeout": 60}}
    # Bounded pool per process: a fleet of N workers holds at most N * 4 connections.
    return {
        "pool_size": 2,
        "max_overflow": 2,
        "pool_pre_ping": not worker,
        "pool_recycle": 300,
        # A host that drops packets fails fast instead of hanging health checks and claims.
        "connect_args": {"connect_timeout": 10},
    }


def _configure_sqlite(engine: Engine, worker: bool) -> None:
    """Per-connection SQLite settings: commits without fsync, and a worker's write lock.

    ``synchronous=NORMAL``: in WAL mode a commit no longer waits for the disk (a few ms each,
    and a trial commits ~30 times: every reported epoch is one). A crashed process loses
    nothing; a power loss or OS crash may lose the last commits, never the file's
    integrity, and a trial whose result went that way is RUNNING without a live worker:
    it is reaped and run again.

    A worker's transactions also take the write lock at BEGIN (BEGIN IMMEDIATE). Optuna
    reads a row and then writes it in one session (popping a queued trial, finishing a
    trial), relying on SELECT ... FOR UPDATE, which SQLite ignores; and Python's sqlite3
    starts a transaction only at the first write, so the read is not even in it. Two workers
    could then both pop one queued trial. Taking the lock at BEGIN makes each of those steps
    atomic, as it is on PostgreSQL. The server does not: dashboard reads never wait for a
    writer.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        if worker:
            dbapi_connection.isolation_level = None  # sqlite3 emits no BEGIN of its own

    if worker:

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn: sa.Connection) -> None:
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_path(engine: Engine) -> str | None:
    if engine.url.get_backend_name() != "sqlite":
        return None
    db = engine.url.database
    if not db or db == ":memory:":
        raise ValueError("noisetune needs a SQLite file, not an in-memory database")
    return os.path.abspath(db)


def _lock_id(key: str) -> int:
    return zlib.crc32(key.encode()) - 2**31


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    with open(path + ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def advisory_lock(engine: Engine, key: str) -> Iterator[None]:
    """A lock across processes: PostgreSQL advisory lock, or a lock file beside SQLite.

    SQLite's own write lock cannot serve here: Optuna writes through another connection
    while the lock is held, which would deadlock on the one-writer rule.
    """
    path = _sqlite_path(engine)
    if path is not None:
        with _file_lock(path):
            yield
        return
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_id(key)})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_id(key)})
            conn.commit()


@contextmanager
def autocommit(engine: Engine) -> Iterator[sa.Connection]:
    """A connection whose statements commit one by one: a read costs one round trip, not three
    (BEGIN, the query, and the ROLLBACK that returning a connection to the pool sends)."""
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def locked_transaction(engine: Engine, key: str) -> Iterator[sa.Connection]:
    """One transaction that holds the lock `key` (the same lock as advisory_lock) to its end.

    On PostgreSQL the lock is a transaction-level advisory lock, so it is released by the
    very commit that makes the transaction's writes visible: nobody holding the lock next
    can see a state in between. On SQLite the lock file is released after the commit.
    Other connections (Optuna's) may write while it is held; reads here see their commits.
    """
    path = _sqlite_path(engine)
    if path is not None:
        with _file_lock(path), engine.begin() as conn:
            yield conn
        return
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_id(key)})
        yield conn


def add_missing_columns(engine: Engine) -> None:
    """Add the nullable columns that tables made by an earlier noisetune lack.

    `create_all` makes missing tables but leaves existing ones alone; new columns are only
    ever nullable additions, so adding them in place is the whole migration. Idempotent.
    """
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            # LIMIT 0 reads the column names without scanning rows, on every backend.
            have = set(conn.execute(sa.text(f"SELECT * FROM {table.name} LIMIT 0")).keys())
            for column in table.columns:
                if column.name in have or not column.nullable or column.primary_key:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


@cache
def open_storage(url: str | None = None, *, worker: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage on `url` with noisetune's tables beside it; one per process and URL.

    Schema creation and migration run under a lock, so a fleet that starts at once is safe:
    late starters wait and then find the schema in place. A `worker`'s engine does not ping
    pooled connections (see engine_kwargs) and on SQLite locks at BEGIN (_configure_sqlite).
    """
    url = resolve_url(url)
    probe = sa.create_engine(url, **engine_kwargs(url))
    try:
        with advisory_lock(probe, "noisetune-schema"):
            if probe.url.get_backend_name() == "sqlite":
                with probe.connect() as conn:
                    # WAL lets readers (the dashboard) run beside the writer; it persists.
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url, worker))
            if storage.engine.url.get_backend_name() == "sqlite":
                _configure_sqlite(storage.engine, worker)
                storage.engine.dispose()  # connections opened so far lack the settings
            metadata.create_all(storage.engine)
            add_missing_columns(storage.engine)
    finally:
        probe.dispose()
    return storage


def engine_of(storage: optuna.storages.RDBStorage) -> Engine:
    return storage.engine


@dataclass(frozen=True)
class StudyRow:
    name: str
    study_id: int
    spec: dict[str, Any]
    status: str
    priority: int
    n_trials: int
    created_at: float
    fail_reason: str | None = None


def to_study_row(r: Any) -> StudyRow:
    return StudyRow(
        name=r.name,
        study_id=r.study_id,
        spec=json.loads(r.spec),
        status=r.status,
        priority=r.priority,
        n_trials=r.n_trials,
        created_at=r.created_at,
        fail_reason=r.fail_reason,
    )


def get_study_row(engine: Engine, name: str) -> StudyRow | None:
    with engine.connect() as conn:
        r = conn.execute(sa.select(studies_table).where(studies_table.c.name == name)).first()
    return None if r is None else to_study_row(r)


def list_study_rows(engine: Engine) -> list[StudyRow]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(studies_table).order_by(studies_table.c.created_at)).all()
    return [to_study_row(r) for r in rows]


def set_study_status(engine: Engine, name: str, status: str) -> None:
    """Set a study's status by hand: why the workers failed it, and its streak, are cleared."""
    values = {"status": status, "fail_reason": None, "failure_streak": None}
    with engine.begin() as conn:
        conn.execute(sa.update(studies_table).where(studies_table.c.name == name).values(values))


@dataclass(frozen=True)
class Progress:
    """Where a study stands against its budget."""

    counted: int  # trials with a result of their own: complete, pruned, diverged
    running: int
    waiting: int
    by_state: dict[str, int]

    def budget_left(self, n_trials: int) -> int:
        return n_trials - self.counted - self.running


def study_progress(engine: Engine, name: str, study_id: int) -> Progress:
    """Counts by Optuna state, and the budget count, in two small queries."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :s GROUP BY state"),
            {"s": study_id},
        ).all()
        counted_fails = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM noisetune_trial_runs r JOIN trials t "
                "ON t.trial_id = r.trial_id WHERE r.study_name = :n AND r.counted "
                "AND t.state = 'FAIL'"
            ),
            {"n": name},
        ).scalar_one()
    by_state = {str(state): int(n) for state, n in rows}
    counted = by_state.get("COMPLETE", 0) + by_state.get("PRUNED", 0) + int(counted_fails)
    return Progress(
        counted=counted,
        running=by_state.get("RUNNING", 0),
        waiting=by_state.get("WAITING", 0),
        by_state=by_state,
    )


def write_user_attrs(conn: sa.Connection, attrs: dict[int, dict[str, Any]]) -> None:
    """Set Optuna user attributes (``{trial_id: {key: value}}``) in the caller's transaction.

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
    if not rows:
        return
    _upsert(conn, optuna_user_attrs, ["trial_id", "key"], rows)


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
    t = optuna_trials.c
    running = set(
        conn.execute(
            sa.select(t.trial_id).where(t.trial_id.in_(list(values)), t.state == RUNNING)
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
        _upsert(conn, optuna_intermediate_values, ["trial_id", "step"], rows)
    return running


def _upsert(conn: sa.Connection, table: Any, key: list[str], rows: list[dict[str, Any]]) -> None:
    """Insert `rows`; a row whose `key` columns exist already replaces the other columns."""
    insert: Any = {"postgresql": pg_insert, "sqlite": sqlite_insert}[conn.dialect.name]
    stmt = insert(table)
    replaced = {column: stmt.excluded[column] for column in rows[0] if column not in key}
    conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=replaced), rows)


def study_status(row: StudyRow, progress: Progress) -> str:
    """running, stopped or failed as stored; completed once the budget is spent and idle.

    A failed study stays failed even when its last trials spent the budget: the failure is
    what its owner needs to see.
    """
    if row.status != "failed" and progress.counted >= row.n_trials and progress.running == 0:
        return "completed"
    return row.status


def now() -> float:
    return time.time()
