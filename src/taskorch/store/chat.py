"""Repository of chat sessions, their messages and their events (synchronous SQLAlchemy Core).

Like store/tasks.py, functions take a ``Connection`` so core/chat.py can compose them in one
transaction; ``tenant_id=None`` means every tenant. The statements of the streaming path (a
reply's text and the session's event sequence, written for every batch of tokens) are built
once and reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)

from taskorch.domain.chat_values import (
    ChatEvent,
    ChatEventType,
    Generation,
    Message,
    Role,
    Session,
    Source,
    sources_from_json,
)
from taskorch.domain.values import Status
from taskorch.store import notices, statements
from taskorch.store.schema import chat_events, chat_messages, chat_sessions

UNFINISHED = (int(Status.PENDING), int(Status.RUNNING))


# -- rows ------------------------------------------------------------------------------------


def session_from_row(row: RowMapping) -> Session:
    return Session(
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        model_name=row["model_name"],
        system_prompt=row["system_prompt"],
        title=row["title"],
        parameters=row["parameters"],
        sequence=row["sequence"],
        last_position=row["last_position"],
        message_count=row["message_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        collections=tuple(row["collections"] or ()),
    )


def message_from_row(row: RowMapping) -> Message:
    return Message(
        message_id=row["message_id"],
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        position=row["position"],
        role=Role(row["role"]),
        status=Status(row["status"]),
        content=row["content"],
        task_id=row["task_id"],
        reply_to=row["reply_to"],
        request_id=row["request_id"],
        generation=Generation.from_json(row["generation"]),
        error=row["error"],
        error_code=row["error_code"],
        task_sequence=row["task_sequence"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
        sources=sources_from_json(row["sources"]),
    )


def message_values(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "session_id": message.session_id,
        "tenant_id": message.tenant_id,
        "position": message.position,
        "role": int(message.role),
        "status": int(message.status),
        "content": message.content,
        "task_id": message.task_id,
        "reply_to": message.reply_to,
        "request_id": message.request_id,
        "generation": message.generation.to_json() if message.generation else None,
        "error": message.error,
        "error_code": message.error_code,
        "task_sequence": message.task_sequence,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
        "completed_at": message.completed_at,
        "sources": [s.to_json() for s in message.sources] or None,
    }


def event_from_row(row: RowMapping) -> ChatEvent:
    data = row["data"]
    return ChatEvent(
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        sequence=row["sequence"],
        type=ChatEventType(row["type"]),
        message_id=row["message_id"],
        status=Status(row["status"]) if row["status"] is not None else None,
        delta=row["delta"],
        message=Message.from_json(data) if data else None,
        created_at=row["created_at"],
    )


# -- sessions --------------------------------------------------------------------------------


def insert_session(conn: Connection, session: Session) -> None:
    conn.execute(
        insert(chat_sessions),
        {
            "session_id": session.session_id,
            "tenant_id": session.tenant_id,
            "model_name": session.model_name,
            "system_prompt": session.system_prompt,
            "title": session.title,
            "parameters": session.parameters,
            "sequence": session.sequence,
            "last_position": session.last_position,
            "message_count": session.message_count,
            "created_at": session.created_at,
            "updated_at": session.updated_at,
            "collections": list(session.collections) or None,
        },
    )


@cache
def _select_session(*, tenant: bool, for_update: bool) -> Select[Any]:
    stmt = statements.select_by_id(chat_sessions, tenant=tenant)
    return stmt.with_for_update() if for_update else stmt


def get_session(
    conn: Connection, tenant_id: str | None, session_id: str, *, for_update: bool = False
) -> Session | None:
    """One session; ``for_update`` locks its row until the transaction ends (PostgreSQL),
    which serialises the writers of one session's messages and sequence."""
    stmt = _select_session(tenant=tenant_id is not None, for_update=for_update)
    row = conn.execute(stmt, {"_id": session_id, "_tenant": tenant_id}).mappings().first()
    return session_from_row(row) if row else None


_ADVANCE_SESSION = (
    update(chat_sessions)
    .where(chat_sessions.c.session_id == bindparam("_id"))
    .values(
        sequence=chat_sessions.c.sequence
        + bindparam("events", type_=chat_sessions.c.sequence.type),
        last_position=chat_sessions.c.last_position
        + bindparam("positions", type_=chat_sessions.c.last_position.type),
        message_count=chat_sessions.c.message_count
        + bindparam("messages", type_=chat_sessions.c.message_count.type),
        updated_at=bindparam("now", type_=chat_sessions.c.updated_at.type),
    )
    .returning(chat_sessions)
)


def advance_session(
    conn: Connection,
    session_id: str,
    *,
    events: int,
    now: datetime,
    positions: int = 0,
    messages: int = 0,
) -> Session | None:
    """Reserves ``events`` sequence numbers and ``positions`` message positions, and counts
    ``messages`` more (or fewer) messages. The reserved numbers are the last ones of the
    returned session (``sequence - events + 1 … sequence``)."""
    row = (
        conn.execute(
            _ADVANCE_SESSION,
            {
                "_id": session_id,
                "events": events,
                "positions": positions,
                "messages": messages,
                "now": now,
            },
        )
        .mappings()
        .first()
    )
    return session_from_row(row) if row else None


def delete_session(conn: Connection, session_id: str, *, end: ChatEvent | None = None) -> None:
    """Deletes the session; its messages and events go with it (ON DELETE CASCADE, which
    SQLite enforces too: the store turns ``foreign_keys`` on). ``end``, the deletion's
    event (not stored), is announced to other replicas' watchers when this commits."""
    conn.execute(delete(chat_sessions).where(chat_sessions.c.session_id == session_id))
    if end is not None:
        notices.chat_events_stored(conn, session_id, end.sequence, end.sequence, end.tenant_id)


@dataclass(frozen=True)
class SessionQuery:
    """Filters and page of a session list, newest first. ``after`` comes from a page token."""

    tenant_id: str | None
    model_name: str | None = None
    limit: int = 50
    offset: int = 0
    after: tuple[datetime, str] | None = None  # (created_at, session_id) of the last row


def _tenant(column: Any, tenant_id: str | None) -> ColumnElement[bool]:
    return column == tenant_id if tenant_id is not None else true()


def list_sessions(conn: Connection, query: SessionQuery) -> tuple[list[Session], int]:
    filters = [_tenant(chat_sessions.c.tenant_id, query.tenant_id)]
    if query.model_name:
        filters.append(chat_sessions.c.model_name == query.model_name)
    total = conn.execute(
        select(func.count()).select_from(chat_sessions).where(*filters)
    ).scalar_one()
    stmt = select(chat_sessions).where(*filters)
    if query.after is not None:
        created, session_id = query.after
        stmt = stmt.where(
            or_(
                chat_sessions.c.created_at < created,
                and_(
                    chat_sessions.c.created_at == created,
                    chat_sessions.c.session_id < session_id,
                ),
            )
        )
    elif query.offset:
        stmt = stmt.offset(query.offset)
    stmt = stmt.order_by(chat_sessions.c.created_at.desc(), chat_sessions.c.session_id.desc())
    rows = conn.execute(stmt.limit(query.limit)).mappings()
    return [session_from_row(row) for row in rows], total


# -- messages --------------------------------------------------------------------------------


def insert_messages(conn: Connection, messages: Sequence[Message]) -> None:
    if messages:
        conn.execute(insert(chat_messages), [message_values(m) for m in messages])


@cache
def _select_message(*, tenant: bool, for_update: bool) -> Select[Any]:
    stmt = statements.select_by_id(chat_messages, tenant=tenant)
    return stmt.with_for_update() if for_update else stmt


def get_message(
    conn: Connection, tenant_id: str | None, message_id: str, *, for_update: bool = False
) -> Message | None:
    stmt = _select_message(tenant=tenant_id is not None, for_update=for_update)
    row = conn.execute(stmt, {"_id": message_id, "_tenant": tenant_id}).mappings().first()
    return message_from_row(row) if row else None


def find_by_request_id(conn: Connection, session_id: str, request_id: str) -> list[Message]:
    """The message posted with ``request_id`` and the reply to it."""
    posted = (
        conn.execute(
            select(chat_messages).where(
                chat_messages.c.session_id == session_id,
                chat_messages.c.request_id == request_id,
            )
        )
        .mappings()
        .first()
    )
    if posted is None:
        return []
    found = [message_from_row(posted)]
    rows = conn.execute(
        select(chat_messages).where(chat_messages.c.reply_to == posted["message_id"])
    ).mappings()
    return found + [message_from_row(row) for row in rows]


def update_message(conn: Connection, message_id: str, values: Mapping[str, Any]) -> Message | None:
    stmt = statements.update_by_id(chat_messages, tuple(sorted(values)))
    row = conn.execute(stmt, statements.update_params(message_id, dict(values))).mappings().first()
    return message_from_row(row) if row else None


def delete_message(conn: Connection, message_id: str) -> None:
    conn.execute(delete(chat_messages).where(chat_messages.c.message_id == message_id))


def list_messages(
    conn: Connection,
    session_id: str,
    *,
    limit: int,
    offset: int = 0,
    after_position: int | None = None,
) -> tuple[list[Message], int]:
    """A page of a session's messages in order, and how many it has."""
    total = conn.execute(
        select(func.count())
        .select_from(chat_messages)
        .where(chat_messages.c.session_id == session_id)
    ).scalar_one()
    stmt = select(chat_messages).where(chat_messages.c.session_id == session_id)
    if after_position is not None:
        stmt = stmt.where(chat_messages.c.position > after_position)
    elif offset:
        stmt = stmt.offset(offset)
    rows = conn.execute(stmt.order_by(chat_messages.c.position).limit(limit)).mappings()
    return [message_from_row(row) for row in rows], total


def sources_at(conn: Connection, session_id: str, position: int) -> tuple[Source, ...]:
    """The sources of the message at ``position`` (a reply), if any."""
    data = conn.execute(
        select(chat_messages.c.sources).where(
            chat_messages.c.session_id == session_id, chat_messages.c.position == position
        )
    ).scalar()
    return sources_from_json(data)


def history_before(conn: Connection, session_id: str, position: int, limit: int) -> list[Message]:
    """What a reply at ``position`` answers: the system prompt, then the user messages and the
    completed replies before it, oldest first (at most ``limit`` besides the system prompt)."""
    conversation = and_(
        chat_messages.c.session_id == session_id,
        chat_messages.c.position < position,
        or_(
            chat_messages.c.role == int(Role.USER),
            and_(
                chat_messages.c.role == int(Role.ASSISTANT),
                chat_messages.c.status == int(Status.COMPLETED),
            ),
        ),
    )
    system = conn.execute(
        select(chat_messages)
        .where(
            chat_messages.c.session_id == session_id,
            chat_messages.c.role == int(Role.SYSTEM),
            chat_messages.c.position < position,
        )
        .order_by(chat_messages.c.position)
    ).mappings()
    latest = conn.execute(
        select(chat_messages)
        .where(conversation)
        .order_by(chat_messages.c.position.desc())
        .limit(limit)
    ).mappings()
    return [message_from_row(r) for r in system] + [
        message_from_row(r) for r in reversed(list(latest))
    ]


def unfinished_replies(conn: Connection, session_id: str | None = None) -> list[Message]:
    """Replies waiting or being generated, in session order (of one session, or all)."""
    stmt = select(chat_messages).where(
        chat_messages.c.status.in_(UNFINISHED),
        chat_messages.c.role == int(Role.ASSISTANT),
    )
    if session_id is not None:
        stmt = stmt.where(chat_messages.c.session_id == session_id)
    stmt = stmt.order_by(chat_messages.c.session_id, chat_messages.c.position)
    return [message_from_row(row) for row in conn.execute(stmt).mappings()]


def unanswerable_replies(conn: Connection) -> list[Message]:
    """Unfinished replies whose user message was deleted."""
    prompts = chat_messages.alias("prompts")
    rows = conn.execute(
        select(chat_messages)
        .outerjoin(prompts, prompts.c.message_id == chat_messages.c.reply_to)
        .where(
            chat_messages.c.status.in_(UNFINISHED),
            chat_messages.c.role == int(Role.ASSISTANT),
            chat_messages.c.reply_to.is_not(None),
            prompts.c.message_id.is_(None),
        )
    ).mappings()
    return [message_from_row(row) for row in rows]


def replies_to(conn: Connection, message_id: str) -> list[Message]:
    rows = conn.execute(
        select(chat_messages).where(chat_messages.c.reply_to == message_id)
    ).mappings()
    return [message_from_row(row) for row in rows]


# -- events ----------------------------------------------------------------------------------

_INSERT_EVENT = insert(chat_events)


def insert_events(conn: Connection, events: Iterable[ChatEvent]) -> None:
    """Stores events (and tells other replicas, on PostgreSQL, when they commit)."""
    events = list(events)
    rows = [
        {
            "session_id": event.session_id,
            "tenant_id": event.tenant_id,
            "sequence": event.sequence,
            "type": int(event.type),
            "message_id": event.message_id,
            "status": int(event.status) if event.status is not None else None,
            "delta": event.delta,
            "data": event.message.to_json() if event.message is not None else None,
            "created_at": event.created_at,
        }
        for event in events
    ]
    if rows:
        conn.execute(_INSERT_EVENT, rows)
    # Other replicas' watchers read them from here when this commits: one notice a session.
    spans: dict[str, tuple[int, int, str]] = {}
    for event in events:
        session_id, sequence = event.session_id, event.sequence
        first, last, tenant_id = spans.get(session_id, (sequence, sequence, event.tenant_id))
        spans[session_id] = (min(first, sequence), max(last, sequence), tenant_id)
    for session_id, (first, last, tenant_id) in spans.items():
        notices.chat_events_stored(conn, session_id, first, last, tenant_id)


def added_at(conn: Connection, session_id: str, message_id: str) -> int:
    """The sequence number of the event that added a message (0 if there is none)."""
    found = conn.execute(
        select(chat_events.c.sequence).where(
            chat_events.c.session_id == session_id,
            chat_events.c.message_id == message_id,
            chat_events.c.type == int(ChatEventType.MESSAGE_ADDED),
        )
    ).scalar()
    return int(found or 0)


def events_after(
    conn: Connection, session_id: str, after_sequence: int, *, limit: int = 1000
) -> list[ChatEvent]:
    rows = conn.execute(
        select(chat_events)
        .where(chat_events.c.session_id == session_id, chat_events.c.sequence > after_sequence)
        .order_by(chat_events.c.sequence)
        .limit(limit)
    ).mappings()
    return [event_from_row(row) for row in rows]
