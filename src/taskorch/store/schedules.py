"""Repository of schedules (synchronous SQLAlchemy Core, functions of a ``Connection``).

Every function but the scheduler's (:func:`due_schedules`, :func:`next_due`) takes the tenant
whose schedules it may touch: names are unique per tenant, and one tenant never sees
another's. :func:`claim_slot` is how a replica takes a slot to fire: one conditional UPDATE
that only one replica can win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, select, update

from taskorch.store.schema import schedules


@dataclass(frozen=True)
class ScheduleRecord:
    """A stored schedule as the table holds it."""

    schedule_id: str
    tenant_id: str
    name: str
    cron: str
    interval_seconds: float
    timezone: str
    task: dict[str, Any]
    catch_up: str
    paused: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_task_id: str | None
    fire_count: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def _record(row: RowMapping) -> ScheduleRecord:
    return ScheduleRecord(
        schedule_id=row["schedule_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        cron=row["cron"],
        interval_seconds=float(row["interval_seconds"]),
        timezone=row["timezone"],
        task=dict(row["task"] or {}),
        catch_up=row["catch_up"],
        paused=bool(row["paused"]),
        next_fire_at=row["next_fire_at"],
        last_fired_at=row["last_fired_at"],
        last_task_id=row["last_task_id"],
        fire_count=int(row["fire_count"]),
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def list_schedules(conn: Connection, tenant_id: str) -> list[ScheduleRecord]:
    """The tenant's schedules by name."""
    stmt = select(schedules).where(schedules.c.tenant_id == tenant_id).order_by(schedules.c.name)
    return [_record(row) for row in conn.execute(stmt).mappings()]


def count_schedules(conn: Connection, tenant_id: str) -> int:
    stmt = select(func.count()).select_from(schedules).where(schedules.c.tenant_id == tenant_id)
    return int(conn.execute(stmt).scalar_one())


def get_schedule(conn: Connection, tenant_id: str, name: str) -> ScheduleRecord | None:
    stmt = select(schedules).where(schedules.c.tenant_id == tenant_id, schedules.c.name == name)
    row = conn.execute(stmt).mappings().first()
    return _record(row) if row is not None else None


def insert_schedule(conn: Connection, record: ScheduleRecord) -> None:
    """Raises IntegrityError when the tenant already has a schedule of that name."""
    conn.execute(
        insert(schedules).values(
            schedule_id=record.schedule_id,
            tenant_id=record.tenant_id,
            name=record.name,
            cron=record.cron,
            interval_seconds=record.interval_seconds,
            timezone=record.timezone,
            task=record.task,
            catch_up=record.catch_up,
            paused=record.paused,
            next_fire_at=record.next_fire_at,
            last_fired_at=record.last_fired_at,
            last_task_id=record.last_task_id,
            fire_count=record.fire_count,
            last_error=record.last_error,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )
    )


def delete_schedule(conn: Connection, tenant_id: str, name: str) -> bool:
    """True when a schedule was deleted."""
    stmt = delete(schedules).where(schedules.c.tenant_id == tenant_id, schedules.c.name == name)
    return conn.execute(stmt).rowcount > 0


def set_paused(
    conn: Connection,
    tenant_id: str,
    name: str,
    *,
    paused: bool,
    next_fire_at: datetime | None,
    now: datetime,
) -> ScheduleRecord | None:
    """Pauses (no next slot) or resumes (from ``next_fire_at``); None when there is no such
    schedule."""
    stmt = (
        update(schedules)
        .where(schedules.c.tenant_id == tenant_id, schedules.c.name == name)
        .values(paused=paused, next_fire_at=next_fire_at, updated_at=now)
        .returning(schedules)
    )
    row = conn.execute(stmt).mappings().first()
    return _record(row) if row is not None else None


def due_schedules(conn: Connection, now: datetime, limit: int) -> list[ScheduleRecord]:
    """Schedules of every tenant whose next slot has come, earliest first."""
    stmt = (
        select(schedules)
        .where(schedules.c.next_fire_at <= now, schedules.c.paused.is_(False))
        .order_by(schedules.c.next_fire_at)
        .limit(limit)
    )
    return [_record(row) for row in conn.execute(stmt).mappings()]


def next_due(conn: Connection) -> datetime | None:
    """The earliest next slot of any schedule that is not paused."""
    stmt = (
        select(schedules.c.next_fire_at)
        .where(schedules.c.next_fire_at.is_not(None), schedules.c.paused.is_(False))
        .order_by(schedules.c.next_fire_at)
        .limit(1)
    )
    value: datetime | None = conn.execute(stmt).scalar()
    return value


def claim_slot(
    conn: Connection,
    schedule_id: str,
    *,
    slot: datetime,
    fired_for: datetime | None,
    next_fire_at: datetime,
    now: datetime,
) -> bool:
    """Takes the slot ``slot`` of a schedule to fire: moves its next_fire_at to
    ``next_fire_at`` if it still is ``slot`` and the schedule is not paused, in one statement.

    ``fired_for`` is the slot the firing is for (None: the slot is skipped, nothing fires).
    True when this call won the slot (another replica's claim, a pause or a delete makes it
    False).
    """
    values: dict[str, Any] = {"next_fire_at": next_fire_at, "updated_at": now}
    if fired_for is not None:
        values.update(last_fired_at=fired_for, fire_count=schedules.c.fire_count + 1)
    stmt = (
        update(schedules)
        .where(
            schedules.c.schedule_id == schedule_id,
            schedules.c.next_fire_at == slot,
            schedules.c.paused.is_(False),
        )
        .values(**values)
    )
    return conn.execute(stmt).rowcount == 1


def record_firing(
    conn: Connection,
    schedule_id: str,
    *,
    task_id: str | None,
    error: str | None,
    now: datetime,
    fired_at: datetime | None = None,
) -> None:
    """Notes what a firing created (or why it created nothing). ``fired_at`` (a trigger, which
    claims no slot) also counts the firing."""
    values: dict[str, Any] = {"last_error": error, "updated_at": now}
    if task_id is not None:
        values["last_task_id"] = task_id
    if fired_at is not None:
        values.update(last_fired_at=fired_at, fire_count=schedules.c.fire_count + 1)
    conn.execute(update(schedules).where(schedules.c.schedule_id == schedule_id).values(**values))
