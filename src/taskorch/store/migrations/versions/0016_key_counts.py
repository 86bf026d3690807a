"""Concurrency keys count their admitted and waiting tasks on their own row (PostgreSQL's
admission reads and takes a key's room in the statement that locks it)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("admitted", "waiting"):
        op.add_column(
            "concurrency_keys",
            sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0")),
        )
    op.execute(
        "UPDATE concurrency_keys SET "
        "admitted = (SELECT count(*) FROM key_admitted a "
        "WHERE a.tenant_id = concurrency_keys.tenant_id AND a.key = concurrency_keys.key), "
        "waiting = (SELECT count(*) FROM key_waiting w "
        "WHERE w.tenant_id = concurrency_keys.tenant_id AND w.key = concurrency_keys.key)"
    )


def downgrade() -> None:
    with op.batch_alter_table("concurrency_keys") as batch:
        batch.drop_column("waiting")
        batch.drop_column("admitted")
