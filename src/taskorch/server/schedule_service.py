"""ScheduleService over gRPC: protobuf in, domain calls (core/schedules.py), protobuf out."""

from __future__ import annotations

from typing import Any, TypeAlias

from google.protobuf import empty_pb2

from taskorch.core.planning import TaskSpec
from taskorch.core.schedules import NewSchedule, Schedule, ScheduleService
from taskorch.core.tasks import TaskService
from taskorch.domain.errors import TaskorchError, within
from taskorch.server import convert
from taskorch.server.interceptors import current_caller
from taskorch.v1 import schedule_service_pb2 as pb
from taskorch.v1 import schedule_service_pb2_grpc as pb_grpc
from taskorch.v1 import task_service_pb2 as task_pb

# grpc ships no type information; servicer contexts are grpc.aio.ServicerContext.
Context: TypeAlias = Any


def task_request_to_proto(spec: TaskSpec) -> task_pb.CreateTaskRequest:
    """A schedule's task as the CreateTask body it was given as."""
    message = task_pb.CreateTaskRequest(
        task_type=spec.task_type,
        model_name=spec.model_name,
        template=spec.template,
        priority=spec.priority,
        depends_on=list(spec.depends_on),
        max_attempts=spec.max_attempts,
        timeout_seconds=spec.timeout_seconds,
        run_after_seconds=spec.run_after_seconds,
        concurrency_key=spec.concurrency_key,
        concurrency_limit=spec.concurrency_limit,
    )
    if spec.text is not None:
        message.text = spec.text
    if spec.input_data is not None:
        message.input_data.update(spec.input_data)
    if spec.parameters is not None:
        message.parameters.update(spec.parameters)
    return message


def schedule_to_proto(schedule: Schedule) -> pb.Schedule:
    """A schedule as the API's message."""
    message = pb.Schedule(
        schedule_id=schedule.schedule_id,
        name=schedule.name,
        cron=schedule.cron,
        interval_seconds=schedule.interval_seconds,
        timezone=schedule.timezone,
        task=task_request_to_proto(schedule.task),
        catch_up=schedule.catch_up,
        paused=schedule.paused,
        last_task_id=schedule.last_task_id,
        fire_count=schedule.fire_count,
        last_error=schedule.last_error,
    )
    convert.set_time(message.next_fire_at, schedule.next_fire_at)
    convert.set_time(message.last_fired_at, schedule.last_fired_at)
    convert.set_time(message.created_at, schedule.created_at)
    convert.set_time(message.updated_at, schedule.updated_at)
    return message


def new_schedule_from_proto(request: pb.CreateScheduleRequest) -> NewSchedule:
    """The domain's new schedule from a CreateSchedule request."""
    task = None
    if request.HasField("task"):
        try:
            task = convert.spec_from_proto(request.task)
        except TaskorchError as exc:
            raise within(exc, "task") from None
    return NewSchedule(
        name=request.name,
        cron=request.cron,
        interval_seconds=request.interval_seconds,
        timezone=request.timezone,
        task=task,
        catch_up=request.catch_up,
        paused=request.paused,
    )


class ScheduleServicer(pb_grpc.ScheduleServiceServicer):
    """The ScheduleService RPCs: recurring tasks of the caller's tenant."""

    def __init__(self, schedules: ScheduleService, tasks: TaskService) -> None:
        self.schedules = schedules
        self.tasks = tasks

    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Context
    ) -> pb.Schedule:
        """Creates a schedule in the caller's tenant."""
        created = await self.schedules.create(current_caller(), new_schedule_from_proto(request))
        return schedule_to_proto(created)

    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Context
    ) -> pb.ListSchedulesResponse:
        """The caller's schedules, by name."""
        found = await self.schedules.list(current_caller())
        return pb.ListSchedulesResponse(schedules=[schedule_to_proto(s) for s in found])

    async def GetSchedule(self, request: pb.GetScheduleRequest, context: Context) -> pb.Schedule:
        """One schedule with its next and last firing."""
        return schedule_to_proto(await self.schedules.get(current_caller(), request.name))

    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: Context
    ) -> empty_pb2.Empty:
        """Deletes a schedule."""
        await self.schedules.delete(current_caller(), request.name)
        return empty_pb2.Empty()

    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: Context
    ) -> pb.Schedule:
        """Stops a schedule from firing until it is resumed (pausing a paused one answers it)."""
        return schedule_to_proto(await self.schedules.pause(current_caller(), request.name))

    async def ResumeSchedule(
        self, request: pb.ResumeScheduleRequest, context: Context
    ) -> pb.Schedule:
        """Lets a paused schedule fire again, from its next slot after now."""
        return schedule_to_proto(await self.schedules.resume(current_caller(), request.name))

    async def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: Context
    ) -> pb.TriggerScheduleResponse:
        """Creates the schedule's task now."""
        schedule, task = await self.schedules.trigger(current_caller(), request.name)
        return pb.TriggerScheduleResponse(
            schedule=schedule_to_proto(schedule),
            task=convert.task_to_proto(task, self.tasks.estimate_completion(task)),
        )
