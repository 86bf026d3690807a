"""The SDK's clients: :class:`AsyncClient` (asyncio) and :class:`Client` (blocking).

Both hide the generated stubs, raise typed errors (``_errors.py``) and return plain
dataclasses (``_models.py``). ``watch_task`` reconnects by itself when the connection drops
and resumes after the last event it delivered, so a caller never sees an event twice or
misses one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc

from taskorch.client._chat import AsyncChat, Chat
from taskorch.client._collections import AsyncCollections, Collections
from taskorch.client._errors import DeadlineExceededError, UnavailableError, from_rpc_error
from taskorch.client._inference import AsyncModels, Models
from taskorch.client._models import Task, TaskArtifact, TaskEvent, TaskPage
from taskorch.client._schedules import AsyncSchedules, Schedules
from taskorch.limits import MAX_MESSAGE_BYTES
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
WATCH_RETRIES = 8
T = TypeVar("T")


def _metadata(api_key: str | None, bearer_token: str | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    if api_key:
        pairs.append(("x-api-key", api_key))
    if bearer_token:
        pairs.append(("authorization", f"Bearer {bearer_token}"))
    return tuple(pairs)


def _create_request(
    *,
    text: str | None,
    task_type: str,
    model_name: str,
    input_data: Mapping[str, Any] | None,
    parameters: Mapping[str, Any] | None,
    template: str,
    priority: int,
    depends_on: Sequence[str],
    request_id: str,
    max_attempts: int,
    timeout_seconds: float,
    run_at: datetime | str | None = None,
    run_after_seconds: float = 0.0,
    concurrency_key: str = "",
    concurrency_limit: int = 0,
) -> pb.CreateTaskRequest:
    request = pb.CreateTaskRequest(
        task_type=task_type,
        model_name=model_name,
        template=template,
        priority=priority,
        depends_on=list(depends_on),
        request_id=request_id,
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        run_after_seconds=run_after_seconds,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
    )
    if run_at is not None:
        request.run_at.FromDatetime(_aware(run_at))
    if text is not None:
        request.text = text
    if input_data is not None:
        request.input_data.update(input_data)
    if parameters is not None:
        request.parameters.update(parameters)
    return request


def _aware(value: datetime | str) -> datetime:
    """A time with its zone: a datetime, or RFC 3339 text ("2026-12-03T18:00:00Z")."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        raise ValueError("run_at needs a time zone (an aware datetime, or a Z or +hh:mm suffix)")
    return at


_CREATE_DEFAULTS: dict[str, Any] = {
    "text": None,
    "task_type": "",
    "model_name": "",
    "input_data": None,
    "parameters": None,
    "template": "",
    "priority": 0,
    "depends_on": (),
    "request_id": "",
    "max_attempts": 0,
    "timeout_seconds": 0.0,
    "run_at": None,
    "run_after_seconds": 0.0,
    "concurrency_key": "",
    "concurrency_limit": 0,
}


def _batch_request(requests: Sequence[Mapping[str, Any]]) -> pb.BatchCreateTasksRequest:
    unknown = {key for item in requests for key in item} - set(_CREATE_DEFAULTS)
    if unknown:
        raise TypeError(f"create_tasks: unknown fields {sorted(unknown)}")
    return pb.BatchCreateTasksRequest(
        requests=[_create_request(**{**_CREATE_DEFAULTS, **item}) for item in requests]
    )


def task_request(task: Mapping[str, Any]) -> pb.CreateTaskRequest:
    """A CreateTask request from the keyword arguments of ``create_task`` (a schedule's task)."""
    unknown = set(task) - set(_CREATE_DEFAULTS)
    if unknown:
        raise TypeError(f"task: unknown fields {sorted(unknown)}")
    return _create_request(**{**_CREATE_DEFAULTS, **task})


# The server's message limit, both ways: what it accepts, it can send back (gRPC's own
# default would refuse answers over 4 MiB).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def _list_request(**filters: Any) -> pb.ListTasksRequest:
    return pb.ListTasksRequest(**{k: v for k, v in filters.items() if v})


class AsyncClient:
    """An asyncio client of a taskorch server (gRPC, or Envoy's port with gRPC passthrough).

    Args:
        target: ``HOST:PORT`` of the server.
        api_key: sent as ``x-api-key`` metadata.
        bearer_token: an OAuth/JWT access token, sent as ``authorization: Bearer …``.
        timeout: per-call deadline in seconds (not applied to watch streams).
        credentials: TLS channel credentials; plaintext when None.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        bearer_token: str | None = None,
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = _metadata(api_key, bearer_token)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.aio.insecure_channel(target, CHANNEL_OPTIONS)
        )
        self._tasks = pb_grpc.TaskServiceStub(self._channel)
        #: Chat sessions, messages and streamed replies.
        self.chat = AsyncChat(self)
        #: The server's models and synchronous inference.
        self.models = AsyncModels(self)
        #: Recurring tasks: by cron expression or interval.
        self.schedules = AsyncSchedules(self)
        #: Collections of documents and search over them (retrieval).
        self.collections = AsyncCollections(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def create_task(
        self,
        *,
        text: str | None = None,
        task_type: str = "",
        model_name: str = "",
        input_data: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        template: str = "",
        priority: int = 0,
        depends_on: Sequence[str] = (),
        request_id: str = "",
        max_attempts: int = 0,
        timeout_seconds: float = 0.0,
        run_at: datetime | str | None = None,
        run_after_seconds: float = 0.0,
        concurrency_key: str = "",
        concurrency_limit: int = 0,
    ) -> Task:
        """Queues a task; it is durable when this returns. See CreateTaskRequest.
        ``run_at`` (an aware datetime or RFC 3339 text) or ``run_after_seconds`` delay it;
        at most ``concurrency_limit`` tasks of one ``concurrency_key`` run at once."""
        request = _create_request(
            text=text,
            task_type=task_type,
            model_name=model_name,
            input_data=input_data,
            parameters=parameters,
            template=template,
            priority=priority,
            depends_on=depends_on,
            request_id=request_id,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            run_at=run_at,
            run_after_seconds=run_after_seconds,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )
        return Task.from_proto(await self._call(self._tasks.CreateTask, request))

    async def create_tasks(self, requests: Sequence[Mapping[str, Any]]) -> list[Task]:
        """Queues up to 1000 tasks in one call and one transaction: all of them or none.
        Each request has the keyword arguments of :meth:`create_task`, e.g.
        ``[{"text": "..."}, {"task_type": "echo", "priority": 8}]``; the tasks come back in
        the same order."""
        response = await self._call(self._tasks.BatchCreateTasks, _batch_request(requests))
        return [Task.from_proto(t) for t in response.tasks]

    async def get_task(self, task_id: str) -> Task:
        response = await self._call(self._tasks.GetTask, pb.GetTaskRequest(task_id=task_id))
        return Task.from_proto(response)

    async def get_task_artifact(self, task_id: str, name: str) -> TaskArtifact:
        """One binary result of a task, by the name its result lists (``result["artifacts"]``)."""
        request = pb.GetTaskArtifactRequest(task_id=task_id, name=name)
        body = await self._call(self._tasks.GetTaskArtifact, request)
        return TaskArtifact(name, body.content_type, bytes(body.data))

    async def list_tasks(self, **filters: Any) -> TaskPage:
        """One page; filters: status, task_type, model_name, template, limit, offset, page,
        sort_by, sort_order, page_token."""
        response = await self._call(self._tasks.ListTasks, _list_request(**filters))
        return TaskPage.from_proto(response)

    async def iter_tasks(self, **filters: Any) -> AsyncIterator[Task]:
        """Every matching task, following page tokens."""
        token = ""
        while True:
            page = await self.list_tasks(**filters, page_token=token)
            for task in page.tasks:
                yield task
            token = page.next_page_token
            if not token:
                return

    async def cancel_task(self, task_id: str, reason: str = "") -> Task:
        request = pb.CancelTaskRequest(task_id=task_id, reason=reason)
        return Task.from_proto(await self._call(self._tasks.CancelTask, request))

    async def watch_task(
        self, task_id: str, *, after_sequence: int = 0
    ) -> AsyncIterator[TaskEvent]:
        """The task's snapshot (or the events after ``after_sequence``), then every change,
        ending after the final one. Reconnects and resumes when the connection drops."""
        last = after_sequence
        retries = 0
        while True:
            request = pb.WatchTaskRequest(task_id=task_id, after_sequence=last)
            call = self._tasks.WatchTask(request, metadata=self._metadata)
            try:
                async for message in call:
                    event = TaskEvent.from_proto(message)
                    retries = 0
                    last = max(last, event.sequence)
                    yield event
                    if event.is_terminal:
                        return
                return
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if not isinstance(error, UnavailableError) or retries >= WATCH_RETRIES:
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            await asyncio.sleep(min(0.2 * 2**retries, 5.0))

    async def wait_for_task(self, task_id: str, *, timeout: float | None = None) -> Task:
        """Blocks until the task ends; returns it with its result or error."""

        async def final() -> Task:
            async for event in self.watch_task(task_id):
                if event.is_terminal and event.task is not None:
                    return event.task
            return await self.get_task(task_id)

        async with asyncio.timeout(timeout):
            return await final()


class Client:
    """A blocking client with the same methods as :class:`AsyncClient`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        bearer_token: str | None = None,
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = _metadata(api_key, bearer_token)
        self._channel = (
            grpc.secure_channel(target, credentials, CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.insecure_channel(target, CHANNEL_OPTIONS)
        )
        self._tasks = pb_grpc.TaskServiceStub(self._channel)
        #: Chat sessions, messages and streamed replies.
        self.chat = Chat(self)
        #: The server's models and synchronous inference.
        self.models = Models(self)
        #: Recurring tasks: by cron expression or interval.
        self.schedules = Schedules(self)
        #: Collections of documents and search over them (retrieval).
        self.collections = Collections(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def create_task(
        self,
        *,
        text: str | None = None,
        task_type: str = "",
        model_name: str = "",
        input_data: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        template: str = "",
        priority: int = 0,
        depends_on: Sequence[str] = (),
        request_id: str = "",
        max_attempts: int = 0,
        timeout_seconds: float = 0.0,
        run_at: datetime | str | None = None,
        run_after_seconds: float = 0.0,
        concurrency_key: str = "",
        concurrency_limit: int = 0,
    ) -> Task:
        request = _create_request(
            text=text,
            task_type=task_type,
            model_name=model_name,
            input_data=input_data,
            parameters=parameters,
            template=template,
            priority=priority,
            depends_on=depends_on,
            request_id=request_id,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            run_at=run_at,
            run_after_seconds=run_after_seconds,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )
        return Task.from_proto(self._call(self._tasks.CreateTask, request))

    def create_tasks(self, requests: Sequence[Mapping[str, Any]]) -> list[Task]:
        """Queues up to 1000 tasks in one call; see :meth:`AsyncClient.create_tasks`."""
        response = self._call(self._tasks.BatchCreateTasks, _batch_request(requests))
        return [Task.from_proto(t) for t in response.tasks]

    def get_task(self, task_id: str) -> Task:
        return Task.from_proto(self._call(self._tasks.GetTask, pb.GetTaskRequest(task_id=task_id)))

    def get_task_artifact(self, task_id: str, name: str) -> TaskArtifact:
        """One binary result of a task, by the name its result lists (``result["artifacts"]``)."""
        request = pb.GetTaskArtifactRequest(task_id=task_id, name=name)
        body = self._call(self._tasks.GetTaskArtifact, request)
        return TaskArtifact(name, body.content_type, bytes(body.data))

    def list_tasks(self, **filters: Any) -> TaskPage:
        return TaskPage.from_proto(self._call(self._tasks.ListTasks, _list_request(**filters)))

    def iter_tasks(self, **filters: Any) -> Iterator[Task]:
        token = ""
        while True:
            page = self.list_tasks(**filters, page_token=token)
            yield from page.tasks
            token = page.next_page_token
            if not token:
                return

    def cancel_task(self, task_id: str, reason: str = "") -> Task:
        request = pb.CancelTaskRequest(task_id=task_id, reason=reason)
        return Task.from_proto(self._call(self._tasks.CancelTask, request))

    def watch_task(self, task_id: str, *, after_sequence: int = 0) -> Iterator[TaskEvent]:
        return self._watch(task_id, after_sequence, None)

    def _watch(
        self, task_id: str, after_sequence: int, deadline: float | None
    ) -> Iterator[TaskEvent]:
        """The watch, cut by the server at ``deadline`` (time.monotonic()) if one is given:
        DeadlineExceededError, even while no event comes."""
        last = after_sequence
        retries = 0
        while True:
            request = pb.WatchTaskRequest(task_id=task_id, after_sequence=last)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = self._tasks.WatchTask(request, metadata=self._metadata, timeout=remaining)
            try:
                for message in call:
                    event = TaskEvent.from_proto(message)
                    retries = 0
                    last = max(last, event.sequence)
                    yield event
                    if event.is_terminal:
                        return
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if not isinstance(error, UnavailableError) or retries >= WATCH_RETRIES:
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            time.sleep(min(0.2 * 2**retries, 5.0))

    def wait_for_task(self, task_id: str, *, timeout: float | None = None) -> Task:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event in self._watch(task_id, 0, deadline):
                if event.is_terminal and event.task is not None:
                    return event.task
        except DeadlineExceededError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout} s") from None
        return self.get_task(task_id)
