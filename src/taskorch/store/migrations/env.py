"""Alembic environment: taskorch always hands in an open connection (see store/migrate.py)."""

from __future__ import annotations

from alembic import context

from taskorch.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "taskorch migrations run at server start (or via taskorch.store.migrate.upgrade); "
        "they need an open connection"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
