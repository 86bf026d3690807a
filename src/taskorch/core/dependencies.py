"""Task dependencies (``depends_on``): a DAG across tasks, kept inside the transactions that
change task states.

A task's work becomes ready when every task it depends on COMPLETED. When a task FAILS or
is CANCELLED, the tasks that depend on it (and theirs, transitively) fail at once with an
error naming the dependency: they could never run.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from taskorch.core.hub import EventHub
from taskorch.core.lifecycle import record
from taskorch.core.model import EventType, Status, Subtask
from taskorch.store import subtasks as subtask_store
from taskorch.store import tasks as task_store
from taskorch.store.database import Transaction

DEPENDENCY_FAILED = "DEPENDENCY_FAILED"


def first_stage(subtasks: list[Subtask]) -> list[Subtask]:
    """The pending subtasks of the lowest stage that has not completed."""
    pending = [s for s in subtasks if s.status is Status.PENDING]
    if not pending:
        return []
    stage = min(s.stage for s in pending)
    if any(s.stage < stage and s.status is not Status.COMPLETED for s in subtasks):
        return []
    return [s for s in pending if s.stage == stage]


def release_dependents(tx: Transaction, hub: EventHub, task_id: str, now: datetime) -> None:
    """After ``task_id`` completed: make ready the work of dependents now free to run."""
    for dependent_id in task_store.dependents_of(tx.conn, task_id):
        # Locked before its subtasks are read: a subtask being added to it meanwhile is
        # either seen here or sees this dependency completed.
        dependent = task_store.get_task(tx.conn, None, dependent_id, lock=True)
        if dependent is None or dependent.status is not Status.PENDING:
            continue
        waits_for = task_store.get_tasks(tx.conn, None, dependent.depends_on)
        if any(t.status is not Status.COMPLETED for t in waits_for):
            continue
        ready = first_stage(subtask_store.subtasks_of(tx.conn, dependent_id))
        subtask_store.mark_ready(tx.conn, (s.subtask_id for s in ready), now)
        record(
            tx,
            hub,
            dependent_id,
            {"progress_message": "dependencies completed; queued"},
            EventType.PROGRESS,
            now=now,
            only_if_status=(Status.PENDING,),
            message="dependencies completed; queued",
        )
        tx.after_commit(hub.work.notify)


def fail_dependents(
    tx: Transaction, hub: EventHub, task_id: str, status: Status, now: datetime
) -> None:
    """After ``task_id`` failed or was cancelled: fail every task that waits for it."""
    queue = deque([(task_id, status)])
    while queue:
        failed_id, failed_status = queue.popleft()
        for dependent_id in task_store.dependents_of(tx.conn, failed_id):
            task_store.get_task(tx.conn, None, dependent_id, lock=True)
            error = f"dependency {failed_id} {failed_status.name}; this task cannot run"
            subtask_store.end_active_subtasks(tx.conn, dependent_id, Status.CANCELLED, now)
            recorded = record(
                tx,
                hub,
                dependent_id,
                {
                    "status": int(Status.FAILED),
                    "error": error,
                    "error_code": DEPENDENCY_FAILED,
                    "progress_message": None,
                    "completed_at": now,
                },
                EventType.STATUS_CHANGED,
                now=now,
                only_if_status=(Status.PENDING, Status.RUNNING),
                message=error,
            )
            if recorded is not None:
                queue.append((dependent_id, Status.FAILED))
