"""Schema versions on real databases: migrations, the version check, and an upgrade of a
database that release 0.1.0 made (tests/fixtures/noisetune-0.1.0.db)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from search_spaces.schema import SchemaOutOfDate, head_version, schema_version
from search_spaces.storage import migrate, open_storage
from search_spaces.tables import metadata
from tests.conftest import PG_SERVER, _execute

ROOT = Path(__file__).resolve().parents[2]
RELEASE_0_1 = ROOT / "tests" / "fixtures" / "noisetune-0.1.0.db"
NOISETUNE_TABLES = [t.name for t in metadata.sorted_tables]


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, not even Optuna's tables."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("_pg_databases")  # skips (or fails) when PostgreSQL is down
    name = f"nt_empty_{uuid.uuid4().hex[:12]}"
    _execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        _execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _noisetune(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_migrations_make_the_schema_tables_py_describes(storage_url: str) -> None:
    engine = sa.create_engine(storage_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    ours = [d for d in diffs if any(name in repr(d) for name in NOISETUNE_TABLES)]
    assert ours == []
    assert schema_version(open_storage(storage_url).engine) == head_version()


@pytest.mark.slow
def test_many_processes_migrate_one_database_at_once(empty_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "migrate", "--storage", empty_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )  # fmt: skip
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert sum(f"upgraded from none to {head_version()}" in out for out in outputs) == 1
    assert sum(f"already at {head_version()}" in out for out in outputs) == 3
    assert migrate(empty_url) == (head_version(), head_version())


@pytest.mark.slow
def test_migrate_check_changes_nothing_and_its_wait_ends_once_migrated(empty_url: str) -> None:
    done = _noisetune("migrate", "--check", "--storage", empty_url)
    assert done.returncode == 1 and "has no noisetune schema" in done.stderr, done
    assert "run `noisetune migrate`" in done.stderr and "Traceback" not in done.stderr
    engine = sa.create_engine(empty_url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # not even Optuna's
    finally:
        engine.dispose()
    waiting = subprocess.Popen(
        [sys.executable, "-m", "service", "migrate", "--check", "--wait", "--storage", empty_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=4)  # still waiting: nothing has migrated the database
        migrate(empty_url)
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert "waiting: " in err and f"is {head_version()}" in out


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("empty_url", ["postgresql"], indirect=True)
def test_an_unmigrated_postgresql_database_stops_serve_and_worker_with_one_line(
    empty_url: str,
) -> None:
    with pytest.raises(SchemaOutOfDate, match="run `noisetune migrate`"):
        open_storage(empty_url)
    for args in (["worker", "--exit-when-idle"], ["serve", "--port", "0"], ["status"]):
        done = _noisetune(*args, "--storage", empty_url)
        assert done.returncode != 0, done
        lines = [line for line in done.stderr.splitlines() if "noisetune migrate" in line]
        assert len(lines) == 1 and "has no noisetune schema" in lines[0], done.stderr
        assert "Traceback" not in done.stderr


def _rows(url: str) -> dict[str, int]:
    """Rows of every noisetune table the database has, and of Optuna's main ones."""
    engine = sa.create_engine(url)
    try:
        present = set(sa.inspect(engine).get_table_names())
        tables = [t for t in NOISETUNE_TABLES if t in present]
        with engine.connect() as conn:
            return {
                table: int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
                for table in [*tables, "trials", "trial_user_attributes", "studies"]
            }
    finally:
        engine.dispose()


@pytest.fixture
def release_0_1(tmp_path: Path) -> str:
    path = tmp_path / "noisetune.db"
    shutil.copyfile(RELEASE_0_1, path)
    return f"sqlite:///{path}"


def test_a_release_0_1_database_upgrades_and_keeps_every_row(release_0_1: str) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    before = _rows(release_0_1)
    assert before["noisetune_studies"] == 2 and before["noisetune_tokens"] == 2
    assert migrate(release_0_1) == (None, head_version())
    after = _rows(release_0_1)
    assert {k: after[k] for k in before} == before  # every row kept
    assert after["noisetune_trial_logs"] == 0  # a table of a later version, empty

    settings = Settings(storage=release_0_1, host="127.0.0.1", api_token=None)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        listed = client.get("/api/v1/studies").json()["data"]
        assert {(s["name"], s["status"], s["fail_reason"]) for s in listed} == {
            ("paper-old", "running", None),
            ("stopped-old", "stopped", None),
        }
        trials = client.get("/api/v1/studies/paper-old/trials").json()
        states = {t["state"] for t in trials["data"]}
        assert states == {"COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"}
        assert client.get("/studies/paper-old").status_code == 200
        assert client.get("/api/v1/studies/paper-old/plots/history").status_code == 200
        workers = client.get("/api/v1/workers").json()
        assert workers["count"] == 0  # their heartbeats are long past


def test_workers_finish_a_study_of_release_0_1(release_0_1: str) -> None:
    from worker.runner import Worker

    # SQLite migrates on first use: no `noisetune migrate` needed for a local file.
    worker = Worker(release_0_1, "cpu", "paper-old", 5.0)
    assert worker.run(max_trials=None, exit_when_idle=True) == 0
    study = optuna.load_study(study_name="paper-old", storage=open_storage(release_0_1))
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert "RUNNING" not in states and "WAITING" not in states
    # Its trials of release 0.1 count as they did: the budget of 12 is met, never passed.
    counted = states.count("COMPLETE") + states.count("PRUNED")
    assert counted + 1 == 12  # plus the diverged trial, which counts


def test_a_database_older_still_gains_the_columns_it_lacks(release_0_1: str) -> None:
    engine = sa.create_engine(release_0_1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE noisetune_trial_runs DROP COLUMN claim_seconds"))
        migrate(release_0_1)
        columns: Any = {c["name"] for c in sa.inspect(engine).get_columns("noisetune_trial_runs")}
    finally:
        engine.dispose()
    assert "claim_seconds" in columns
