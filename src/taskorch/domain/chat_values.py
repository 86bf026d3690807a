"""The chat domain's value types: sessions, messages, the generation figures of a reply and
the events of a session. Plain frozen dataclasses, like domain/values.py's tasks."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from taskorch.domain.values import JSON, Status

T = TypeVar("T")


class Role(enum.IntEnum):
    """Who wrote a message; the numbers are the proto enum's (Message.Role)."""

    USER = 1
    ASSISTANT = 2
    SYSTEM = 3

    @property
    def word(self) -> str:
        """The role as chat templates spell it."""
        return self.name.lower()


class ChatEventType(enum.IntEnum):
    """Kind of a session event; the numbers are the proto enum's (ChatEvent.Type)."""

    SNAPSHOT = 1
    MESSAGE_ADDED = 2
    REPLY_STARTED = 3
    REPLY_DELTA = 4
    REPLY_FINISHED = 5
    MESSAGE_DELETED = 6
    SESSION_DELETED = 7


@dataclass(frozen=True)
class Generation:
    """What generating a reply took (from the text_generation result)."""

    tokens_generated: int = 0
    prompt_tokens: int = 0
    inference_time: float = 0.0
    time_to_first_token: float = 0.0
    finish_reason: str = ""
    messages_dropped: int = 0

    def to_json(self) -> JSON:
        return {
            "tokens_generated": self.tokens_generated,
            "prompt_tokens": self.prompt_tokens,
            "inference_time": self.inference_time,
            "time_to_first_token": self.time_to_first_token,
            "finish_reason": self.finish_reason,
            "messages_dropped": self.messages_dropped,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Generation | None:
        if not data:
            return None
        return cls(
            tokens_generated=int(data.get("tokens_generated") or 0),
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            inference_time=float(data.get("inference_time") or 0.0),
            time_to_first_token=float(data.get("time_to_first_token") or 0.0),
            finish_reason=str(data.get("finish_reason") or ""),
            messages_dropped=int(data.get("messages_dropped") or 0),
        )


@dataclass(frozen=True)
class Source:
    """A chunk of a collection that was put into a reply's prompt."""

    collection: str
    document_id: str
    text: str
    score: float

    def to_json(self) -> JSON:
        return {
            "collection": self.collection,
            "document_id": self.document_id,
            "text": self.text,
            "score": self.score,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Source:
        return cls(
            collection=str(data["collection"]),
            document_id=str(data["document_id"]),
            text=str(data["text"]),
            score=float(data["score"]),
        )


def sources_from_json(data: Any) -> tuple[Source, ...]:
    return tuple(Source.from_json(item) for item in data or ())


@dataclass(frozen=True)
class Session:
    session_id: str
    tenant_id: str
    model_name: str
    created_at: datetime
    updated_at: datetime
    system_prompt: str = ""
    title: str = ""
    parameters: JSON | None = None
    # The sequence number of the latest stored event of the session.
    sequence: int = 0
    last_position: int = 0
    message_count: int = 0
    # Collections each user message searches (retrieval-augmented replies).
    collections: tuple[str, ...] = ()


@dataclass(frozen=True)
class Message:
    message_id: str
    session_id: str
    tenant_id: str
    position: int
    role: Role
    status: Status
    created_at: datetime
    updated_at: datetime
    content: str = ""
    task_id: str | None = None
    reply_to: str | None = None
    request_id: str | None = None
    generation: Generation | None = None
    error: str | None = None
    error_code: str | None = None
    # Replies: the last event of the generating task applied to this message.
    task_sequence: int = 0
    completed_at: datetime | None = None
    # Replies in a session with collections: the chunks put into the prompt, best first.
    sources: tuple[Source, ...] = ()

    @property
    def is_reply(self) -> bool:
        return self.role is Role.ASSISTANT

    def to_json(self) -> JSON:
        """The message as stored in an event (so that a replayed event shows it as it was)."""
        return {
            "message_id": self.message_id,
            "session_id": self.session_id,
            "tenant_id": self.tenant_id,
            "position": self.position,
            "role": int(self.role),
            "status": int(self.status),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "content": self.content,
            "task_id": self.task_id,
            "reply_to": self.reply_to,
            "request_id": self.request_id,
            "generation": self.generation.to_json() if self.generation else None,
            "error": self.error,
            "error_code": self.error_code,
            "task_sequence": self.task_sequence,
            "sources": [s.to_json() for s in self.sources] or None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        completed = data.get("completed_at")
        return cls(
            message_id=data["message_id"],
            session_id=data["session_id"],
            tenant_id=data["tenant_id"],
            position=int(data["position"]),
            role=Role(data["role"]),
            status=Status(data["status"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            completed_at=datetime.fromisoformat(completed) if completed else None,
            content=data.get("content") or "",
            task_id=data.get("task_id"),
            reply_to=data.get("reply_to"),
            request_id=data.get("request_id"),
            generation=Generation.from_json(data.get("generation")),
            error=data.get("error"),
            error_code=data.get("error_code"),
            task_sequence=int(data.get("task_sequence") or 0),
            sources=sources_from_json(data.get("sources")),
        )


@dataclass(frozen=True)
class ChatEvent:
    """One stored change of a session; ``sequence`` increases by one per session."""

    session_id: str
    tenant_id: str
    sequence: int
    type: ChatEventType
    created_at: datetime
    message_id: str | None = None
    status: Status | None = None
    delta: str | None = None
    message: Message | None = None
    # SNAPSHOT: the session, and the replies still being generated with their text so far.
    session: Session | None = None
    messages: tuple[Message, ...] = ()

    @property
    def ends_session(self) -> bool:
        return self.type is ChatEventType.SESSION_DELETED

    def finishes(self, message_id: str) -> bool:
        """True when this event is the last one about ``message_id``."""
        return self.message_id == message_id and self.type in (
            ChatEventType.REPLY_FINISHED,
            ChatEventType.MESSAGE_DELETED,
        )


@dataclass(frozen=True)
class ChatPage(Generic[T]):
    """One page of sessions or messages."""

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int
    page: int
    next_page_token: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
