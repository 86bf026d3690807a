"""Recording a change of a task: update the row, store the event, publish after commit.

Every task change that clients may watch goes through :func:`record`, so the stored event
sequence and the task row never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from taskorch.domain.values import JSON, EventType, Status, Task, TaskEvent
from taskorch.events.hub import EventHub
from taskorch.store import tasks as task_store
from taskorch.store.database import Transaction


def record(
    tx: Transaction,
    hub: EventHub,
    task_id: str,
    values: Mapping[str, Any],
    event_type: EventType,
    *,
    now: datetime,
    only_if_status: Iterable[Status] | None = None,
    message: str | None = None,
    progress: float | None = None,
    output_delta: str | None = None,
    data: JSON | None = None,
) -> tuple[Task, TaskEvent] | None:
    """Applies ``values`` to the task and appends one event; None if the status did not match."""
    task = task_store.update_task(
        tx.conn, task_id, {**values, "updated_at": now}, only_if_status=only_if_status
    )
    if task is None:
        return None
    event = TaskEvent(
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        sequence=task.sequence,
        type=event_type,
        status=task.status,
        created_at=now,
        progress=progress if progress is not None else task.progress,
        message=message,
        output_delta=output_delta,
        data=data,
    )
    task_store.insert_event(tx.conn, event)
    # Terminal events carry the final task, so a watcher needs no extra read for the result.
    published = replace(event, task=task) if event.is_terminal else event
    tx.after_commit(lambda: hub.publish(published))
    return task, event
