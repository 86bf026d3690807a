"""Rows of the queue's tables as the raw drivers see them, and the domain values they hold.

The schema (store/schema.py) is shared with SQLAlchemy, so raw statements store values the
way SQLAlchemy does: on SQLite, times as ``YYYY-MM-DD HH:MM:SS.ffffff`` text in UTC, JSON as
text and booleans as 0/1; on PostgreSQL, ``timestamptz`` and ``jsonb`` (decoded by the
connection's codecs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from taskorch.domain.values import ResourceUsage, Status, Subtask, Task

TASK_COLUMNS = (
    "task_id",
    "tenant_id",
    "status",
    "task_type",
    "model_name",
    "template",
    "text",
    "input_data",
    "parameters",
    "priority",
    "depends_on",
    "result",
    "error",
    "error_code",
    "progress",
    "progress_message",
    "worker_id",
    "request_id",
    "attempt",
    "max_attempts",
    "timeout_seconds",
    "resource_usage",
    "sequence",
    "cancel_reason",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "cancelled_at",
    "run_at",
    "concurrency_key",
)
SUBTASK_COLUMNS = (
    "subtask_id",
    "task_id",
    "tenant_id",
    "kind",
    "model_name",
    "name",
    "stage",
    "input",
    "info",
    "status",
    "progress",
    "result",
    "error",
    "error_code",
    "attempt",
    "max_attempts",
    "priority",
    "ready",
    "available_at",
    "lease_id",
    "lease_expires_at",
    "worker_id",
    "timeout_seconds",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
)
EVENT_COLUMNS = (
    "task_id",
    "tenant_id",
    "sequence",
    "type",
    "status",
    "progress",
    "message",
    "output_delta",
    "data",
    "created_at",
)


# -- SQLite values -----------------------------------------------------------------------------


def sqlite_time(value: datetime | None) -> str | None:
    """A UTC time as SQLAlchemy stores it on SQLite (always with microseconds, so text order
    is time order)."""
    return None if value is None else _format_time(value)


@lru_cache(maxsize=1024)
def _format_time(value: datetime) -> str:
    # Cached: a batch writes the same few times (its "now", deadlines) into many rows.
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")  # SQLAlchemy's text, zero-padded


def dumps(value: Any) -> str | None:
    """JSON text for a JSON column (None stays NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def task_values_sqlite(task: Task) -> tuple[Any, ...]:
    """The row of a new task, in TASK_COLUMNS order."""
    return (
        task.task_id,
        task.tenant_id,
        int(task.status),
        task.task_type,
        task.model_name,
        task.template,
        task.text,
        dumps(task.input_data),
        dumps(task.parameters),
        task.priority,
        dumps(list(task.depends_on)) if task.depends_on else None,
        dumps(task.result),
        task.error,
        task.error_code,
        task.progress,
        task.progress_message,
        task.worker_id,
        task.request_id,
        task.attempt,
        task.max_attempts,
        task.timeout_seconds,
        dumps(task.resource_usage.to_json()) if task.resource_usage else None,
        task.sequence,
        None,
        sqlite_time(task.created_at),
        sqlite_time(task.updated_at),
        sqlite_time(task.started_at),
        sqlite_time(task.completed_at),
        sqlite_time(task.cancelled_at),
        sqlite_time(task.run_at),
        task.concurrency_key,
    )


def subtask_values_sqlite(s: Subtask) -> tuple[Any, ...]:
    """The row of a new subtask, in SUBTASK_COLUMNS order."""
    return (
        s.subtask_id,
        s.task_id,
        s.tenant_id,
        s.kind,
        s.model_name,
        s.name,
        s.stage,
        dumps(s.input),
        dumps(s.info),
        int(s.status),
        s.progress,
        dumps(s.result),
        s.error,
        s.error_code,
        s.attempt,
        s.max_attempts,
        s.priority,
        1 if s.ready else 0,
        sqlite_time(s.available_at or s.created_at),
        s.lease_id,
        sqlite_time(s.lease_expires_at),
        s.worker_id,
        s.timeout_seconds,
        sqlite_time(s.created_at),
        sqlite_time(s.updated_at),
        sqlite_time(s.started_at),
        sqlite_time(s.completed_at),
    )


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


@lru_cache(maxsize=4096)
def _parse_time(value: str) -> datetime:
    # Cached: the rows a batch writes share their times (each transition's "now").
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def parse_sqlite_time(value: str | None) -> datetime | None:
    """A time as SQLAlchemy stores it on SQLite, back as an aware UTC datetime."""
    return None if value is None else _parse_time(value)


_time = parse_sqlite_time


def task_from_sqlite(row: Any) -> Task:
    """A task from a ``tasks`` row read with the sqlite3 driver (``sqlite3.Row``). Written
    out field by field: it runs for every task a batch ends."""
    return Task(
        task_id=row["task_id"],
        tenant_id=row["tenant_id"],
        status=Status(row["status"]),
        task_type=row["task_type"],
        model_name=row["model_name"],
        template=row["template"],
        text=row["text"],
        input_data=_json(row["input_data"]),
        parameters=_json(row["parameters"]),
        priority=row["priority"],
        depends_on=tuple(_json(row["depends_on"]) or ()),
        result=_json(row["result"]),
        error=row["error"],
        error_code=row["error_code"],
        progress=row["progress"],
        progress_message=row["progress_message"],
        worker_id=row["worker_id"],
        request_id=row["request_id"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        timeout_seconds=row["timeout_seconds"],
        resource_usage=ResourceUsage.from_json(_json(row["resource_usage"])),
        sequence=row["sequence"],
        created_at=_time(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_time(row["updated_at"]),  # type: ignore[arg-type]
        started_at=_time(row["started_at"]),
        completed_at=_time(row["completed_at"]),
        cancelled_at=_time(row["cancelled_at"]),
        run_at=_time(row["run_at"]),
        concurrency_key=row["concurrency_key"],
    )


def subtask_from_sqlite(row: Any) -> Subtask:
    """A subtask from a ``subtasks`` row read with the sqlite3 driver (see above)."""
    return Subtask(
        subtask_id=row["subtask_id"],
        task_id=row["task_id"],
        tenant_id=row["tenant_id"],
        kind=row["kind"],
        model_name=row["model_name"],
        name=row["name"],
        stage=row["stage"],
        input=_json(row["input"]),
        info=_json(row["info"]),
        status=Status(row["status"]),
        progress=row["progress"],
        result=_json(row["result"]),
        error=row["error"],
        error_code=row["error_code"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        ready=bool(row["ready"]),
        available_at=_time(row["available_at"]),
        lease_id=row["lease_id"],
        lease_expires_at=_time(row["lease_expires_at"]),
        worker_id=row["worker_id"],
        timeout_seconds=row["timeout_seconds"],
        created_at=_time(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_time(row["updated_at"]),  # type: ignore[arg-type]
        started_at=_time(row["started_at"]),
        completed_at=_time(row["completed_at"]),
    )


# -- domain values from decoded rows (either backend) ------------------------------------------


def task_from(get: Callable[[str], Any]) -> Task:
    return Task(
        task_id=get("task_id"),
        tenant_id=get("tenant_id"),
        status=Status(get("status")),
        task_type=get("task_type"),
        model_name=get("model_name"),
        template=get("template"),
        text=get("text"),
        input_data=get("input_data"),
        parameters=get("parameters"),
        priority=get("priority"),
        depends_on=tuple(get("depends_on") or ()),
        result=get("result"),
        error=get("error"),
        error_code=get("error_code"),
        progress=get("progress"),
        progress_message=get("progress_message"),
        worker_id=get("worker_id"),
        request_id=get("request_id"),
        attempt=get("attempt"),
        max_attempts=get("max_attempts"),
        timeout_seconds=get("timeout_seconds"),
        resource_usage=ResourceUsage.from_json(get("resource_usage")),
        sequence=get("sequence"),
        created_at=get("created_at"),
        updated_at=get("updated_at"),
        started_at=get("started_at"),
        completed_at=get("completed_at"),
        cancelled_at=get("cancelled_at"),
        run_at=get("run_at"),
        concurrency_key=get("concurrency_key"),
    )


def subtask_from(get: Callable[[str], Any]) -> Subtask:
    return Subtask(
        subtask_id=get("subtask_id"),
        task_id=get("task_id"),
        tenant_id=get("tenant_id"),
        kind=get("kind"),
        model_name=get("model_name"),
        name=get("name"),
        stage=get("stage"),
        input=get("input"),
        info=get("info"),
        status=Status(get("status")),
        progress=get("progress"),
        result=get("result"),
        error=get("error"),
        error_code=get("error_code"),
        attempt=get("attempt"),
        max_attempts=get("max_attempts"),
        priority=get("priority"),
        ready=bool(get("ready")),
        available_at=get("available_at"),
        lease_id=get("lease_id"),
        lease_expires_at=get("lease_expires_at"),
        worker_id=get("worker_id"),
        timeout_seconds=get("timeout_seconds"),
        created_at=get("created_at"),
        updated_at=get("updated_at"),
        started_at=get("started_at"),
        completed_at=get("completed_at"),
    )
