"""TaskService over gRPC: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, TypeAlias

from google.api import httpbody_pb2

from taskorch.core.model import Status, Task
from taskorch.core.tasks import ListRequest, TaskService
from taskorch.server import convert
from taskorch.server.interceptors import current, current_caller
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc

# grpc ships no type information; servicer contexts are grpc.aio.ServicerContext.
Context: TypeAlias = Any


class TaskServicer(pb_grpc.TaskServiceServicer):
    def __init__(self, tasks: TaskService) -> None:
        self.tasks = tasks

    def _task(self, task: Task) -> pb.Task:
        return convert.task_to_proto(task, self.tasks.estimate_completion(task))

    async def CreateTask(self, request: pb.CreateTaskRequest, context: Context) -> pb.Task:
        # An Idempotency-Key header (REST) or metadata works like request_id.
        key = current().metadata.get("idempotency-key", "")
        spec = convert.spec_from_proto(request, key)
        return self._task(await self.tasks.create(current_caller(), spec))

    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.Task:
        return self._task(await self.tasks.get(current_caller(), request.task_id))

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        page = await self.tasks.list(current_caller(), _list_request(request))
        return convert.page_to_proto(page, [self._task(t) for t in page.items])

    async def ListTasksJson(
        self, request: pb.ListTasksRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        page = await self.tasks.list(current_caller(), _list_request(request))
        body = [convert.to_json(self._task(t)) for t in page.items]
        return httpbody_pb2.HttpBody(
            content_type="application/json",
            data=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        )

    async def GetTasksByStatus(
        self, request: pb.GetTasksByStatusRequest, context: Context
    ) -> pb.TasksByStatus:
        groups = await self.tasks.by_status(current_caller(), request.limit)
        return pb.TasksByStatus(
            queued=[self._task(t) for t in groups[Status.PENDING]],
            running=[self._task(t) for t in groups[Status.RUNNING]],
            completed=[self._task(t) for t in groups[Status.COMPLETED]],
            failed=[self._task(t) for t in groups[Status.FAILED]],
            cancelled=[self._task(t) for t in groups[Status.CANCELLED]],
        )

    async def UpdateTaskPriority(
        self, request: pb.UpdateTaskPriorityRequest, context: Context
    ) -> pb.Task:
        task = await self.tasks.update_priority(current_caller(), request.task_id, request.priority)
        return self._task(task)

    async def CancelTask(self, request: pb.CancelTaskRequest, context: Context) -> pb.Task:
        return self._task(
            await self.tasks.cancel(current_caller(), request.task_id, request.reason)
        )

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        events = self.tasks.watch(current_caller(), request.task_id, request.after_sequence)
        async for event in events:
            task = self._task(event.task) if event.task is not None else None
            yield convert.event_to_proto(event, task)


# The seed documents disagree on the default page size; each REST surface keeps its own.
_SURFACE_LIMITS = (("/api/v1/", 100), ("/v1/", 10))
_DEFAULT_LIMIT = 50


def _list_request(request: pb.ListTasksRequest) -> ListRequest:
    listing = convert.list_request_from_proto(request)
    if listing.limit:
        return listing
    path = current().metadata.get("x-envoy-original-path", "")
    limit = next((n for prefix, n in _SURFACE_LIMITS if path.startswith(prefix)), _DEFAULT_LIMIT)
    return replace(listing, limit=limit)
