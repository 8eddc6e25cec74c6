"""Why a study failed and its failure streak; when a token was last used and revoked.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS: dict[str, list[sa.Column[Any]]] = {
    "noisetune_studies": [
        sa.Column("fail_reason", sa.Text),
        sa.Column("failure_streak", sa.Integer),
    ],
    "noisetune_tokens": [
        sa.Column("last_used_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
    ],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in _COLUMNS.items():
        have = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in have:  # a database of a development build may have it
                op.add_column(table, column)


def downgrade() -> None:
    for table, columns in _COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
