"""Repository of subtasks: the work queue and its leases (synchronous SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Integer, RowMapping, bindparam, func, insert, select, update

from taskorch.domain.values import Status, Subtask
from taskorch.store import notices, statements
from taskorch.store.schema import subtasks

ACTIVE = (int(Status.PENDING), int(Status.RUNNING))


def subtask_from_row(row: RowMapping) -> Subtask:
    return Subtask(
        subtask_id=row["subtask_id"],
        task_id=row["task_id"],
        tenant_id=row["tenant_id"],
        kind=row["kind"],
        model_name=row["model_name"],
        name=row["name"],
        stage=row["stage"],
        input=row["input"],
        info=row["info"],
        status=Status(row["status"]),
        progress=row["progress"],
        result=row["result"],
        error=row["error"],
        error_code=row["error_code"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        ready=row["ready"],
        available_at=row["available_at"],
        lease_id=row["lease_id"],
        lease_expires_at=row["lease_expires_at"],
        worker_id=row["worker_id"],
        timeout_seconds=row["timeout_seconds"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
    )


def insert_subtasks(conn: Connection, items: Sequence[Subtask]) -> None:
    if not items:
        return
    if any(s.ready for s in items):
        notices.work_ready(conn)
    conn.execute(
        insert(subtasks),
        [
            {
                "subtask_id": s.subtask_id,
                "task_id": s.task_id,
                "tenant_id": s.tenant_id,
                "kind": s.kind,
                "model_name": s.model_name,
                "name": s.name,
                "stage": s.stage,
                "input": s.input,
                "info": s.info,
                "status": int(s.status),
                "progress": s.progress,
                "attempt": s.attempt,
                "max_attempts": s.max_attempts,
                "priority": s.priority,
                "ready": s.ready,
                "available_at": s.available_at or s.created_at,
                "timeout_seconds": s.timeout_seconds,
                "created_at": s.created_at,
                "updated_at": s.updated_at,
                # First come, first served among work added to running tasks.
                "turn": s.created_at.timestamp(),
            }
            for s in items
        ],
    )


def get_subtask(conn: Connection, tenant_id: str | None, subtask_id: str) -> Subtask | None:
    stmt = statements.select_by_id(subtasks, tenant=tenant_id is not None)
    row = conn.execute(stmt, {"_id": subtask_id, "_tenant": tenant_id}).mappings().first()
    return subtask_from_row(row) if row else None


_SUBTASKS_OF = (
    select(subtasks).where(subtasks.c.task_id == bindparam("task_id")).order_by(subtasks.c.stage)
)


def subtasks_of(conn: Connection, task_id: str) -> list[Subtask]:
    rows = conn.execute(_SUBTASKS_OF, {"task_id": task_id}).mappings()
    return [subtask_from_row(row) for row in rows]


def runnable_candidates(
    conn: Connection,
    *,
    kinds: Iterable[str],
    models: Iterable[str] = (),
    tenant_ids: Iterable[str] | None = None,
    task_id: str | None = None,
    now: datetime,
    limit: int,
    skip_locked: bool,
) -> list[tuple[str, str]]:
    """(subtask id, task id) of the subtasks a worker would take next: highest priority
    first, then oldest.

    One query per kind, each reading the head of the queue index in take order; merging
    a few heads is cheaper than letting the database sort every queued row of several kinds.
    """
    model_list = list(models)
    kind_list: list[str | None] = [*sorted(set(kinds))] or [None]
    stmt = _queue_head(
        by_kind=kind_list != [None],
        by_models=bool(model_list),
        by_tenants=tenant_ids is not None,
        by_task=task_id is not None,
        skip_locked=skip_locked,
    )
    params: dict[str, Any] = {"_now": now, "_limit": limit, "_task": task_id}
    if model_list:
        params["_models"] = [*model_list, ""]
    if tenant_ids is not None:
        params["_tenants"] = list(tenant_ids)
    heads: list[tuple[int, datetime, str, str]] = []
    for kind in kind_list:
        rows = conn.execute(stmt, {**params, "_kind": kind})
        heads += [(-row[1], row[2], row[0], row[3]) for row in rows]
    return [(subtask_id, task_id) for _, _, subtask_id, task_id in sorted(heads)[:limit]]


@cache
def _queue_head(
    *, by_kind: bool, by_models: bool, by_tenants: bool, by_task: bool, skip_locked: bool
) -> Any:
    """The statement reading the head of the queue, built once per shape."""
    stmt = (
        select(
            subtasks.c.subtask_id, subtasks.c.priority, subtasks.c.created_at, subtasks.c.task_id
        )
        .where(
            subtasks.c.status == int(Status.PENDING),
            subtasks.c.ready.is_(True),
            subtasks.c.available_at <= bindparam("_now", type_=subtasks.c.available_at.type),
        )
        .order_by(subtasks.c.priority.desc(), subtasks.c.created_at, subtasks.c.subtask_id)
        .limit(bindparam("_limit", type_=Integer))
    )
    if by_kind:
        stmt = stmt.where(subtasks.c.kind == bindparam("_kind", type_=subtasks.c.kind.type))
    if by_models:
        stmt = stmt.where(subtasks.c.model_name.in_(bindparam("_models", expanding=True)))
    if by_tenants:
        stmt = stmt.where(subtasks.c.tenant_id.in_(bindparam("_tenants", expanding=True)))
    if by_task:
        stmt = stmt.where(subtasks.c.task_id == bindparam("_task", type_=subtasks.c.task_id.type))
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    return stmt


def update_subtask(
    conn: Connection,
    subtask_id: str,
    values: Mapping[str, Any],
    *,
    only_if_status: Iterable[Status] | None = None,
    lease_id: str | None = None,
) -> Subtask | None:
    """Updates one subtask if it is (still) in the given status and lease; else None."""
    stmt = statements.update_by_id(
        subtasks,
        tuple(sorted(values)),
        statuses=statements.statuses(only_if_status),
        match_lease=lease_id is not None,
    )
    params = statements.update_params(subtask_id, dict(values), lease_id)
    row = conn.execute(stmt, params).mappings().first()
    return subtask_from_row(row) if row else None


_LEASE = (
    update(subtasks)
    .where(subtasks.c.subtask_id == bindparam("_id"), subtasks.c.status == int(Status.PENDING))
    .values(
        status=int(Status.RUNNING),
        lease_id=bindparam("new_lease"),
        lease_expires_at=bindparam("expires", type_=subtasks.c.lease_expires_at.type),
        worker_id=bindparam("worker"),
        attempt=subtasks.c.attempt + 1,
        started_at=bindparam("now", type_=subtasks.c.started_at.type),
        updated_at=bindparam("now", type_=subtasks.c.updated_at.type),
    )
    .returning(subtasks)
)

_UNLEASE = (
    update(subtasks)
    .where(
        subtasks.c.subtask_id == bindparam("_id"),
        subtasks.c.status == int(Status.RUNNING),
        subtasks.c.lease_id == bindparam("_lease"),
    )
    .values(
        status=int(Status.PENDING),
        lease_id=None,
        lease_expires_at=None,
        worker_id=None,
        attempt=subtasks.c.attempt - 1,
        available_at=bindparam("now", type_=subtasks.c.available_at.type),
        updated_at=bindparam("now", type_=subtasks.c.updated_at.type),
    )
    .returning(subtasks)
)


def lease(
    conn: Connection,
    subtask_id: str,
    lease_id: str,
    expires: datetime,
    worker_id: str,
    now: datetime,
) -> Subtask | None:
    """Leases a pending subtask to a worker, counting the attempt; None if it was taken."""
    params = {
        "_id": subtask_id,
        "new_lease": lease_id,
        "expires": expires,
        "worker": worker_id,
        "now": now,
    }
    row = conn.execute(_LEASE, params).mappings().first()
    return subtask_from_row(row) if row else None


def unlease(conn: Connection, subtask_id: str, lease_id: str, now: datetime) -> Subtask | None:
    """Puts a leased subtask back in the queue without counting the attempt."""
    params = {"_id": subtask_id, "_lease": lease_id, "now": now}
    row = conn.execute(_UNLEASE, params).mappings().first()
    if row:
        notices.work_ready(conn)
    return subtask_from_row(row) if row else None


def mark_ready(conn: Connection, subtask_ids: Iterable[str], now: datetime) -> None:
    ids = list(subtask_ids)
    if ids:
        notices.work_ready(conn)
        conn.execute(
            update(subtasks)
            .where(subtasks.c.subtask_id.in_(ids))
            .values(ready=True, available_at=now, updated_at=now)
        )


def set_priority(conn: Connection, task_id: str, priority: int, now: datetime) -> None:
    """Re-prioritises the task's work that has not finished."""
    conn.execute(
        update(subtasks)
        .where(subtasks.c.task_id == task_id, subtasks.c.status.in_(ACTIVE))
        .values(priority=priority, updated_at=now)
    )


def end_active_subtasks(
    conn: Connection, task_id: str, status: Status, now: datetime, error: str | None = None
) -> list[Subtask]:
    """Moves the task's pending and running subtasks to ``status``; returns them as they were.
    Workers connected to other replicas are told to stop (PostgreSQL NOTIFY)."""
    rows = conn.execute(
        select(subtasks).where(subtasks.c.task_id == task_id, subtasks.c.status.in_(ACTIVE))
    ).mappings()
    ended = [subtask_from_row(row) for row in rows]
    for subtask in ended:
        if subtask.status is Status.RUNNING and subtask.worker_id and subtask.lease_id:
            notices.worker_stop(conn, subtask.worker_id, subtask.subtask_id, subtask.lease_id)
    if ended:
        conn.execute(
            update(subtasks)
            .where(subtasks.c.task_id == task_id, subtasks.c.status.in_(ACTIVE))
            .values(
                status=int(status),
                lease_id=None,
                lease_expires_at=None,
                error=error,
                updated_at=now,
                completed_at=now,
            )
        )
    return ended


def expired_leases(conn: Connection, now: datetime, *, limit: int = 100) -> list[Subtask]:
    rows = conn.execute(
        select(subtasks)
        .where(subtasks.c.status == int(Status.RUNNING), subtasks.c.lease_expires_at < now)
        .order_by(subtasks.c.lease_expires_at)
        .limit(limit)
    ).mappings()
    return [subtask_from_row(row) for row in rows]


def count_unfinished(conn: Connection, task_id: str) -> int:
    return conn.execute(
        select(func.count())
        .select_from(subtasks)
        .where(subtasks.c.task_id == task_id, subtasks.c.status != int(Status.COMPLETED))
    ).scalar_one()


def queue_depth(conn: Connection) -> dict[str, int]:
    """Runnable subtasks (pending and ready, backed-off ones included) by kind, every tenant."""
    rows = conn.execute(
        select(subtasks.c.kind, func.count())
        .where(subtasks.c.status == int(Status.PENDING), subtasks.c.ready.is_(True))
        .group_by(subtasks.c.kind)
    )
    return {kind: int(count) for kind, count in rows}


def next_wakeup(conn: Connection, now: datetime) -> datetime | None:
    """When the earliest backed-off subtask becomes runnable (None if none waits)."""
    return conn.execute(
        select(func.min(subtasks.c.available_at)).where(
            subtasks.c.status == int(Status.PENDING),
            subtasks.c.ready.is_(True),
            subtasks.c.available_at > now,
        )
    ).scalar_one_or_none()


def running_leases_of_workers(conn: Connection, worker_prefix: str) -> list[Subtask]:
    rows = conn.execute(
        select(subtasks).where(
            subtasks.c.status == int(Status.RUNNING),
            subtasks.c.worker_id.startswith(worker_prefix, autoescape=True),
        )
    ).mappings()
    return [subtask_from_row(row) for row in rows]
