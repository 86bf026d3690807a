"""The chat domain's values: a message survives its JSON form (stored in events and replayed),
roles read as chat templates spell them, and an event knows what it ends."""

from __future__ import annotations

from datetime import UTC, datetime

from taskorch.domain.chat_values import (
    ChatEvent,
    ChatEventType,
    Generation,
    Message,
    Role,
    Source,
)
from taskorch.domain.values import Status

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_a_finished_reply_survives_its_json_form() -> None:
    reply = Message(
        message_id="m2",
        session_id="s1",
        tenant_id="acme",
        position=2,
        role=Role.ASSISTANT,
        status=Status.COMPLETED,
        created_at=NOW,
        updated_at=NOW,
        completed_at=NOW,
        content="Leases last 30 s [1].",
        task_id="t1",
        reply_to="m1",
        generation=Generation(tokens_generated=7, inference_time=0.25, finish_reason="stop"),
        task_sequence=9,
        sources=(Source("handbook", "doc-1", "Leases last 30 s.", 0.91),),
    )
    assert Message.from_json(reply.to_json()) == reply
    assert reply.is_reply


def test_a_pending_message_without_extras_survives_too() -> None:
    question = Message("m1", "s1", "acme", 1, Role.USER, Status.PENDING, NOW, NOW, content="Hi")
    data = question.to_json()
    assert data["generation"] is None and data["sources"] is None
    assert Message.from_json(data) == question and not question.is_reply


def test_generation_figures_are_absent_for_an_empty_result() -> None:
    assert Generation.from_json(None) is None and Generation.from_json({}) is None
    assert Generation.from_json({"tokens_generated": 3.0, "finish_reason": None}) == Generation(
        tokens_generated=3
    )


def test_roles_are_spelled_as_chat_templates_spell_them() -> None:
    assert [r.word for r in Role] == ["user", "assistant", "system"]


def test_an_event_knows_whether_it_is_the_last_about_a_message_or_the_session() -> None:
    def event(type: ChatEventType, message_id: str | None = "m2") -> ChatEvent:
        return ChatEvent("s1", "acme", 1, type, NOW, message_id=message_id)

    assert event(ChatEventType.REPLY_FINISHED).finishes("m2")
    assert event(ChatEventType.MESSAGE_DELETED).finishes("m2")
    assert not event(ChatEventType.REPLY_DELTA).finishes("m2")
    assert not event(ChatEventType.REPLY_FINISHED).finishes("m3")
    assert event(ChatEventType.SESSION_DELETED, None).ends_session
    assert not event(ChatEventType.MESSAGE_DELETED).ends_session
