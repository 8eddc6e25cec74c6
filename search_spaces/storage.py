"""The database both sides share: Optuna's RDB storage plus noisetune's own tables.

The database is the only contract between the service and the workers. This module owns
the URL, the engine settings, opening the storage (the schema created under a lock, so many
processes may start at once), and the locks that keep trial claims atomic. The tables are
in search_spaces.tables, a study's row and progress in search_spaces.study_rows, and what
noisetune touches of Optuna's own tables in search_spaces.optuna_adapter.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

import optuna
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url

from search_spaces.locks import advisory_lock
from search_spaces.schema import (
    SCHEMA_LOCK,
    check_schema,
    head_version,
    schema_version,
    upgrade,
)

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


@cache
def open_storage(url: str | None = None, *, worker: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage on `url` with noisetune's tables beside it; one per process and URL.

    A SQLite database is migrated to the schema this noisetune needs on first use (so local
    runs need no extra step); any other database must be migrated already (``noisetune
    migrate``), else `SchemaOutOfDate` says so. Both happen under the schema lock, so a
    fleet that starts at once is safe. A `worker`'s engine does not ping pooled
    connections (see engine_kwargs) and on SQLite locks at BEGIN (_configure_sqlite).
    """
    url = resolve_url(url)
    probe = sa.create_engine(url, **engine_kwargs(url))
    try:
        with advisory_lock(probe, SCHEMA_LOCK):
            sqlite = probe.url.get_backend_name() == "sqlite"
            if sqlite:
                with probe.connect() as conn:
                    # WAL lets readers (the dashboard) run beside the writer; it persists.
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url, worker))
            if sqlite:
                upgrade(probe)
                _configure_sqlite(storage.engine, worker)
                storage.engine.dispose()  # connections opened so far lack the settings
            else:
                check_schema(probe)
    finally:
        probe.dispose()
    return storage


def migrate(url: str | None = None) -> tuple[str | None, str]:
    """Bring the database at `url` to the schema this noisetune needs; (before, after).

    Optuna's tables are Optuna's (RDBStorage creates and upgrades them); noisetune's move by
    the migrations in search_spaces/migrations. Safe from many processes at once: the first
    migrates under the schema lock, the others then find nothing to do.
    """
    url = resolve_url(url)
    engine = sa.create_engine(url, **engine_kwargs(url))
    try:
        with advisory_lock(engine, SCHEMA_LOCK):
            optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url)).engine.dispose()
            before = schema_version(engine)
            upgrade(engine)
    finally:
        engine.dispose()
    return before, head_version()


def schema_status(url: str | None = None) -> tuple[str | None, str]:
    """(the schema the database at `url` is at, the one this noisetune needs); changes nothing.

    Raises SQLAlchemy's errors when the database cannot be reached.
    """
    url = resolve_url(url)
    engine = sa.create_engine(url, **engine_kwargs(url))
    try:
        return schema_version(engine), head_version()
    finally:
        engine.dispose()


def upsert(conn: sa.Connection, table: Any, key: list[str], rows: list[dict[str, Any]]) -> None:
    """Insert `rows`; a row whose `key` columns exist already replaces the other columns."""
    insert: Any = {"postgresql": pg_insert, "sqlite": sqlite_insert}[conn.dialect.name]
    stmt = insert(table)
    replaced = {column: stmt.excluded[column] for column in rows[0] if column not in key}
    conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=replaced), rows)


def engine_of(storage: optuna.storages.RDBStorage) -> Engine:
    return storage.engine


def now() -> float:
    return time.time()
