"""Subtask info (free-form annotations clients set) and stages (position becomes stage)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # RENAME COLUMN is plain SQL on both backends (SQLite >= 3.25) and keeps the data.
    op.drop_index("ix_subtasks_task_id_position", table_name="subtasks")
    op.execute("ALTER TABLE subtasks RENAME COLUMN position TO stage")
    op.create_index("ix_subtasks_task_id_stage", "subtasks", ["task_id", "stage"], unique=False)
    with op.batch_alter_table("subtasks") as batch_op:
        batch_op.add_column(
            sa.Column(
                "info",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("subtasks") as batch_op:
        batch_op.drop_column("info")
    op.drop_index("ix_subtasks_task_id_stage", table_name="subtasks")
    op.execute("ALTER TABLE subtasks RENAME COLUMN stage TO position")
    op.create_index("ix_subtasks_task_id_position", "subtasks", ["task_id", "position"])
