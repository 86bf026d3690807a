"""Chat in the SDK: ``client.chat`` (:class:`Chat`, blocking) and ``async_client.chat``
(:class:`AsyncChat`), with the value types they return.

Streams (``stream``, ``watch``, and ``post`` which follows its reply to the end) reconnect by
themselves when the connection drops, and resume after the last event they delivered: a caller
never sees an event twice or misses one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc

from taskorch.client._errors import TaskorchClientError, UnavailableError, from_rpc_error
from taskorch.client._models import _status, _struct, _time
from taskorch.v1 import chat_service_pb2 as pb
from taskorch.v1 import chat_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from taskorch.client._client import AsyncClient, Client

STREAM_RETRIES = 8
FINISHED = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatSource:
    """A chunk of a collection that was put into a reply's prompt (``score``: its cosine
    similarity to the message)."""

    collection: str
    document_id: str
    text: str
    score: float


@dataclass(frozen=True)
class ChatMessage:
    """A message of a session. ``role`` is USER, ASSISTANT or SYSTEM; ``status`` a word such
    as ``"RUNNING"`` (a reply being generated) or ``"COMPLETED"``."""

    message_id: str
    session_id: str
    role: str
    content: str
    status: str
    position: int = 0
    task_id: str = ""
    reply_to: str = ""
    tokens_generated: int = 0
    prompt_tokens: int = 0
    inference_time: float = 0.0
    time_to_first_token: float = 0.0
    finish_reason: str = ""
    messages_dropped: int = 0
    error: str = ""
    error_code: str = ""
    request_id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    #: Replies in a session with collections: the chunks the model was given, best first.
    sources: tuple[ChatSource, ...] = ()

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_proto(cls, m: pb.Message) -> ChatMessage:
        return cls(
            message_id=m.message_id,
            session_id=m.session_id,
            role=pb.Message.Role.Name(m.role),
            content=m.content,
            status=_status(m.status),
            position=m.position,
            task_id=m.task_id,
            reply_to=m.reply_to,
            tokens_generated=m.tokens_generated,
            prompt_tokens=m.prompt_tokens,
            inference_time=m.inference_time,
            time_to_first_token=m.time_to_first_token,
            finish_reason=m.finish_reason,
            messages_dropped=m.messages_dropped,
            error=m.error,
            error_code=m.error_code,
            request_id=m.request_id,
            created_at=_time(m, "created_at"),
            updated_at=_time(m, "updated_at"),
            completed_at=_time(m, "completed_at"),
            sources=tuple(
                ChatSource(s.collection, s.document_id, s.text, s.score) for s in m.sources
            ),
        )


@dataclass(frozen=True)
class ChatSession:
    """A conversation with one model. ``messages`` is set by ``get_session`` (a page, oldest
    first) and on a watch's SNAPSHOT (the replies still being generated)."""

    session_id: str
    model_name: str
    system_prompt: str = ""
    title: str = ""
    parameters: dict[str, Any] | None = None
    message_count: int = 0
    sequence: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    next_page_token: str = ""
    #: Collections each user message searches (retrieval-augmented replies).
    collections: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, m: pb.Session) -> ChatSession:
        return cls(
            session_id=m.session_id,
            model_name=m.model_name,
            system_prompt=m.system_prompt,
            title=m.title,
            parameters=_struct(m, "parameters"),
            message_count=m.message_count,
            sequence=m.sequence,
            created_at=_time(m, "created_at"),
            updated_at=_time(m, "updated_at"),
            messages=[ChatMessage.from_proto(x) for x in m.messages],
            next_page_token=m.next_page_token,
            collections=tuple(m.collections),
        )


@dataclass(frozen=True)
class ChatEvent:
    """One change of a session: ``type`` is SNAPSHOT, MESSAGE_ADDED, REPLY_STARTED (the reply's
    text starts (over) empty), REPLY_DELTA (``delta``), REPLY_FINISHED (``message`` is final),
    MESSAGE_DELETED or SESSION_DELETED."""

    session_id: str
    sequence: int
    type: str
    message_id: str
    status: str
    delta: str
    message: ChatMessage | None
    session: ChatSession | None
    created_at: datetime | None

    @classmethod
    def from_proto(cls, m: pb.ChatEvent) -> ChatEvent:
        return cls(
            session_id=m.session_id,
            sequence=m.sequence,
            type=pb.ChatEvent.Type.Name(m.type),
            message_id=m.message_id,
            status=_status(m.status),
            delta=m.delta,
            message=ChatMessage.from_proto(m.message) if m.HasField("message") else None,
            session=ChatSession.from_proto(m.session) if m.HasField("session") else None,
            created_at=_time(m, "created_at"),
        )


@dataclass(frozen=True)
class ChatExchange:
    """A posted message and its reply (queued, or finished when the post waited)."""

    message: ChatMessage
    reply: ChatMessage


@dataclass(frozen=True)
class ChatSessionPage:
    sessions: list[ChatSession]
    total: int
    limit: int
    offset: int
    page: int
    pages: int
    next_page_token: str = ""

    @classmethod
    def from_proto(cls, m: pb.ListSessionsResponse) -> ChatSessionPage:
        return cls(
            sessions=[ChatSession.from_proto(s) for s in m.sessions],
            total=m.total,
            limit=m.limit,
            offset=m.offset,
            page=m.pagination.page,
            pages=m.pagination.pages,
            next_page_token=m.next_page_token,
        )


@dataclass(frozen=True)
class ChatMessagePage:
    messages: list[ChatMessage]
    total: int
    limit: int
    offset: int
    page: int
    pages: int
    next_page_token: str = ""

    @classmethod
    def from_proto(cls, m: pb.ListMessagesResponse) -> ChatMessagePage:
        return cls(
            messages=[ChatMessage.from_proto(x) for x in m.messages],
            total=m.total,
            limit=m.limit,
            offset=m.offset,
            page=m.pagination.page,
            pages=m.pagination.pages,
            next_page_token=m.next_page_token,
        )


# -- requests ----------------------------------------------------------------------------------


def _create(
    model_name: str,
    system_prompt: str,
    title: str,
    parameters: Mapping[str, Any] | None,
    collections: Sequence[str],
) -> pb.CreateSessionRequest:
    request = pb.CreateSessionRequest(
        model_name=model_name,
        system_prompt=system_prompt,
        title=title,
        collections=list(collections),
    )
    if parameters is not None:
        request.parameters.update(parameters)
    return request


def _post(
    session_id: str,
    content: str,
    parameters: Mapping[str, Any] | None,
    priority: int,
    request_id: str,
    wait: bool = False,
) -> pb.PostMessageRequest:
    request = pb.PostMessageRequest(
        session_id=session_id,
        content=content,
        priority=priority,
        request_id=request_id,
        wait=wait,
    )
    if parameters is not None:
        request.parameters.update(parameters)
    return request


class _Reply:
    """Follows one posted message through a stream of session events, so that a broken
    PostMessageStream can be resumed with WatchSession after the last event seen."""

    def __init__(self) -> None:
        self.message: ChatMessage | None = None
        self.reply: ChatMessage | None = None
        self.last = 0
        self.finished = False

    def ours(self, event: ChatEvent) -> bool:
        """Tracks ``event``; True when it concerns the posted message or its reply."""
        self.last = max(self.last, event.sequence)
        if event.type == "SESSION_DELETED":
            self.finished = True
            return True
        if event.type == "MESSAGE_ADDED" and event.message is not None:
            if self.message is None and event.message.role == "USER":
                self.message = event.message
                return True
            if (
                self.reply is None
                and self.message is not None
                and event.message.reply_to == self.message.message_id
            ):
                self.reply = event.message
                return True
        if self.reply is None or event.message_id not in (
            self.reply.message_id,
            self.message.message_id if self.message else "",
        ):
            return False
        if event.message_id == self.reply.message_id:
            if event.message is not None:
                self.reply = event.message
            if event.type in ("REPLY_FINISHED", "MESSAGE_DELETED"):
                self.finished = True
        return True

    def exchange(self) -> ChatExchange:
        if self.message is None or self.reply is None:
            raise TaskorchClientError("the stream ended before the message was stored", code="")
        return ChatExchange(self.message, self.reply)


def _retryable(error: TaskorchClientError, retries: int) -> bool:
    return isinstance(error, UnavailableError) and retries < STREAM_RETRIES


def _backoff(retries: int) -> float:
    return float(min(0.2 * 2**retries, 5.0))


# -- the blocking namespace --------------------------------------------------------------------


class Chat:
    """``client.chat``: sessions, messages and streamed replies (blocking)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = pb_grpc.ChatServiceStub(client._channel)

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(
                request, timeout=timeout or self._client.timeout, metadata=self._client._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def create_session(
        self,
        model_name: str = "",
        *,
        system_prompt: str = "",
        title: str = "",
        parameters: Mapping[str, Any] | None = None,
        collections: Sequence[str] = (),
    ) -> ChatSession:
        """Opens a conversation ("" = the default text-generation model). With
        ``collections``, each message's best chunks of them go into the prompt and the reply
        lists them as ``sources``."""
        request = _create(model_name, system_prompt, title, parameters, collections)
        return ChatSession.from_proto(self._call(self._stub.CreateSession, request))

    def list_sessions(
        self,
        *,
        model_name: str = "",
        limit: int = 0,
        offset: int = 0,
        page: int = 0,
        page_token: str = "",
    ) -> ChatSessionPage:
        request = pb.ListSessionsRequest(
            model_name=model_name, limit=limit, offset=offset, page=page, page_token=page_token
        )
        return ChatSessionPage.from_proto(self._call(self._stub.ListSessions, request))

    def get_session(
        self, session_id: str, *, limit: int = 0, offset: int = 0, page_token: str = ""
    ) -> ChatSession:
        """The session with a page of its messages (oldest first)."""
        request = pb.GetSessionRequest(
            session_id=session_id, limit=limit, offset=offset, page_token=page_token
        )
        return ChatSession.from_proto(self._call(self._stub.GetSession, request))

    def delete_session(self, session_id: str) -> ChatSession:
        request = pb.DeleteSessionRequest(session_id=session_id)
        return ChatSession.from_proto(self._call(self._stub.DeleteSession, request))

    def post(
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
        """Posts a message. With ``wait`` (the default) it returns when the reply is finished
        (following it over a stream, so no call deadline cuts a long reply short; ``timeout``
        bounds the whole wait); otherwise as soon as the message is stored."""
        if not wait:
            request = _post(session_id, content, parameters, priority, request_id)
            response = self._call(self._stub.PostMessage, request)
            return ChatExchange(
                ChatMessage.from_proto(response.message), ChatMessage.from_proto(response.reply)
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        reply = _Reply()
        for _ in self._follow(session_id, content, parameters, priority, request_id, reply):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the reply did not finish within {timeout} s")
        return reply.exchange()

    def stream(
        self,
        session_id: str,
        content: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        priority: int = 0,
        request_id: str = "",
    ) -> Generator[ChatEvent, None, None]:
        """Posts a message and yields its events: MESSAGE_ADDED (the message, then the reply),
        REPLY_STARTED, REPLY_DELTA (the tokens), ending with REPLY_FINISHED. Closing the
        generator early stops listening; the reply goes on (cancel its task to stop it)."""
        yield from self._follow(session_id, content, parameters, priority, request_id, _Reply())

    def _follow(
        self,
        session_id: str,
        content: str,
        parameters: Mapping[str, Any] | None,
        priority: int,
        request_id: str,
        reply: _Reply,
    ) -> Iterator[ChatEvent]:
        request = _post(session_id, content, parameters, priority, request_id)
        call = self._stub.PostMessageStream(request, metadata=self._client._metadata)
        retries = 0
        while True:
            try:
                for message in call:
                    event = ChatEvent.from_proto(message)
                    retries = 0
                    if reply.ours(event):
                        yield event
                    if reply.finished:
                        return
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                # Before the message is known to be stored, a retry could post it twice.
                if reply.reply is None or not _retryable(error, retries):
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            time.sleep(_backoff(retries))
            watch = pb.WatchSessionRequest(session_id=session_id, after_sequence=reply.last)
            call = self._stub.WatchSession(watch, metadata=self._client._metadata)

    def list_messages(
        self,
        session_id: str,
        *,
        limit: int = 0,
        offset: int = 0,
        page: int = 0,
        page_token: str = "",
    ) -> ChatMessagePage:
        request = pb.ListMessagesRequest(
            session_id=session_id, limit=limit, offset=offset, page=page, page_token=page_token
        )
        return ChatMessagePage.from_proto(self._call(self._stub.ListMessages, request))

    def get_message(self, session_id: str, message_id: str) -> ChatMessage:
        request = pb.GetMessageRequest(session_id=session_id, message_id=message_id)
        return ChatMessage.from_proto(self._call(self._stub.GetMessage, request))

    def delete_message(self, session_id: str, message_id: str) -> ChatMessage:
        """Deletes a message; a reply being generated (or its question) stops generating."""
        request = pb.DeleteMessageRequest(session_id=session_id, message_id=message_id)
        return ChatMessage.from_proto(self._call(self._stub.DeleteMessage, request))

    def watch(self, session_id: str, *, after_sequence: int | None = None) -> Iterator[ChatEvent]:
        """The session's SNAPSHOT (or, given ``after_sequence``, the events after it: 0 replays
        them all), then every event as it happens, until the session is deleted."""
        last = after_sequence
        retries = 0
        while True:
            request = pb.WatchSessionRequest(session_id=session_id, after_sequence=last)
            call = self._stub.WatchSession(request, metadata=self._client._metadata)
            try:
                for message in call:
                    event = ChatEvent.from_proto(message)
                    retries = 0
                    last = max(last or 0, event.sequence)
                    yield event
                    if event.type == "SESSION_DELETED":
                        return
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if not _retryable(error, retries):
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            time.sleep(_backoff(retries))


# -- the asyncio namespace ---------------------------------------------------------------------


class AsyncChat:
    """``async_client.chat``: the methods of :class:`Chat` for asyncio."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = pb_grpc.ChatServiceStub(client._channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(
                request, timeout=self._client.timeout, metadata=self._client._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def create_session(
        self,
        model_name: str = "",
        *,
        system_prompt: str = "",
        title: str = "",
        parameters: Mapping[str, Any] | None = None,
        collections: Sequence[str] = (),
    ) -> ChatSession:
        request = _create(model_name, system_prompt, title, parameters, collections)
        return ChatSession.from_proto(await self._call(self._stub.CreateSession, request))

    async def list_sessions(
        self,
        *,
        model_name: str = "",
        limit: int = 0,
        offset: int = 0,
        page: int = 0,
        page_token: str = "",
    ) -> ChatSessionPage:
        request = pb.ListSessionsRequest(
            model_name=model_name, limit=limit, offset=offset, page=page, page_token=page_token
        )
        return ChatSessionPage.from_proto(await self._call(self._stub.ListSessions, request))

    async def get_session(
        self, session_id: str, *, limit: int = 0, offset: int = 0, page_token: str = ""
    ) -> ChatSession:
        request = pb.GetSessionRequest(
            session_id=session_id, limit=limit, offset=offset, page_token=page_token
        )
        return ChatSession.from_proto(await self._call(self._stub.GetSession, request))

    async def delete_session(self, session_id: str) -> ChatSession:
        request = pb.DeleteSessionRequest(session_id=session_id)
        return ChatSession.from_proto(await self._call(self._stub.DeleteSession, request))

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
        if not wait:
            request = _post(session_id, content, parameters, priority, request_id)
            response = await self._call(self._stub.PostMessage, request)
            return ChatExchange(
                ChatMessage.from_proto(response.message), ChatMessage.from_proto(response.reply)
            )
        reply = _Reply()

        async def follow() -> None:
            async for _ in self._follow(
                session_id, content, parameters, priority, request_id, reply
            ):
                pass

        async with asyncio.timeout(timeout):
            await follow()
        return reply.exchange()

    async def stream(
        self,
        session_id: str,
        content: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        priority: int = 0,
        request_id: str = "",
    ) -> AsyncIterator[ChatEvent]:
        events = self._follow(session_id, content, parameters, priority, request_id, _Reply())
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
    ) -> AsyncIterator[ChatEvent]:
        request = _post(session_id, content, parameters, priority, request_id)
        call = self._stub.PostMessageStream(request, metadata=self._client._metadata)
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
                if reply.reply is None or not _retryable(error, retries):
                    raise error from None
            finally:
                call.cancel()
            retries += 1
            await asyncio.sleep(_backoff(retries))
            watch = pb.WatchSessionRequest(session_id=session_id, after_sequence=reply.last)
            call = self._stub.WatchSession(watch, metadata=self._client._metadata)

    async def list_messages(
        self,
        session_id: str,
        *,
        limit: int = 0,
        offset: int = 0,
        page: int = 0,
        page_token: str = "",
    ) -> ChatMessagePage:
        request = pb.ListMessagesRequest(
            session_id=session_id, limit=limit, offset=offset, page=page, page_token=page_token
        )
        return ChatMessagePage.from_proto(await self._call(self._stub.ListMessages, request))

    async def get_message(self, session_id: str, message_id: str) -> ChatMessage:
        request = pb.GetMessageRequest(session_id=session_id, message_id=message_id)
        return ChatMessage.from_proto(await self._call(self._stub.GetMessage, request))

    async def delete_message(self, session_id: str, message_id: str) -> ChatMessage:
        request = pb.DeleteMessageRequest(session_id=session_id, message_id=message_id)
        return ChatMessage.from_proto(await self._call(self._stub.DeleteMessage, request))

    async def watch(
        self, session_id: str, *, after_sequence: int | None = None
    ) -> AsyncIterator[ChatEvent]:
        last = after_sequence
        retries = 0
        while True:
            request = pb.WatchSessionRequest(session_id=session_id, after_sequence=last)
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


__all__ = [
    "AsyncChat",
    "Chat",
    "ChatEvent",
    "ChatExchange",
    "ChatMessage",
    "ChatMessagePage",
    "ChatSession",
    "ChatSessionPage",
]
