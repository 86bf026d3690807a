"""TaskService over gRPC: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any, TypeAlias

from google.api import httpbody_pb2

from taskorch.core.planning import CONTAINER, TaskSpec
from taskorch.core.subtasks import NewSubtask, StatusReport, SubtaskService
from taskorch.core.tasks import ListRequest, TaskService
from taskorch.domain.errors import InvalidArgument, NoWorkAvailable, TaskorchError, within
from taskorch.domain.leases import WorkerIdentity
from taskorch.domain.limits import LIST_FULL_PAGE_BYTES
from taskorch.domain.values import Status, Task
from taskorch.server import convert
from taskorch.server.interceptors import current, current_caller
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc

# grpc ships no type information; servicer contexts are grpc.aio.ServicerContext.
Context: TypeAlias = Any


class TaskServicer(pb_grpc.TaskServiceServicer):
    """The TaskService RPCs, served by core's task service."""

    def __init__(self, tasks: TaskService, subtasks: SubtaskService) -> None:
        self.tasks = tasks
        self.subtasks = subtasks

    def _task(self, task: Task) -> pb.Task:
        return convert.task_to_proto(task, self.tasks.estimate_completion(task))

    async def CreateTask(self, request: pb.CreateTaskRequest, context: Context) -> pb.Task:
        """Creates a task: durable when this answers."""
        # An Idempotency-Key header (REST) or metadata works like request_id.
        key = current().metadata.get("idempotency-key", "")
        spec = convert.spec_from_proto(request, key)
        if _is_empty(spec) and _surface().split("?")[0].rstrip("/") == "/task":
            # Seed 000's `POST /task` with nothing: a container for custom subtasks.
            spec = replace(spec, task_type=CONTAINER)
        return self._task(await self.tasks.create(current_caller(), spec))

    async def BatchCreateTasks(
        self, request: pb.BatchCreateTasksRequest, context: Context
    ) -> pb.BatchCreateTasksResponse:
        """Creates up to 1000 tasks in one transaction: all of them or none."""
        specs = []
        for index, item in enumerate(request.requests):
            try:
                specs.append(convert.spec_from_proto(item))
            except TaskorchError as exc:
                raise within(exc, f"requests[{index}]") from None
        created = await self.tasks.create_many(current_caller(), specs)
        return pb.BatchCreateTasksResponse(tasks=[self._task(t) for t in created])

    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.Task:
        """Returns one task with its result, error and timings."""
        return self._task(await self.tasks.get(current_caller(), request.task_id))

    async def GetTaskArtifact(
        self, request: pb.GetTaskArtifactRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """One binary result of a task (a WAV, a PNG), raw with its content type."""
        artifact = await self.tasks.artifact(current_caller(), request.task_id, request.name)
        return httpbody_pb2.HttpBody(content_type=artifact.content_type, data=artifact.data)

    def _listed(self, tasks: Sequence[Task], view: int = 0) -> list[pb.Task]:
        return [convert.list_item(self._task(t), view) for t in tasks]

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        """Lists tasks with filters, sorting and offset, page or keyset pagination."""
        caller = current_caller()
        listing = _list_request(request)
        page = await self.tasks.list(caller, listing)
        items = self._listed(page.items, request.view)
        if request.view == pb.TASK_VIEW_FULL:
            # Whole payloads: the page stops before it would pass the budget (one task at
            # least, which fits by the input and result limits) and the token goes on.
            size, kept = 0, 0
            for item in items:
                size += item.ByteSize()
                if kept and size > LIST_FULL_PAGE_BYTES:
                    break
                kept += 1
            if kept < len(items):
                items = items[:kept]
                token = self.tasks.token_after(caller, listing, page.items[kept - 1])
                page = replace(page, next_page_token=token)
        return convert.page_to_proto(page, items)

    async def ListTasksJson(
        self, request: pb.ListTasksRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """The same list as a bare JSON array of tasks."""
        page = await self.tasks.list(current_caller(), _list_request(request))
        body = [convert.to_json(t) for t in self._listed(page.items)]
        return httpbody_pb2.HttpBody(
            content_type="application/json",
            data=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        )

    async def GetTasksByStatus(
        self, request: pb.GetTasksByStatusRequest, context: Context
    ) -> pb.TasksByStatus:
        """Current tasks grouped by status (the newest 100 of each), as seed 002 shows them."""
        groups = await self.tasks.by_status(current_caller(), request.limit)
        return pb.TasksByStatus(
            queued=self._listed(groups[Status.PENDING]),
            running=self._listed(groups[Status.RUNNING]),
            completed=self._listed(groups[Status.COMPLETED]),
            failed=self._listed(groups[Status.FAILED]),
            cancelled=self._listed(groups[Status.CANCELLED]),
        )

    async def UpdateTaskPriority(
        self, request: pb.UpdateTaskPriorityRequest, context: Context
    ) -> pb.Task:
        """Changes the priority of a task that has not started yet (1-10, higher runs first)."""
        task = await self.tasks.update_priority(current_caller(), request.task_id, request.priority)
        return self._task(task)

    async def CancelTask(self, request: pb.CancelTaskRequest, context: Context) -> pb.Task:
        """Cancels a task that has not finished."""
        return self._task(
            await self.tasks.cancel(current_caller(), request.task_id, request.reason)
        )

    # -- subtasks (seed 000) ------------------------------------------------------------------

    async def CreateSubtask(self, request: pb.CreateSubtaskRequest, context: Context) -> pb.Subtask:
        """Adds work to a task (seed 000)."""
        convert.check_input_size(("input", request.input if request.HasField("input") else None))
        spec = NewSubtask(
            kind=request.kind,
            name=request.name,
            input=convert.optional_struct(request, "input"),
            info=convert.optional_struct(request, "info"),
            stage=request.stage,
            model_name=request.model_name,
            max_attempts=request.max_attempts,
            timeout_seconds=request.timeout_seconds,
        )
        subtask = await self.subtasks.create(current_caller(), request.task_id, spec)
        return convert.subtask_to_proto(subtask)

    async def ListSubtasks(
        self, request: pb.ListSubtasksRequest, context: Context
    ) -> pb.ListSubtasksResponse:
        """The subtasks of a task, by stage then age."""
        found = await self.subtasks.list(current_caller(), request.task_id, request.status)
        return pb.ListSubtasksResponse(
            subtasks=[convert.subtask_to_proto(s) for s in found], total=len(found)
        )

    async def GetSubtask(self, request: pb.GetSubtaskRequest, context: Context) -> pb.Subtask:
        """One subtask of a task."""
        subtask = await self.subtasks.get(current_caller(), request.task_id, request.subtask_id)
        return convert.subtask_to_proto(subtask)

    async def UpdateSubtask(self, request: pb.UpdateSubtaskRequest, context: Context) -> pb.Subtask:
        """Sets a subtask's info (free-form annotations) and name; its input too while it waits."""
        convert.check_input_size(("input", request.input if request.HasField("input") else None))
        subtask = await self.subtasks.update(
            current_caller(),
            request.task_id,
            request.subtask_id,
            info=convert.optional_struct(request, "info"),
            name=request.name,
            input=convert.optional_struct(request, "input"),
        )
        return convert.subtask_to_proto(subtask)

    async def TakeSubtask(self, request: pb.TakeSubtaskRequest, context: Context) -> pb.Subtask:
        """Takes (leases) the next runnable subtask of this task (seed 000's `__take`)."""
        caller = current_caller()
        worker = WorkerIdentity(
            worker_id=request.worker_id or "anonymous",
            kinds=tuple(request.kinds),
            models=tuple(request.models),
            tenant_ids=None if caller.is_admin else (caller.tenant_id,),
        )
        lease = await self.subtasks.take(
            caller,
            request.task_id,
            worker,
            lease_seconds=request.lease_seconds,
            wait_seconds=request.wait_seconds,
        )
        if lease is None:
            raise NoWorkAvailable(worker.kinds)
        return convert.subtask_to_proto(lease.subtask, lease)

    async def UpdateSubtaskStatus(
        self, request: pb.UpdateSubtaskStatusRequest, context: Context
    ) -> pb.SubtaskStatusUpdate:
        """Reports on a leased subtask: progress, its result, or a failed attempt."""
        convert.check_result_size(request)
        report = StatusReport(
            lease_id=request.lease_id,
            status=_reported_status(request.status),
            progress=request.progress if request.HasField("progress") else None,
            message=request.message,
            result=convert.optional_struct(request, "result"),
            error=request.error,
            error_code=request.error_code,
            permanent=request.permanent,
            lease_seconds=request.lease_seconds,
            output_delta=request.output_delta,
        )
        subtask, answer = await self.subtasks.report(
            current_caller(), request.task_id, request.subtask_id, report
        )
        return pb.SubtaskStatusUpdate(
            subtask=convert.subtask_to_proto(subtask), stop=answer.cancelled, reason=answer.reason
        )

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        """Streams a task: a SNAPSHOT, then every change, ending after the terminal one."""
        events = self.tasks.watch(current_caller(), request.task_id, request.after_sequence)
        async for event in events:
            task = self._task(event.task) if event.task is not None else None
            yield convert.event_to_proto(event, task)

    async def WatchTasks(
        self, request: pb.WatchTasksRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        """Streams the caller's tasks as they change; live once the headers are sent."""
        events = self.tasks.watch_many(
            current_caller(),
            list(request.task_ids),
            terminal_only=request.terminal_only,
            live=lambda: context.send_initial_metadata(()),
        )
        async for event in events:
            task = self._task(event.task) if event.task is not None else None
            yield convert.event_to_proto(event, task)


# The seed documents disagree on the default page size; each REST surface keeps its own.
_SURFACE_LIMITS = (("/api/v1/", 100), ("/v1/", 10))
_DEFAULT_LIMIT = 50


def _surface() -> str:
    """The REST path a call came through ("" for native gRPC)."""
    return current().metadata.get("x-envoy-original-path", "")


def _is_empty(spec: TaskSpec) -> bool:
    return spec.text is None and not (spec.task_type or spec.template or spec.input_data)


def _list_request(request: pb.ListTasksRequest) -> ListRequest:
    listing = convert.list_request_from_proto(request)
    if listing.limit:
        return listing
    path = _surface()
    limit = next((n for prefix, n in _SURFACE_LIMITS if path.startswith(prefix)), _DEFAULT_LIMIT)
    return replace(listing, limit=limit)


def _reported_status(number: int) -> Status:
    """The status a worker reports (unset: still running)."""
    if not number:
        return Status.RUNNING
    try:
        return Status(number)
    except ValueError:
        words = ", ".join(s.name for s in Status)
        raise InvalidArgument(f"status {number} is not one of {words}", field="status") from None
