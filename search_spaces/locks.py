"""Locks across processes and the transactions that hold them: what keeps claims atomic.

On PostgreSQL, advisory locks; beside a SQLite file, a lock file (SQLite's own write lock
cannot serve: Optuna writes through another connection while the lock is held).
"""

from __future__ import annotations

import fcntl
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine


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
