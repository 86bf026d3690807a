"""List indexes end with task_id

Every list is ordered by (sort column, task_id). With task_id in the filtered indexes too,
both databases read a filtered page in index order without sorting, and a deep offset skips
rows in the index alone (a deferred join) instead of reading each skipped row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The indexes (tenant_id, column, created_at) and (tenant_id, updated_at) gain task_id.
FILTERED = ("status", "task_type", "model_name", "template")


def upgrade() -> None:
    for column in FILTERED:
        op.drop_index(f"ix_tasks_tenant_id_{column}_created_at", table_name="tasks")
        op.create_index(
            f"ix_tasks_tenant_id_{column}_created_at_task_id",
            "tasks",
            ["tenant_id", column, "created_at", "task_id"],
        )
    op.drop_index("ix_tasks_tenant_id_updated_at", table_name="tasks")
    op.create_index(
        "ix_tasks_tenant_id_updated_at_task_id", "tasks", ["tenant_id", "updated_at", "task_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_tenant_id_updated_at_task_id", table_name="tasks")
    op.create_index("ix_tasks_tenant_id_updated_at", "tasks", ["tenant_id", "updated_at"])
    for column in FILTERED:
        op.drop_index(f"ix_tasks_tenant_id_{column}_created_at_task_id", table_name="tasks")
        op.create_index(
            f"ix_tasks_tenant_id_{column}_created_at",
            "tasks",
            ["tenant_id", column, "created_at"],
        )
