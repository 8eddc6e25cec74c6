"""The version of noisetune's own tables: Alembic migrations shipped in the package.

Optuna versions its tables itself (its ``alembic_version`` table); noisetune's migrations
live in search_spaces/migrations and record their version in ``noisetune_alembic_version``.
``noisetune migrate`` (``storage.migrate``) upgrades to the head revision; services and
workers check the version at start (``check_schema``) and stop with one line if it is not
the one they need.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

VERSION_TABLE = "noisetune_alembic_version"
MIGRATIONS = Path(__file__).parent / "migrations"
# The lock every schema change runs under (see search_spaces.locks.advisory_lock).
SCHEMA_LOCK = "noisetune-schema"


class SchemaOutOfDate(RuntimeError):
    """The database's noisetune schema is not the one this noisetune needs."""


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def head_version() -> str:
    """The revision this noisetune needs (read once per process: the scripts ship with it)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "search_spaces/migrations has no revision"
    return head


def schema_version(engine: sa.Engine) -> str | None:
    """The revision the database is at; None when it has never been migrated."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: sa.Engine) -> None:
    """Run every migration the database lacks (the caller holds SCHEMA_LOCK)."""
    if schema_version(engine) == head_version():
        return  # nothing to run: spare loading the migration scripts
    with engine.begin() as conn:
        command.upgrade(_config(conn), "head")


def check_schema(engine: sa.Engine) -> None:
    """Raise `SchemaOutOfDate`, with the command to run, unless the database is at head."""
    found, needed = schema_version(engine), head_version()
    if found != needed:
        at = "has no noisetune schema" if found is None else f"is at schema {found}"
        raise SchemaOutOfDate(
            f"the database {at}; this noisetune needs {needed}: run `noisetune migrate`"
        )
