"""The database both sides share: Optuna's RDB storage plus noisetune's own tables.

The database is the only contract between the service and the workers. This module owns
the URL, the engine settings, opening the storage (the schema created under a lock, so many
processes may start at once), and the locks that keep trial claims atomic. The tables are
in search_spaces.tables, a study's row and progress in search_spaces.study_rows, and what
noisetune touches of Optuna's own tables in search_spaces.optuna_adapter.
"""

from __future__ import annotations

import fcntl
import os
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from search_spaces.tables import metadata

DEFAULT_STORAGE = "sqlite:///noisetune.db"
STORAGE_ENV = "NOISETUNE_STORAGE"


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


def now() -> float:
    return time.time()
