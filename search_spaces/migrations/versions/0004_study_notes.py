"""A study's notes: free-text Markdown its owner can change (PATCH /studies/NAME).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("noisetune_studies", sa.Column("notes", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("noisetune_studies") as batch:
        batch.drop_column("notes")
