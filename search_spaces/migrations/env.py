"""Alembic's entry point for noisetune's migrations (run by search_spaces.schema.upgrade).

The connection comes from the caller, who holds the schema lock; the version is recorded in
noisetune's own table, apart from Optuna's ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

from search_spaces.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run noisetune's migrations with `noisetune migrate`, not alembic")
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
