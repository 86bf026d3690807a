"""Chat values of the SDK: what ``client.chat`` returns, and how its requests are built.

The calls themselves are ``Chat`` and ``AsyncChat`` (``_async_client.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskorch.client._errors import TaskorchClientError
from taskorch.client._models import _status, _struct, _time
from taskorch.v1 import chat_service_pb2 as pb

FINISHED = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatSource:
    """A chunk of a collection that was put into a reply's prompt.

    ``score`` is its cosine similarity to the message.
    """

    collection: str
    document_id: str
    text: str
    score: float


@dataclass(frozen=True)
class ChatMessage:
    """A message of a session.

    ``role`` is USER, ASSISTANT or SYSTEM; ``status`` a word such as ``"RUNNING"`` (a reply being
    generated) or ``"COMPLETED"``.
    """

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
    """A conversation with one model.

    ``messages`` is set by ``get_session`` (a page, oldest first) and on a watch's SNAPSHOT (the
    replies still being generated).
    """

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
    """One change of a session.

    ``type`` is SNAPSHOT, MESSAGE_ADDED, REPLY_STARTED (the reply's text starts (over) empty),
    REPLY_DELTA (``delta``), REPLY_FINISHED (``message`` is final), MESSAGE_DELETED or
    SESSION_DELETED.
    """

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
    """Follows one posted message through a stream of session events.

    So that a broken PostMessageStream can be resumed with WatchSession after the last event seen.
    """

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


__all__ = [
    "ChatEvent",
    "ChatExchange",
    "ChatMessage",
    "ChatMessagePage",
    "ChatSession",
    "ChatSessionPage",
    "ChatSource",
]
