"""Fair sharing: a queued subtask's turn

Runnable work was taken in priority order, then oldest first, so one tenant's burst of
thousands of tasks ran before anything another tenant submitted after it. Each subtask now
carries its turn: a point on the queue's clock (seconds since the epoch, like its creation
time) set when it is created. Within one kind and priority a tenant's next subtask takes the
turn after its own last queued one, or after the head of the queue when it has none queued,
so tenants with work queued take turns (start-time fair queuing; the step between one
tenant's turns is divided by its weight). With fair sharing off the turn is the creation time,
which is the old first-come order. The queue index orders by turn instead of creation time,
and a second small index finds a tenant's last queued turn.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

QUEUED = "status = 1 AND ready"


def upgrade() -> None:
    with op.batch_alter_table("subtasks") as batch:
        batch.add_column(
            sa.Column("turn", sa.Float(precision=53), nullable=False, server_default=sa.text("0"))
        )
    # Queued work keeps its order: its turn is its creation time.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE subtasks SET turn = extract(epoch FROM created_at) WHERE status = 1")
    else:
        op.execute(
            "UPDATE subtasks SET turn = (julianday(created_at) - 2440587.5) * 86400.0 "
            "WHERE status = 1"
        )
    op.drop_index("ix_subtasks_queue", table_name="subtasks")
    op.create_index(
        "ix_subtasks_queue",
        "subtasks",
        ["kind", sa.text("priority DESC"), "turn", "subtask_id"],
        sqlite_where=sa.text(QUEUED),
        postgresql_where=sa.text(QUEUED),
    )
    op.create_index(
        "ix_subtasks_tenant_turns",
        "subtasks",
        ["tenant_id", "kind", "priority", "turn"],
        sqlite_where=sa.text(QUEUED),
        postgresql_where=sa.text(QUEUED),
    )


def downgrade() -> None:
    op.drop_index("ix_subtasks_tenant_turns", table_name="subtasks")
    op.drop_index("ix_subtasks_queue", table_name="subtasks")
    op.create_index(
        "ix_subtasks_queue",
        "subtasks",
        ["kind", sa.text("priority DESC"), "created_at", "subtask_id"],
        sqlite_where=sa.text(QUEUED),
        postgresql_where=sa.text(QUEUED),
    )
    with op.batch_alter_table("subtasks") as batch:
        batch.drop_column("turn")
