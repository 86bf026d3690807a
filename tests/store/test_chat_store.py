"""The chat repository on a real SQLite file: sequences, history, queues, deletion."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from taskorch.domain.chat_values import ChatEvent, ChatEventType, Message, Role, Session
from taskorch.domain.values import Status
from taskorch.store import chat as chat_store
from taskorch.store.database import Database, Transaction
from taskorch.store.schema import utcnow


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await database.open()
    yield database
    await database.close()


def _session() -> Session:
    now = utcnow()
    return Session(str(uuid.uuid4()), "default", "m", now, now)


def _message(session: Session, position: int, role: Role, status: Status, **extra: str) -> Message:
    now = utcnow()
    return Message(
        message_id=str(uuid.uuid4()),
        session_id=session.session_id,
        tenant_id=session.tenant_id,
        position=position,
        role=role,
        status=status,
        created_at=now,
        updated_at=now,
        content=extra.pop("content", f"{role.name.lower()} {position}"),
        **extra,  # type: ignore[arg-type]
    )


async def test_the_conversation_before_a_reply_skips_unfinished_and_failed_replies(
    db: Database,
) -> None:
    session = _session()
    rows = [
        _message(session, 1, Role.SYSTEM, Status.COMPLETED),
        _message(session, 2, Role.USER, Status.COMPLETED),
        _message(session, 3, Role.ASSISTANT, Status.FAILED),
        _message(session, 4, Role.USER, Status.COMPLETED),
        _message(session, 5, Role.ASSISTANT, Status.COMPLETED),
        _message(session, 6, Role.USER, Status.COMPLETED),
        _message(session, 7, Role.ASSISTANT, Status.RUNNING),
        _message(session, 8, Role.USER, Status.COMPLETED),
        _message(session, 9, Role.ASSISTANT, Status.PENDING),
    ]

    def insert(tx: Transaction) -> None:
        chat_store.insert_session(tx.conn, session)
        chat_store.insert_messages(tx.conn, rows)

    await db.write(insert)

    def history(conn: Connection, limit: int = 200) -> list[int]:
        found = chat_store.history_before(conn, session.session_id, 9, limit)
        return [m.position for m in found]

    assert await db.read(history) == [1, 2, 4, 5, 6, 8]
    # A limit keeps the system prompt and the newest messages.
    assert await db.read(lambda conn: history(conn, 2)) == [1, 6, 8]
    unfinished = await db.read(lambda c: chat_store.unfinished_replies(c, session.session_id))
    assert [m.position for m in unfinished] == [7, 9]


async def test_sequence_numbers_and_positions_are_reserved_in_order(db: Database) -> None:
    session = _session()
    await db.write(lambda tx: chat_store.insert_session(tx.conn, session))

    def advance(tx: Transaction) -> tuple[int, int, int]:
        now = utcnow()
        advanced = chat_store.advance_session(
            tx.conn, session.session_id, events=2, positions=2, messages=2, now=now
        )
        assert advanced is not None
        return advanced.sequence, advanced.last_position, advanced.message_count

    assert await db.write(advance) == (2, 2, 2)
    assert await db.write(advance) == (4, 4, 4)


async def test_a_reply_whose_question_was_deleted_is_found_unanswerable(db: Database) -> None:
    session = _session()
    question = _message(session, 1, Role.USER, Status.COMPLETED)
    reply = _message(session, 2, Role.ASSISTANT, Status.PENDING, reply_to=question.message_id)
    answered = _message(session, 3, Role.USER, Status.COMPLETED)
    other = _message(session, 4, Role.ASSISTANT, Status.PENDING, reply_to=answered.message_id)

    def insert(tx: Transaction) -> None:
        chat_store.insert_session(tx.conn, session)
        chat_store.insert_messages(tx.conn, [question, reply, answered, other])
        chat_store.delete_message(tx.conn, question.message_id)

    await db.write(insert)
    orphans = await db.read(chat_store.unanswerable_replies)
    assert [m.message_id for m in orphans] == [reply.message_id]


async def test_deleting_a_session_deletes_its_messages_and_events(db: Database) -> None:
    session = _session()
    message = _message(session, 1, Role.USER, Status.COMPLETED)

    def insert(tx: Transaction) -> None:
        chat_store.insert_session(tx.conn, session)
        chat_store.insert_messages(tx.conn, [message])
        added = ChatEvent(
            session_id=session.session_id,
            tenant_id=session.tenant_id,
            sequence=1,
            type=ChatEventType.MESSAGE_ADDED,
            created_at=utcnow(),
            message_id=message.message_id,
            message=message,
        )
        chat_store.insert_events(tx.conn, [added])

    await db.write(insert)
    stored = await db.read(lambda c: chat_store.events_after(c, session.session_id, 0))
    assert [e.message for e in stored] == [message]  # events keep the message as it was
    await db.write(lambda tx: chat_store.delete_session(tx.conn, session.session_id))
    assert await db.read(lambda c: chat_store.get_message(c, None, message.message_id)) is None
    events = await db.read(lambda c: chat_store.events_after(c, session.session_id, 0))
    assert events == []
