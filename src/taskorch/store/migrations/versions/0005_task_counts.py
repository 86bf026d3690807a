"""Task counts per list filter combination (constant-cost list totals)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KEYS = ["tenant_id", "status", "task_type", "model_name", "template"]


def _key_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("template", sa.String(length=200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "task_counts",
        *_key_columns(),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEYS, name=op.f("pk_task_counts")),
    )
    op.create_table(
        "task_count_deltas",
        sa.Column(
            "delta_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        *_key_columns(),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("delta_id", name=op.f("pk_task_count_deltas")),
    )
    # Existing tasks are counted once, here.
    op.execute(
        "INSERT INTO task_counts (tenant_id, status, task_type, model_name, template, count) "
        "SELECT tenant_id, status, task_type, model_name, template, COUNT(*) FROM tasks "
        "GROUP BY tenant_id, status, task_type, model_name, template"
    )


def downgrade() -> None:
    op.drop_table("task_count_deltas")
    op.drop_table("task_counts")
