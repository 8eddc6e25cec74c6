"""Baseline: noisetune's tables as release 0.1.0 made them.

Databases made before schema versions have these tables already, some (older still) without
the nullable columns later releases added at start-up: this revision creates what is
missing and adds those columns, so every earlier database arrives at the same schema.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen here: later revisions change the schema, never this copy of it.
_metadata = sa.MetaData()
sa.Table(
    "noisetune_studies",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("study_id", sa.Integer, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="running"),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("n_trials", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table(
    "noisetune_workers",
    _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("study_name", sa.String(64)),
    sa.Column("trial_id", sa.Integer),
    sa.Column("trial_number", sa.Integer),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("heartbeat_interval", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, default="alive"),
)
sa.Table(
    "noisetune_trial_runs",
    _metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("study_name", sa.String(64), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("worker_id", sa.String(64), index=True),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("counted", sa.Boolean, nullable=False, default=False),
    sa.Column("fail_reason", sa.Text),
    sa.Column("claim_seconds", sa.Float),
)
sa.Table(
    "noisetune_reservations",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(64), nullable=False, index=True),
    sa.Column("worker_id", sa.String(64), nullable=False, index=True),
    sa.Column("claim", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sqlite_autoincrement=True,
)
sa.Table(
    "noisetune_tokens",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("created_at", sa.Float, nullable=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    _metadata.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table in _metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable and not column.primary_key:
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the baseline is where noisetune's schema versions begin")
