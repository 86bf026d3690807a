"""Constant-cost task counts: list totals, tasks by status for /health and metrics.

Every change of a task's status (and every new task) appends a delta row in the same
transaction; :func:`compact` folds the deltas into ``task_counts`` (run every second). A
count reads both tables, so it is exact at all times and costs the number of distinct filter
combinations, not the number of tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from taskorch.domain.values import Status, Task
from taskorch.store.schema import COUNT_KEYS, task_count_deltas, task_counts

_COMPACT_LOCK = 0x636F756E  # one replica compacts at a time on PostgreSQL


def key_of(task: Task, status: Status) -> dict[str, Any]:
    """The counter a task adds to while it has ``status``."""
    return {
        "tenant_id": task.tenant_id,
        "status": int(status),
        "task_type": task.task_type,
        "model_name": task.model_name,
        "template": task.template,
    }


def add(conn: Connection, changes: Iterable[tuple[dict[str, Any], int]]) -> None:
    rows = [{**key, "delta": delta} for key, delta in changes if delta]
    if rows:
        conn.execute(_INSERT_DELTA, rows)


# Hot statements are built once (building one per call cost more than running it).
_INSERT_DELTA = insert(task_count_deltas)


def _filters(table: Any, filters: dict[str, Any]) -> list[ColumnElement[bool]]:
    return [table.c[name] == value for name, value in filters.items() if value is not None] or [
        true()
    ]


def total(conn: Connection, filters: dict[str, Any]) -> int:
    """Tasks matching exact-match ``filters`` (keys of COUNT_KEYS; None = any).

    Both tables are read in one statement: on PostgreSQL each statement has its own snapshot,
    so two reads could fall on either side of a compaction and miss the deltas it folded.
    """
    both = _folded_plus_pending(
        _filters(task_counts, filters), _filters(task_count_deltas, filters)
    )
    return int(conn.execute(both).scalar_one())


def _folded_plus_pending(
    counted: list[ColumnElement[bool]], pending: list[ColumnElement[bool]]
) -> Any:
    """One statement summing the folded counts and the pending deltas that match."""
    return select(
        select(func.coalesce(func.sum(task_counts.c.count), 0)).where(*counted).scalar_subquery()
        + select(func.coalesce(func.sum(task_count_deltas.c.delta), 0))
        .where(*pending)
        .scalar_subquery()
    )


def active(conn: Connection, tenant_id: str) -> int:
    """The tenant's unfinished (pending or running) tasks (one statement, built once: it runs
    on every create)."""
    return int(conn.execute(_ACTIVE, {"_tenant": tenant_id}).scalar_one())


def _active_statement() -> Any:
    unfinished = (int(Status.PENDING), int(Status.RUNNING))
    tenant = bindparam("_tenant", type_=task_counts.c.tenant_id.type)
    return _folded_plus_pending(
        [task_counts.c.tenant_id == tenant, task_counts.c.status.in_(unfinished)],
        [task_count_deltas.c.tenant_id == tenant, task_count_deltas.c.status.in_(unfinished)],
    )


_ACTIVE = _active_statement()


def by_status(conn: Connection, tenant_id: str | None) -> dict[Status, int]:
    """The tenant's tasks (all tenants' for None) by status, read in one statement (see
    :func:`total`)."""
    counts = {status: 0 for status in Status}
    tenant = {"tenant_id": tenant_id}
    both = union_all(
        select(task_counts.c.status, task_counts.c.count.label("n")).where(
            *_filters(task_counts, tenant)
        ),
        select(task_count_deltas.c.status, task_count_deltas.c.delta.label("n")).where(
            *_filters(task_count_deltas, tenant)
        ),
    ).subquery()
    rows = conn.execute(select(both.c.status, func.sum(both.c.n)).group_by(both.c.status))
    for status, count in rows:
        counts[Status(status)] += int(count or 0)
    return counts


def compact(conn: Connection) -> int:
    """Folds the appended deltas into the counts; returns how many were folded.

    The deltas folded are exactly those the DELETE removed (``RETURNING``): on PostgreSQL
    each statement sees the rows committed when it starts, so summing in one statement and
    deleting in another would delete deltas committed in between without folding them.
    """
    if conn.dialect.name == "postgresql":
        got = conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _COMPACT_LOCK})
        if not got.scalar_one():
            return 0  # another replica is compacting
    keys = [task_count_deltas.c[name] for name in COUNT_KEYS]
    deleted = conn.execute(delete(task_count_deltas).returning(*keys, task_count_deltas.c.delta))
    sums: dict[tuple[Any, ...], int] = {}
    folded = 0
    for row in deleted:
        folded += 1
        key = tuple(row[: len(COUNT_KEYS)])
        sums[key] = sums.get(key, 0) + int(row[-1])
    if not folded:
        return 0
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for values, delta in sums.items():
        if not delta:
            continue
        stmt = upsert(task_counts).values(**dict(zip(COUNT_KEYS, values, strict=True)), count=delta)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(COUNT_KEYS),
            set_={"count": task_counts.c.count + stmt.excluded.count},
        )
        conn.execute(stmt)
    conn.execute(delete(task_counts).where(task_counts.c.count == literal(0)))
    return folded
