"""Delayed tasks: a task's run_at, and the small table of tasks waiting for it

A task created with run_at (or run_after_seconds) keeps its work held back, not ready, until
its time; delayed_tasks lists the tasks still waiting, indexed by time, so the engine finds
the ones that came due in one indexed read and the queue index never holds work that is
not yet due.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("run_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "delayed_tasks",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("ix_delayed_tasks_run_at", "delayed_tasks", ["run_at"])


def downgrade() -> None:
    op.drop_index("ix_delayed_tasks_run_at", table_name="delayed_tasks")
    op.drop_table("delayed_tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("run_at")
