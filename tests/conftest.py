"""Shared fixtures: a fresh database per test, on every storage backend noisetune supports.

`storage_url` runs a test once on a SQLite file and once on the real PostgreSQL server
(marked ``postgres``), each time on a database of its own. Both are copies of a template
made once per session by `open_storage`, because building Optuna's schema takes longer
than most tests; PostgreSQL databases are also made one test ahead and dropped behind.
PostgreSQL tests skip when the server is down, unless ``NOISETUNE_REQUIRE_POSTGRES=1``,
which makes the whole run fail instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa

from search_spaces.storage import migrate, open_storage

PG_SERVER = os.environ.get("NOISETUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
REQUIRE_PG = os.environ.get("NOISETUNE_REQUIRE_POSTGRES") == "1"


def _admin() -> sa.Engine:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    return sa.create_engine(
        f"{PG_SERVER}/postgres",
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
        poolclass=sa.pool.NullPool,
    )


def _pg_down_reason() -> str | None:
    try:
        with _admin().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return f"PostgreSQL at {PG_SERVER} is not reachable: {type(exc).__name__}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Starlette's TestClient warns that it would prefer httpx2; nothing to act on here.
    config.addinivalue_line(
        "filterwarnings", "ignore:Using `httpx` with `starlette.testclient`:UserWarning"
    )
    if REQUIRE_PG and (reason := _pg_down_reason()):
        raise pytest.UsageError(f"NOISETUNE_REQUIRE_POSTGRES=1 but {reason}")


def _execute(sql: str) -> None:
    engine = _admin()
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _forget(url: str) -> None:
    # `open_storage` keeps one storage per URL for the process; close its connections so the
    # database can be dropped and the file deleted.
    open_storage(url).engine.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "noisetune.db"
    _forget(f"sqlite:///{path}")
    return path


class _PgDatabases:
    """Databases copied from the template one test ahead, and dropped in the background.

    Making a database takes about as long as a short test; doing it off the critical path
    keeps one database per test without paying for it twice per test.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pg-fixture")
        self.drops: list[Future[None]] = []
        self.ahead = self.pool.submit(self._create)

    def _create(self) -> str:
        name = f"nt_{uuid.uuid4().hex}"
        _execute(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        open_storage(f"{PG_SERVER}/{name}")  # warm the per-process storage cache too
        return name

    def take(self) -> str:
        name = self.ahead.result()
        self.ahead = self.pool.submit(self._create)
        return name

    def drop(self, name: str) -> None:
        _forget(f"{PG_SERVER}/{name}")
        self.drops.append(
            self.pool.submit(_execute, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        )

    def close(self) -> None:
        try:
            self.drop(self.ahead.result())
        finally:
            for done in self.drops:
                done.result()
            self.pool.shutdown()


@pytest.fixture(scope="session")
def _pg_databases() -> Iterator[_PgDatabases]:
    reason = _pg_down_reason()
    if reason:
        if REQUIRE_PG:
            pytest.fail(f"NOISETUNE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    template = f"nt_tpl_{uuid.uuid4().hex[:12]}"
    _execute(f"CREATE DATABASE {template}")
    databases = None
    try:
        # PostgreSQL databases are migrated by hand (`noisetune migrate`), as in production.
        migrate(f"{PG_SERVER}/{template}")
        # Nothing may stay connected to a template while databases are copied from it.
        _forget(f"{PG_SERVER}/{template}")
        databases = _PgDatabases(template)
        yield databases
    finally:
        if databases is not None:
            databases.close()
        _execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty noisetune database (schema in place, no studies) of its own."""
    if request.param == "sqlite":
        path = tmp_path / "noisetune.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        url = f"sqlite:///{path}"
        yield url
        _forget(url)
        return
    databases: _PgDatabases = request.getfixturevalue("_pg_databases")
    name = databases.take()
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        databases.drop(name)


@pytest.fixture
def storage(storage_url: str) -> optuna.storages.RDBStorage:
    """The storage on `storage_url`, as the service opens it."""
    return open_storage(storage_url)


@pytest.fixture
def worker_storage(storage_url: str) -> Iterator[optuna.storages.RDBStorage]:
    """The storage on `storage_url`, as a worker opens it (see open_storage)."""
    storage = open_storage(storage_url, worker=True)
    yield storage
    storage.engine.dispose()


@pytest.fixture
def make_client(storage_url: str) -> Iterator[Callable[..., Any]]:
    """Build TestClients of the API on `storage_url`; keyword arguments override settings.

    Settings are given in full so that ``NOISETUNE_*`` variables of the shell running the
    tests cannot change what a test sees.
    """
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "storage": storage_url,
            "host": "127.0.0.1",
            "api_token": None,
            "read_requires_token": False,
            "max_body_bytes": 1024 * 1024,
            "auth": "auto",
            "allowed_hosts": [],
        }
        app = create_app(Settings(**(values | overrides)))
        # A loopback name: the server answers no other Host by default (TestClient's own
        # default is "testserver").
        clients.append(TestClient(app, base_url="http://127.0.0.1"))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
