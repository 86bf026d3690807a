"""Concurrency keys: a task's key, each key's limit and admitted count, and the waiting line

At most max_running tasks of one key (tenant_id + key) are admitted at once (key_admitted
lists them until they end); the others wait in key_waiting, in priority order then oldest
first, with their work held back until the engine admits them (when an admitted task of the
key ends).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("concurrency_key", sa.String(length=200), nullable=True))
    op.create_table(
        "concurrency_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key"),
    )
    op.create_table(
        "key_admitted",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("ix_key_admitted_tenant_id_key", "key_admitted", ["tenant_id", "key"])
    op.create_table(
        "key_waiting",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index(
        "ix_key_waiting_line",
        "key_waiting",
        ["tenant_id", "key", sa.text("priority DESC"), "created_at", "task_id"],
    )


def downgrade() -> None:
    op.drop_table("key_waiting")
    op.drop_table("key_admitted")
    op.drop_table("concurrency_keys")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("concurrency_key")
