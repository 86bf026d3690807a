"""The SDK's calls, written once: :class:`AsyncClient` and its namespaces (asyncio).

This file is the one source of the SDK's I/O. ``_sync_client.py`` (the blocking
:class:`Client`, ``client.chat`` and the rest) is generated from it by
``tools/gen_sync_client.py`` (``make sdk``; ``make sdk-check`` and a test fail when it is
stale), which drops ``async``/``await`` and the ``Async`` prefix and swaps grpc.aio for
grpc's blocking API. So write here only what reads right both ways: deadlines as
``time.monotonic()`` arithmetic carried by the calls (no ``asyncio.timeout``), pauses with
``asyncio.sleep``, and docstrings that name no ``Async`` class.

Every call raises a :class:`~taskorch.client.TaskorchClientError` subclass for a gRPC error
and returns plain dataclasses. Streams (``watch_task``, ``chat.watch``, ``chat.stream`` and
``chat.post``, which follows its reply) reconnect by themselves when the connection drops and
resume after the last event they delivered: a caller never sees an event twice or misses one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import grpc

from taskorch.client._base import (
    CHANNEL_OPTIONS,
    DEFAULT_TARGET,
    _backoff,
    _batch_request,
    _create_request,
    _deadline,
    _list_request,
    _metadata,
    _remaining,
    _retryable,
)
from taskorch.client._chat import (
    ChatEvent,
    ChatExchange,
    ChatMessage,
    ChatMessagePage,
    ChatSession,
    ChatSessionPage,
    _create,
    _post,
    _Reply,
)
from taskorch.client._collections import (
    AddedDocuments,
    Collection,
    Document,
    NewDocument,
    SearchResult,
    _add_request,
    _added,
    _search_request,
)
from taskorch.client._collections import (
    _create_request as _collection_request,
)
from taskorch.client._errors import DeadlineExceededError, from_rpc_error
from taskorch.client._inference import (
    GenerationEvent,
    InferenceResult,
    ModelInfo,
    _generate_request,
    _infer_request,
)
from taskorch.client._inference import _list_request as _models_request
from taskorch.client._models import Task, TaskArtifact, TaskEvent, TaskPage
from taskorch.client._schedules import Schedule
from taskorch.client._schedules import _create as _schedule_request
from taskorch.v1 import chat_service_pb2 as chat_pb
from taskorch.v1 import chat_service_pb2_grpc as chat_grpc
from taskorch.v1 import collection_service_pb2 as collection_pb
from taskorch.v1 import collection_service_pb2_grpc as collection_grpc
from taskorch.v1 import model_service_pb2 as model_pb
from taskorch.v1 import model_service_pb2_grpc as model_grpc
from taskorch.v1 import schedule_service_pb2 as schedule_pb
from taskorch.v1 import schedule_service_pb2_grpc as schedule_grpc
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc


class AsyncClient:
    """A client of a taskorch server (asyncio).

    It speaks gRPC to the server, or to Envoy's port with gRPC passthrough. Use it as a
    context manager, or call :meth:`close` when done.

    Args:
        target: ``HOST:PORT`` of the server.
        api_key: Sent as ``x-api-key`` metadata.
        bearer_token: An OAuth/JWT access token, sent as ``authorization: Bearer …``.
        timeout: Per-call deadline in seconds (not applied to streams).
        credentials: TLS channel credentials; plaintext when None.

    Attributes:
        chat: Chat sessions, messages and streamed replies.
        models: The server's models and synchronous inference.
        schedules: Recurring tasks, by cron expression or interval.
        collections: Collections of documents and search over them (retrieval).
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
        self.chat = AsyncChat(self)
        self.models = AsyncModels(self)
        self.schedules = AsyncSchedules(self)
        self.collections = AsyncCollections(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls still running fail."""
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        """One unary call with the client's deadline and metadata, errors made typed."""
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
        """Queues a task; it is durable when this returns.

        Args:
            text: The text of a text task (the built-in analysis when nothing else is named).
            task_type: What to run, e.g. ``"echo"`` or an ML task such as ``"summarization"``.
            model_name: The model to run it on ("" = the server's default for the type).
            input_data: The task's structured input.
            parameters: Parameters of the task type or template.
            template: A template to plan the task from, by name.
            priority: Higher runs first.
            depends_on: Task ids that must complete before this one starts.
            request_id: Makes a retried create create nothing twice.
            max_attempts: Attempts before the task fails (0 = the server's default).
            timeout_seconds: Bound on each attempt (0 = none).
            run_at: When to run it: an aware datetime or RFC 3339 text.
            run_after_seconds: Run it this many seconds from now.
            concurrency_key: Tasks sharing a key run at most ``concurrency_limit`` at once.
            concurrency_limit: The key's limit (the last one given for a key holds).

        Returns:
            The task as stored (PENDING).

        Raises:
            InvalidArgumentError: A field is wrong; ``field_violations`` says which.
            ValueError: ``run_at`` has no time zone.
        """
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

        Args:
            requests: Each with the keyword arguments of :meth:`create_task`, e.g.
                ``[{"text": "..."}, {"task_type": "echo", "priority": 8}]``.

        Returns:
            The tasks, in the order of ``requests``.

        Raises:
            TypeError: A request has a field :meth:`create_task` does not take.
            InvalidArgumentError: A request is wrong; the field names it (``requests[3].text``).
        """
        response = await self._call(self._tasks.BatchCreateTasks, _batch_request(requests))
        return [Task.from_proto(t) for t in response.tasks]

    async def get_task(self, task_id: str) -> Task:
        """One task, with its result or error once it has ended.

        Args:
            task_id: The task's id.

        Returns:
            The task.

        Raises:
            NotFoundError: No such task (reason TASK_NOT_FOUND).
        """
        response = await self._call(self._tasks.GetTask, pb.GetTaskRequest(task_id=task_id))
        return Task.from_proto(response)

    async def get_task_artifact(self, task_id: str, name: str) -> TaskArtifact:
        """One binary result of a task, by the name its result lists.

        Args:
            task_id: The task's id.
            name: A name from the task's ``result["artifacts"]``.

        Returns:
            The artifact's bytes and content type.

        Raises:
            NotFoundError: No such task or artifact.
        """
        request = pb.GetTaskArtifactRequest(task_id=task_id, name=name)
        body = await self._call(self._tasks.GetTaskArtifact, request)
        return TaskArtifact(name, body.content_type, bytes(body.data))

    async def list_tasks(self, **filters: Any) -> TaskPage:
        """One page of tasks.

        Args:
            **filters: status, task_type, model_name, template, limit, offset, page, sort_by,
                sort_order, page_token.

        Returns:
            The page, with ``next_page_token`` when more follow.
        """
        response = await self._call(self._tasks.ListTasks, _list_request(**filters))
        return TaskPage.from_proto(response)

    async def iter_tasks(self, **filters: Any) -> AsyncIterator[Task]:
        """Every matching task, following page tokens.

        Args:
            **filters: Those of :meth:`list_tasks` (but ``page_token``).

        Yields:
            Each task, page after page.
        """
        token = ""
        while True:
            page = await self.list_tasks(**filters, page_token=token)
            for task in page.tasks:
                yield task
            token = page.next_page_token
            if not token:
                return

    async def cancel_task(self, task_id: str, reason: str = "") -> Task:
        """Cancels a task that has not ended; workers running it are told to stop.

        Args:
            task_id: The task's id.
            reason: Stored with the cancellation.

        Returns:
            The task, CANCELLED.

        Raises:
            NotFoundError: No such task.
            ConflictError: The task has already ended (reason TASK_NOT_CANCELLABLE).
        """
        request = pb.CancelTaskRequest(task_id=task_id, reason=reason)
        return Task.from_proto(await self._call(self._tasks.CancelTask, request))

    async def watch_task(
        self, task_id: str, *, after_sequence: int = 0
    ) -> AsyncIterator[TaskEvent]:
        """The task's snapshot, then every change, ending after the final one.

        Reconnects and resumes when the connection drops.

        Args:
            task_id: The task's id.
            after_sequence: Replay the events after this one instead of a snapshot.

        Yields:
            Each event, in sequence order.

        Raises:
            NotFoundError: No such task.
        """
        async for event in self._watch(task_id, after_sequence, None):
            yield event

    async def _watch(
        self, task_id: str, after_sequence: int, deadline: float | None
    ) -> AsyncIterator[TaskEvent]:
        """The watch of ``watch_task``, ended by the server at ``deadline``.

        The watch, cut by the server at ``deadline`` (``time.monotonic()``) if one is given:
        DeadlineExceededError, even while no event comes.
        """
        last = after_sequence
        retries = 0
        while True:
            request = pb.WatchTaskRequest(task_id=task_id, after_sequence=last)
            call = self._tasks.WatchTask(
                request, metadata=self._metadata, timeout=_remaining(deadline)
            )
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
                if not _retryable(error, retries):
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            await asyncio.sleep(_backoff(retries, deadline))

    async def wait_for_task(self, task_id: str, *, timeout: float | None = None) -> Task:
        """Blocks until the task ends.

        Args:
            task_id: The task's id.
            timeout: Seconds to wait at most (None = for ever), even while nothing happens.

        Returns:
            The task with its result or error.

        Raises:
            TimeoutError: The task had not ended at the deadline.
            NotFoundError: No such task.
        """
        try:
            async for event in self._watch(task_id, 0, _deadline(timeout)):
                if event.is_terminal and event.task is not None:
                    return event.task
        except DeadlineExceededError:
            raise TimeoutError(f"task {task_id} did not finish within {timeout} s") from None
        return await self.get_task(task_id)

    def watch_tasks(
        self,
        task_ids: Sequence[str] = (),
        *,
        terminal_only: bool = False,
        timeout: float | None = None,
    ) -> AsyncTaskWatch:
        """One stream of your tasks' changes, used as a context manager.

        Entering it returns once the server follows your tasks, so what you create after
        that is seen; ``watch.events()`` then yields the events.

        Args:
            task_ids: Only these tasks (at most 1000), each first as a SNAPSHOT; the stream
                ends once all of them have ended. Empty: every task of yours, without end.
            terminal_only: Only the events that end a task, each with its result or error.
            timeout: Seconds the stream may stay open at most (None = for ever).

        Returns:
            The watch, to enter.
        """
        request = pb.WatchTasksRequest(task_ids=list(task_ids), terminal_only=terminal_only)
        call = self._tasks.WatchTasks(request, metadata=self._metadata, timeout=timeout)
        return AsyncTaskWatch(call)

    async def wait_for_tasks(
        self, task_ids: Sequence[str], *, timeout: float | None = None
    ) -> list[Task]:
        """Blocks until every listed task ends, over one stream.

        Args:
            task_ids: The tasks' ids (at most 1000).
            timeout: Seconds to wait at most (None = for ever).

        Returns:
            The tasks with their results or errors, in the order given.

        Raises:
            TimeoutError: Some had not ended at the deadline.
            NotFoundError: A listed task does not exist.
        """
        ended: dict[str, Task] = {}
        try:
            async with self.watch_tasks(task_ids, terminal_only=True, timeout=timeout) as watch:
                async for event in watch.events():
                    if event.task is not None:
                        ended[event.task_id] = event.task
        except DeadlineExceededError:
            left = len(set(task_ids) - set(ended))
            raise TimeoutError(f"{left} of the tasks did not finish within {timeout} s") from None
        order = {task_id: n for n, task_id in enumerate(task_ids)}
        return sorted(ended.values(), key=lambda task: order.get(task.task_id, len(order)))


class AsyncTaskWatch:
    """An open ``WatchTasks`` stream (see :meth:`AsyncClient.watch_tasks`)."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def __aenter__(self) -> AsyncTaskWatch:
        try:
            await self._call.initial_metadata()  # the server follows the tasks from here on
        except grpc.aio.AioRpcError as exc:
            self._call.cancel()
            raise from_rpc_error(exc) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._call.cancel()

    async def events(self) -> AsyncIterator[TaskEvent]:
        """The events as they come, in order per task.

        Yields:
            Each event.

        Raises:
            ConflictError: The stream fell too far behind (reason WATCH_LAGGED).
        """
        try:
            async for message in self._call:
                yield TaskEvent.from_proto(message)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None


class AsyncChat:
    """``client.chat``: sessions, messages and streamed replies (asyncio)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = chat_grpc.ChatServiceStub(client._channel)

    async def create_session(
        self,
        model_name: str = "",
        *,
        system_prompt: str = "",
        title: str = "",
        parameters: Mapping[str, Any] | None = None,
        collections: Sequence[str] = (),
    ) -> ChatSession:
        """Opens a conversation with a model.

        Args:
            model_name: A text-generation model ("" = the server's default one).
            system_prompt: The first message of every prompt.
            title: A name for people.
            parameters: Generation parameters for every reply (``max_new_tokens``, ...).
            collections: Each message's best chunks of these go into the prompt, and the
                reply lists them as ``sources``.

        Returns:
            The new session.
        """
        request = _create(model_name, system_prompt, title, parameters, collections)
        return ChatSession.from_proto(await self._client._call(self._stub.CreateSession, request))

    async def list_sessions(
        self,
        *,
        model_name: str = "",
        limit: int = 0,
        offset: int = 0,
        page: int = 0,
        page_token: str = "",
    ) -> ChatSessionPage:
        """One page of the caller's sessions.

        Args:
            model_name: Only sessions with this model.
            limit: Page size (0 = the server's default).
            offset: Sessions to skip.
            page: A page number instead of ``offset``.
            page_token: The previous page's ``next_page_token``.

        Returns:
            The page.
        """
        request = chat_pb.ListSessionsRequest(
            model_name=model_name, limit=limit, offset=offset, page=page, page_token=page_token
        )
        answer = await self._client._call(self._stub.ListSessions, request)
        return ChatSessionPage.from_proto(answer)

    async def get_session(
        self, session_id: str, *, limit: int = 0, offset: int = 0, page_token: str = ""
    ) -> ChatSession:
        """The session with a page of its messages (oldest first).

        Args:
            session_id: The session's id.
            limit: Messages per page (0 = the server's default).
            offset: Messages to skip.
            page_token: The previous page's ``next_page_token``.

        Returns:
            The session, ``messages`` set.

        Raises:
            NotFoundError: No such session.
        """
        request = chat_pb.GetSessionRequest(
            session_id=session_id, limit=limit, offset=offset, page_token=page_token
        )
        return ChatSession.from_proto(await self._client._call(self._stub.GetSession, request))

    async def delete_session(self, session_id: str) -> ChatSession:
        """Deletes a session and its messages; replies being generated stop.

        Args:
            session_id: The session's id.

        Returns:
            The session as it was.

        Raises:
            NotFoundError: No such session.
        """
        request = chat_pb.DeleteSessionRequest(session_id=session_id)
        return ChatSession.from_proto(await self._client._call(self._stub.DeleteSession, request))

    async def post(
        self,
        session_id: str,
        content: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        priority: int = 0,
        request_id: str = "",
        wait: bool = True,
        timeout: float | None = None,
    ) -> ChatExchange:
        """Posts a message.

        With ``wait`` (the default) it returns when the reply is finished, following it over
        a stream, so no call deadline cuts a long reply short; otherwise as soon as the
        message is stored.

        Args:
            session_id: The session's id.
            content: The user's message.
            parameters: Generation parameters for this reply.
            priority: The reply task's priority.
            request_id: Makes a retried post post nothing twice.
            wait: Wait for the reply to finish.
            timeout: Seconds to wait for the reply at most (None = for ever).

        Returns:
            The message and its reply (queued, or finished when waited for).

        Raises:
            TimeoutError: The reply had not finished at the deadline.
            NotFoundError: No such session.
        """
        if not wait:
            request = _post(session_id, content, parameters, priority, request_id)
            response = await self._client._call(self._stub.PostMessage, request)
            return ChatExchange(
                ChatMessage.from_proto(response.message), ChatMessage.from_proto(response.reply)
            )
        reply = _Reply()
        events = self._follow(
            session_id, content, parameters, priority, request_id, reply, _deadline(timeout)
        )
        try:
            async for _ in events:
                pass
        except DeadlineExceededError:
            raise TimeoutError(f"the reply did not finish within {timeout} s") from None
        return reply.exchange()

    async def stream(
        self,
        session_id: str,
        content: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        priority: int = 0,
        request_id: str = "",
    ) -> AsyncGenerator[ChatEvent, None]:
        """Posts a message and yields its events as they happen.

        Closing the generator early stops listening; the reply goes on (cancel its task to
        stop it).

        Args:
            session_id: The session's id.
            content: The user's message.
            parameters: Generation parameters for this reply.
            priority: The reply task's priority.
            request_id: Makes a retried post post nothing twice.

        Yields:
            MESSAGE_ADDED (the message, then the reply), REPLY_STARTED, REPLY_DELTA (the
            tokens), ending with REPLY_FINISHED.
        """
        events = self._follow(session_id, content, parameters, priority, request_id, _Reply(), None)
        async for event in events:
            yield event

    async def _follow(
        self,
        session_id: str,
        content: str,
        parameters: Mapping[str, Any] | None,
        priority: int,
        request_id: str,
        reply: _Reply,
        deadline: float | None,
    ) -> AsyncIterator[ChatEvent]:
        """Posts, then yields the events of the message and its reply.

        Posts over PostMessageStream and yields the events of the message and its reply, resuming
        with WatchSession if the stream breaks once the message is stored.
        """
        metadata = self._client._metadata
        request = _post(session_id, content, parameters, priority, request_id)
        call = self._stub.PostMessageStream(
            request, metadata=metadata, timeout=_remaining(deadline)
        )
        retries = 0
        while True:
            try:
                async for message in call:
                    event = ChatEvent.from_proto(message)
                    retries = 0
                    if reply.ours(event):
                        yield event
                    if reply.finished:
                        return
                return
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                # Before the message is known to be stored, a retry could post it twice.
                if reply.reply is None or not _retryable(error, retries):
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            await asyncio.sleep(_backoff(retries, deadline))
            watch = chat_pb.WatchSessionRequest(session_id=session_id, after_sequence=reply.last)
            call = self._stub.WatchSession(watch, metadata=metadata, timeout=_remaining(deadline))

    async def list_messages(
        self,
        session_id: str,
        *,
        limit: int = 0,
        offset: int = 0,
        page: int = 0,
        page_token: str = "",
    ) -> ChatMessagePage:
        """One page of a session's messages, oldest first.

        Args:
            session_id: The session's id.
            limit: Page size (0 = the server's default).
            offset: Messages to skip.
            page: A page number instead of ``offset``.
            page_token: The previous page's ``next_page_token``.

        Returns:
            The page.

        Raises:
            NotFoundError: No such session.
        """
        request = chat_pb.ListMessagesRequest(
            session_id=session_id, limit=limit, offset=offset, page=page, page_token=page_token
        )
        answer = await self._client._call(self._stub.ListMessages, request)
        return ChatMessagePage.from_proto(answer)

    async def get_message(self, session_id: str, message_id: str) -> ChatMessage:
        """One message of a session.

        Args:
            session_id: The session's id.
            message_id: The message's id.

        Returns:
            The message.

        Raises:
            NotFoundError: No such session or message.
        """
        request = chat_pb.GetMessageRequest(session_id=session_id, message_id=message_id)
        return ChatMessage.from_proto(await self._client._call(self._stub.GetMessage, request))

    async def delete_message(self, session_id: str, message_id: str) -> ChatMessage:
        """Deletes a message; a reply being generated (or its question) stops generating.

        Args:
            session_id: The session's id.
            message_id: The message's id.

        Returns:
            The message as it was.

        Raises:
            NotFoundError: No such session or message.
        """
        request = chat_pb.DeleteMessageRequest(session_id=session_id, message_id=message_id)
        return ChatMessage.from_proto(await self._client._call(self._stub.DeleteMessage, request))

    async def watch(
        self, session_id: str, *, after_sequence: int | None = None
    ) -> AsyncIterator[ChatEvent]:
        """The session's events as they happen, until it is deleted.

        Reconnects and resumes when the connection drops.

        Args:
            session_id: The session's id.
            after_sequence: Replay the events after this one (0: all of them) instead of
                starting with a SNAPSHOT.

        Yields:
            A SNAPSHOT (or the replayed events), then every event.

        Raises:
            NotFoundError: No such session.
        """
        last = after_sequence
        retries = 0
        while True:
            request = chat_pb.WatchSessionRequest(session_id=session_id, after_sequence=last)
            call = self._stub.WatchSession(request, metadata=self._client._metadata)
            try:
                async for message in call:
                    event = ChatEvent.from_proto(message)
                    retries = 0
                    last = max(last or 0, event.sequence)
                    yield event
                    if event.type == "SESSION_DELETED":
                        return
                return
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if not _retryable(error, retries):
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            await asyncio.sleep(_backoff(retries))


class AsyncModels:
    """``client.models``: the server's models and synchronous calls to them (asyncio).

    For work that should be queued, retried, prioritised and watched, create a task with
    ``task_type`` and ``model_name`` instead.
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = model_grpc.ModelServiceStub(client._channel)

    async def get(self, name: str) -> ModelInfo:
        """One model of the server's repository.

        Args:
            name: The model's name.

        Returns:
            The model, with its state.

        Raises:
            NotFoundError: No such model (reason MODEL_NOT_FOUND).
        """
        request = model_pb.GetModelRequest(name=name)
        return ModelInfo.from_proto(await self._client._call(self._stub.GetModel, request))

    async def infer(
        self,
        model_name: str,
        inputs: Any = None,
        *,
        input_data: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        task_type: str = "",
    ) -> InferenceResult:
        """Runs one inference now.

        Args:
            model_name: The model's name.
            inputs: The Inference API's top-level field (a text, or a list of them).
            input_data: Other input shapes, e.g. ``{"question": ..., "context": ...}``.
            parameters: The task type's parameters.
            task_type: The task to run (default: the one the model was exported for).

        Returns:
            The result, in the Hugging Face Inference API's shape of the task.

        Raises:
            NotFoundError: No such model.
            InvalidArgumentError: The input does not fit the task.
        """
        request = _infer_request(model_name, inputs, input_data, parameters, task_type)
        return InferenceResult.from_proto(await self._client._call(self._stub.Infer, request))

    async def generate(
        self,
        model_name: str,
        prompt: str | None = None,
        *,
        input_data: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[GenerationEvent]:
        """Generates text, yielding it as it is produced (close the iterator to stop).

        Args:
            model_name: A text-generation model.
            prompt: The prompt.
            input_data: Other input fields (``messages``, ...).
            parameters: Generation parameters (``max_new_tokens``, ...).

        Yields:
            Pieces of text; the last one has ``done`` and the result.

        Raises:
            NotFoundError: No such model.
        """
        request = _generate_request(model_name, prompt, input_data, parameters)
        call = self._stub.Generate(request, metadata=self._client._metadata)
        try:
            async for event in call:
                yield GenerationEvent.from_proto(event)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    # Last: below it, `list` in annotations would name this method.
    async def list(self, task_type: str = "") -> list[ModelInfo]:
        """Every model of the server's repository.

        Args:
            task_type: Only the models that run this task type.

        Returns:
            The models.
        """
        answer = await self._client._call(self._stub.ListModels, _models_request(task_type))
        return [ModelInfo.from_proto(m) for m in answer.models]


class AsyncSchedules:
    """``client.schedules``: recurring tasks of the caller's tenant (asyncio)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = schedule_grpc.ScheduleServiceStub(client._channel)

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
        """Creates a schedule firing on ``cron`` or every ``interval_seconds``.

        Args:
            name: The schedule's name, unique in the tenant.
            task: The keyword arguments of ``create_task`` for the task of each firing.
            cron: A 5-field cron expression, in ``timezone``.
            interval_seconds: Seconds between firings instead (at least 1).
            timezone: An IANA time zone for ``cron`` (default UTC).
            catch_up: "one" (default: missed slots run once) or "none".
            paused: Create it paused.

        Returns:
            The schedule, with its next firing.

        Raises:
            InvalidArgumentError: A field is wrong.
            ConflictError: A schedule has this name.
        """
        request = _schedule_request(name, cron, interval_seconds, timezone, task, catch_up, paused)
        return Schedule.from_proto(await self._client._call(self._stub.CreateSchedule, request))

    async def get(self, name: str) -> Schedule:
        """One schedule.

        Args:
            name: The schedule's name.

        Returns:
            The schedule.

        Raises:
            NotFoundError: No such schedule.
        """
        request = schedule_pb.GetScheduleRequest(name=name)
        return Schedule.from_proto(await self._client._call(self._stub.GetSchedule, request))

    async def delete(self, name: str) -> None:
        """Deletes a schedule; tasks it created are kept.

        Args:
            name: The schedule's name.

        Raises:
            NotFoundError: No such schedule.
        """
        request = schedule_pb.DeleteScheduleRequest(name=name)
        await self._client._call(self._stub.DeleteSchedule, request)

    async def pause(self, name: str) -> Schedule:
        """Stops a schedule firing until it is resumed.

        Args:
            name: The schedule's name.

        Returns:
            The schedule, paused.

        Raises:
            NotFoundError: No such schedule.
        """
        request = schedule_pb.PauseScheduleRequest(name=name)
        return Schedule.from_proto(await self._client._call(self._stub.PauseSchedule, request))

    async def resume(self, name: str) -> Schedule:
        """Fires again from the next slot after now (slots passed while paused are not run).

        Args:
            name: The schedule's name.

        Returns:
            The schedule, with its next firing.

        Raises:
            NotFoundError: No such schedule.
        """
        request = schedule_pb.ResumeScheduleRequest(name=name)
        return Schedule.from_proto(await self._client._call(self._stub.ResumeSchedule, request))

    async def trigger(self, name: str) -> tuple[Schedule, Task]:
        """Creates the schedule's task now.

        Args:
            name: The schedule's name.

        Returns:
            The schedule and the task.

        Raises:
            NotFoundError: No such schedule.
        """
        request = schedule_pb.TriggerScheduleRequest(name=name)
        response = await self._client._call(self._stub.TriggerSchedule, request)
        return Schedule.from_proto(response.schedule), Task.from_proto(response.task)

    # Last: below it, `list` in annotations would name this method.
    async def list(self) -> list[Schedule]:
        """Every schedule of the caller's tenant.

        Returns:
            The schedules.
        """
        request = schedule_pb.ListSchedulesRequest()
        response = await self._client._call(self._stub.ListSchedules, request)
        return [Schedule.from_proto(s) for s in response.schedules]


class AsyncCollections:
    """``client.collections``: collections of documents and search over them (asyncio).

    Documents are given as :class:`NewDocument`, as plain mappings with ``text`` and optional
    ``id`` and ``metadata`` (the REST body's shape), or as bare text.
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = collection_grpc.CollectionServiceStub(client._channel)

    async def create(
        self,
        name: str,
        model_name: str = "",
        *,
        chunk_size: int = 0,
        chunk_overlap: int | None = None,
    ) -> Collection:
        """Creates a collection on an embedding model.

        Args:
            name: The collection's name.
            model_name: An embedding model ("" = the server's default one).
            chunk_size: Characters per chunk (0 = the server's default).
            chunk_overlap: Characters shared by neighbouring chunks (None = the default).

        Returns:
            The collection.

        Raises:
            ConflictError: A collection has this name.
        """
        request = _collection_request(name, model_name, chunk_size, chunk_overlap)
        answer = await self._client._call(self._stub.CreateCollection, request)
        return Collection.from_proto(answer)

    async def get(self, name: str) -> Collection:
        """One collection.

        Args:
            name: The collection's name.

        Returns:
            The collection, with its counts.

        Raises:
            NotFoundError: No such collection (reason COLLECTION_NOT_FOUND).
        """
        request = collection_pb.GetCollectionRequest(name=name)
        return Collection.from_proto(await self._client._call(self._stub.GetCollection, request))

    async def delete(self, name: str) -> Collection:
        """Deletes a collection and its documents.

        Args:
            name: The collection's name.

        Returns:
            The collection as it was.

        Raises:
            NotFoundError: No such collection.
        """
        request = collection_pb.DeleteCollectionRequest(name=name)
        answer = await self._client._call(self._stub.DeleteCollection, request)
        return Collection.from_proto(answer)

    async def add(
        self, name: str, documents: Iterable[NewDocument | Mapping[str, Any] | str]
    ) -> AddedDocuments:
        """Adds documents (an existing id is replaced).

        They are durable and searchable when this answers, or, for a large add, when its
        task (``task_id``) completes.

        Args:
            name: The collection's name.
            documents: The documents.

        Returns:
            The documents' ids in the order given, and the chunks stored.

        Raises:
            NotFoundError: No such collection.
        """
        request = _add_request(name, documents)
        return _added(await self._client._call(self._stub.AddDocuments, request))

    async def get_document(self, name: str, document_id: str) -> Document:
        """One document of a collection.

        Args:
            name: The collection's name.
            document_id: The document's id.

        Returns:
            The document.

        Raises:
            NotFoundError: No such collection or document.
        """
        request = collection_pb.GetDocumentRequest(name=name, document_id=document_id)
        return Document.from_proto(await self._client._call(self._stub.GetDocument, request))

    async def delete_document(self, name: str, document_id: str) -> Document:
        """Deletes a document and its chunks.

        Args:
            name: The collection's name.
            document_id: The document's id.

        Returns:
            The document as it was.

        Raises:
            NotFoundError: No such collection or document.
        """
        request = collection_pb.DeleteDocumentRequest(name=name, document_id=document_id)
        return Document.from_proto(await self._client._call(self._stub.DeleteDocument, request))

    async def search(
        self,
        name: str,
        query: str = "",
        *,
        vector: Sequence[float] | None = None,
        top_k: int = 0,
        filter: Mapping[str, Any] | None = None,
        mode: str = "",
    ) -> list[SearchResult]:
        """The best chunks for ``query`` (or ``vector``), best first.

        Args:
            name: The collection's name.
            query: The text to search for.
            vector: A vector to search with instead.
            top_k: How many chunks (0 = the server's default).
            filter: Metadata values the documents must have, matched exactly.
            mode: "vector" (default), "keyword" or "hybrid".

        Returns:
            The matching chunks.

        Raises:
            NotFoundError: No such collection.
        """
        request = _search_request(name, query, vector, top_k, filter, mode)
        answer = await self._client._call(self._stub.Search, request)
        return [SearchResult.from_proto(r) for r in answer.results]

    # Last: below it, `list` in annotations would name this method.
    async def list(self) -> list[Collection]:
        """Every collection of the caller's tenant.

        Returns:
            The collections.
        """
        request = collection_pb.ListCollectionsRequest()
        answer = await self._client._call(self._stub.ListCollections, request)
        return [Collection.from_proto(c) for c in answer.collections]
