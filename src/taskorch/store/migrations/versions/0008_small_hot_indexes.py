"""Small hot indexes: the work queue and the lease rescuer index only live rows

The queue index held every subtask ever run (finished ones sorted by status at its front)
and was rewritten on each change of status; the lease index did the same for deadlines. As
partial indexes they hold only runnable subtasks (status PENDING and ready) and running
ones (status RUNNING), so a take or a rescue reads a few index pages however much finished
work the table keeps, and finishing work removes an entry instead of moving it. The lone
index on tasks.status served no query (lists use the tenant's status index, counts their
own table) and cost a write on every change of status.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

QUEUED = "status = 1 AND ready"
RUNNING = "status = 2"


def upgrade() -> None:
    op.drop_index("ix_subtasks_queue", table_name="subtasks")
    op.create_index(
        "ix_subtasks_queue",
        "subtasks",
        ["kind", sa.text("priority DESC"), "created_at", "subtask_id"],
        sqlite_where=sa.text(QUEUED),
        postgresql_where=sa.text(QUEUED),
    )
    op.drop_index("ix_subtasks_status_lease_expires_at", table_name="subtasks")
    op.create_index(
        "ix_subtasks_leases",
        "subtasks",
        ["lease_expires_at"],
        sqlite_where=sa.text(RUNNING),
        postgresql_where=sa.text(RUNNING),
    )
    op.drop_index("ix_tasks_status", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_status", "tasks", ["status"])
    op.drop_index("ix_subtasks_leases", table_name="subtasks")
    op.create_index(
        "ix_subtasks_status_lease_expires_at", "subtasks", ["status", "lease_expires_at"]
    )
    op.drop_index("ix_subtasks_queue", table_name="subtasks")
    op.create_index(
        "ix_subtasks_queue",
        "subtasks",
        ["status", "ready", "kind", sa.text("priority DESC"), "created_at", "subtask_id"],
    )
