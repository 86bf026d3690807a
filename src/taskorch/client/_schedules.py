"""Schedules in the SDK: ``client.schedules`` (:class:`Schedules`, blocking) and
``async_client.schedules`` (:class:`AsyncSchedules`), with the :class:`Schedule` they return.

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
from typing import TYPE_CHECKING, Any

import grpc

from taskorch.client._errors import from_rpc_error
from taskorch.client._models import Task, _struct, _time
from taskorch.v1 import schedule_service_pb2 as pb
from taskorch.v1 import schedule_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from taskorch.client._client import AsyncClient, Client


@dataclass(frozen=True)
class Schedule:
    """A schedule as the server last described it. ``task`` is its CreateTask body (the
    keyword arguments of ``create_task`` that were given)."""

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
    from taskorch.client._client import task_request

    return pb.CreateScheduleRequest(
        name=name,
        cron=cron,
        interval_seconds=interval_seconds,
        timezone=timezone,
        task=task_request(task),
        catch_up=catch_up,
        paused=paused,
    )


class Schedules:
    """``client.schedules``: recurring tasks of the caller's tenant (blocking)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = pb_grpc.ScheduleServiceStub(client._channel)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._client.timeout, metadata=self._client._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def create(
        self,
        name: str,
        *,
        task: Mapping[str, Any],
        cron: str = "",
        interval_seconds: float = 0.0,
        timezone: str = "",
        catch_up: str = "",
        paused: bool = False,
    ) -> Schedule:
        """Creates a schedule firing on ``cron`` (5 fields, in ``timezone``, UTC by default)
        or every ``interval_seconds`` (at least 1). ``task`` holds the keyword arguments of
        ``create_task``; ``catch_up`` is "one" (default: missed slots run once) or "none"."""
        request = _create(name, cron, interval_seconds, timezone, task, catch_up, paused)
        return Schedule.from_proto(self._call(self._stub.CreateSchedule, request))

    def list(self) -> list[Schedule]:
        response = self._call(self._stub.ListSchedules, pb.ListSchedulesRequest())
        return [Schedule.from_proto(s) for s in response.schedules]

    def get(self, name: str) -> Schedule:
        request = pb.GetScheduleRequest(name=name)
        return Schedule.from_proto(self._call(self._stub.GetSchedule, request))

    def delete(self, name: str) -> None:
        self._call(self._stub.DeleteSchedule, pb.DeleteScheduleRequest(name=name))

    def pause(self, name: str) -> Schedule:
        request = pb.PauseScheduleRequest(name=name)
        return Schedule.from_proto(self._call(self._stub.PauseSchedule, request))

    def resume(self, name: str) -> Schedule:
        """Fires again from the next slot after now (slots passed while paused are not run)."""
        request = pb.ResumeScheduleRequest(name=name)
        return Schedule.from_proto(self._call(self._stub.ResumeSchedule, request))

    def trigger(self, name: str) -> tuple[Schedule, Task]:
        """Creates the schedule's task now; returns the schedule and the task."""
        response = self._call(self._stub.TriggerSchedule, pb.TriggerScheduleRequest(name=name))
        return Schedule.from_proto(response.schedule), Task.from_proto(response.task)


class AsyncSchedules:
    """``async_client.schedules``: the methods of :class:`Schedules`, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = pb_grpc.ScheduleServiceStub(client._channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(
                request, timeout=self._client.timeout, metadata=self._client._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def create(
        self,
        name: str,
        *,
        task: Mapping[str, Any],
        cron: str = "",
        interval_seconds: float = 0.0,
        timezone: str = "",
        catch_up: str = "",
        paused: bool = False,
    ) -> Schedule:
        """See :meth:`Schedules.create`."""
        request = _create(name, cron, interval_seconds, timezone, task, catch_up, paused)
        return Schedule.from_proto(await self._call(self._stub.CreateSchedule, request))

    async def list(self) -> list[Schedule]:
        response = await self._call(self._stub.ListSchedules, pb.ListSchedulesRequest())
        return [Schedule.from_proto(s) for s in response.schedules]

    async def get(self, name: str) -> Schedule:
        request = pb.GetScheduleRequest(name=name)
        return Schedule.from_proto(await self._call(self._stub.GetSchedule, request))

    async def delete(self, name: str) -> None:
        await self._call(self._stub.DeleteSchedule, pb.DeleteScheduleRequest(name=name))

    async def pause(self, name: str) -> Schedule:
        request = pb.PauseScheduleRequest(name=name)
        return Schedule.from_proto(await self._call(self._stub.PauseSchedule, request))

    async def resume(self, name: str) -> Schedule:
        request = pb.ResumeScheduleRequest(name=name)
        return Schedule.from_proto(await self._call(self._stub.ResumeSchedule, request))

    async def trigger(self, name: str) -> tuple[Schedule, Task]:
        request = pb.TriggerScheduleRequest(name=name)
        response = await self._call(self._stub.TriggerSchedule, request)
        return Schedule.from_proto(response.schedule), Task.from_proto(response.task)
