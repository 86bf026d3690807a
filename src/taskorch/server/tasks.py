"""TaskService over gRPC: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from taskorch.core.model import Task
from taskorch.core.tasks import TaskService
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
        page = await self.tasks.list(current_caller(), convert.list_request_from_proto(request))
        return convert.page_to_proto(page, [self._task(t) for t in page.items])

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
