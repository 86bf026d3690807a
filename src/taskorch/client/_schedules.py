"""Schedule values of the SDK: the :class:`Schedule` that ``client.schedules`` returns.

A schedule creates a task on a 5-field cron expression (in an IANA time zone) or every
``interval_seconds``; ``task`` takes the keyword arguments of ``create_task``::

    client.schedules.create(
        "nightly-report", cron="0 2 * * *", timezone="Europe/Paris",
        task={"template": "summarize-then-analyze", "parameters": {"text": "..."}},
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskorch.client._base import task_request
from taskorch.client._models import _struct, _time
from taskorch.v1 import schedule_service_pb2 as pb


@dataclass(frozen=True)
class Schedule:
    """A schedule as the server last described it.

    ``task`` is its CreateTask body (the keyword arguments of ``create_task`` that were given).
    """

    schedule_id: str
    name: str
    cron: str
    interval_seconds: float
    timezone: str
    task: dict[str, Any]
    catch_up: str
    paused: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_task_id: str
    fire_count: int
    last_error: str
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_proto(cls, m: pb.Schedule) -> Schedule:
        t = m.task
        task: dict[str, Any] = {
            key: value
            for key, value in (
                ("task_type", t.task_type),
                ("model_name", t.model_name),
                ("template", t.template),
                ("priority", t.priority),
                ("depends_on", list(t.depends_on)),
                ("max_attempts", t.max_attempts),
                ("timeout_seconds", t.timeout_seconds),
                ("run_after_seconds", t.run_after_seconds),
                ("concurrency_key", t.concurrency_key),
                ("concurrency_limit", t.concurrency_limit),
            )
            if value
        }
        if t.HasField("text"):
            task["text"] = t.text
        for name in ("input_data", "parameters"):
            if t.HasField(name):
                task[name] = _struct(t, name)
        return cls(
            schedule_id=m.schedule_id,
            name=m.name,
            cron=m.cron,
            interval_seconds=m.interval_seconds,
            timezone=m.timezone,
            task=task,
            catch_up=m.catch_up,
            paused=m.paused,
            next_fire_at=_time(m, "next_fire_at"),
            last_fired_at=_time(m, "last_fired_at"),
            last_task_id=m.last_task_id,
            fire_count=m.fire_count,
            last_error=m.last_error,
            created_at=_time(m, "created_at"),
            updated_at=_time(m, "updated_at"),
        )


def _create(
    name: str,
    cron: str,
    interval_seconds: float,
    timezone: str,
    task: Mapping[str, Any],
    catch_up: str,
    paused: bool,
) -> pb.CreateScheduleRequest:
    return pb.CreateScheduleRequest(
        name=name,
        cron=cron,
        interval_seconds=interval_seconds,
        timezone=timezone,
        task=task_request(task),
        catch_up=catch_up,
        paused=paused,
    )
