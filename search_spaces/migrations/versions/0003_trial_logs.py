"""What each trial printed, and its traceback when it failed.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "noisetune_trial_logs",
        sa.Column("trial_id", sa.Integer, primary_key=True),
        sa.Column("study_name", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("dropped_bytes", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_noisetune_trial_logs_study_name", "noisetune_trial_logs", ["study_name"])


def downgrade() -> None:
    op.drop_table("noisetune_trial_logs")
