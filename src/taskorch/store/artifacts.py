"""Task artifacts in the database: written when a subtask completes, read one at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from taskorch.domain.artifacts import Artifact
from taskorch.domain.values import Status
from taskorch.store.schema import subtasks, task_artifacts, tasks


def put_artifacts(
    conn: Connection,
    subtask_id: str,
    lease_id: str,
    tenant_scope: str | None,
    artifacts: Sequence[Artifact],
    now: datetime,
) -> bool:
    """Stores the artifacts of the subtask's task, replacing those of the same names (an
    earlier attempt's).

    Returns:
        False when the lease is not held (nothing is written; the completion that follows
        reports why).
    """
    query = select(subtasks.c.task_id, subtasks.c.tenant_id).where(
        subtasks.c.subtask_id == subtask_id,
        subtasks.c.lease_id == lease_id,
        subtasks.c.status == int(Status.RUNNING),
    )
    if tenant_scope is not None:
        query = query.where(subtasks.c.tenant_id == tenant_scope)
    row = conn.execute(query).first()
    if row is None:
        return False
    task_id, tenant_id = row
    conn.execute(
        delete(task_artifacts).where(
            task_artifacts.c.task_id == task_id,
            task_artifacts.c.name.in_([a.name for a in artifacts]),
        )
    )
    conn.execute(
        insert(task_artifacts),
        [
            {
                "task_id": task_id,
                "tenant_id": tenant_id,
                "name": a.name,
                "content_type": a.content_type,
                "size": a.size,
                "data": a.data,
                "created_at": now,
            }
            for a in artifacts
        ],
    )
    return True


def get_artifact(
    conn: Connection, tenant_scope: str | None, task_id: str, name: str
) -> tuple[bool, Artifact | None]:
    """Whether the task is visible to the tenant, and its artifact ``name`` if it has one."""
    visible = select(tasks.c.task_id).where(tasks.c.task_id == task_id)
    if tenant_scope is not None:
        visible = visible.where(tasks.c.tenant_id == tenant_scope)
    if conn.execute(visible).first() is None:
        return False, None
    row = conn.execute(
        select(task_artifacts.c.content_type, task_artifacts.c.data).where(
            task_artifacts.c.task_id == task_id, task_artifacts.c.name == name
        )
    ).first()
    if row is None:
        return True, None
    return True, Artifact(name, row.content_type, bytes(row.data))
