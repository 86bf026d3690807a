"""A chat reply follows the events of the task that generates it: streamed deltas become its
text, a new attempt starts the text over, and the terminal event finishes it with the result's
figures or the task's error. Also the prompt of a reply grounded in retrieved sources."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from taskorch.core.chat_replies import _Projection, grounded
from taskorch.domain.chat_values import ChatEventType, Generation, Message, Role, Source
from taskorch.domain.values import EventType, Status, Task, TaskEvent

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
REPLY = Message(
    message_id="m2",
    session_id="s1",
    tenant_id="acme",
    position=2,
    role=Role.ASSISTANT,
    status=Status.PENDING,
    created_at=NOW,
    updated_at=NOW,
    task_id="t1",
)


def _event(sequence: int, type: EventType, status: Status, **fields: Any) -> TaskEvent:
    return TaskEvent("t1", "acme", sequence, type, status, NOW, **fields)


def _started(sequence: int) -> TaskEvent:
    return _event(sequence, EventType.STATUS_CHANGED, Status.RUNNING)


def _delta(sequence: int, text: str) -> TaskEvent:
    return _event(sequence, EventType.OUTPUT, Status.RUNNING, output_delta=text)


def _task(status: Status, **fields: Any) -> Task:
    return Task("t1", "acme", status, "text_generation", NOW, NOW, **fields)


def _ended(sequence: int, task: Task) -> TaskEvent:
    return _event(sequence, EventType.STATUS_CHANGED, task.status, task=task)


def test_deltas_become_the_reply_and_the_result_finishes_it() -> None:
    reply = _Projection(REPLY)
    result = {"generated_text": "Hello there", "tokens_generated": 2, "finish_reason": "stop"}
    done = _task(Status.COMPLETED, result=result)
    ended = [
        reply.apply(e, lambda: None)
        for e in (_started(2), _delta(3, "Hello"), _delta(4, " there"), _ended(5, done))
    ]
    assert ended == [False, False, False, True]
    assert reply.content == "Hello there" and reply.status is Status.COMPLETED
    # Consecutive deltas go out as one session event.
    assert [(c.type, c.delta) for c in reply.changes] == [
        (ChatEventType.REPLY_STARTED, ""),
        (ChatEventType.REPLY_DELTA, "Hello there"),
        (ChatEventType.REPLY_FINISHED, ""),
    ]
    assert reply.generation == Generation(tokens_generated=2, finish_reason="stop")
    values = reply.values(task_sequence=5, now=NOW)
    assert values["content"] == "Hello there" and values["completed_at"] == NOW
    assert values["generation"]["tokens_generated"] == 2


def test_a_retried_attempt_starts_the_text_over() -> None:
    reply = _Projection(REPLY)
    reply.apply(_started(2), lambda: None)
    reply.apply(_delta(3, "Half a sen"), lambda: None)
    retry = _event(4, EventType.PROGRESS, Status.RUNNING, data={"attempt": 2, "worker_id": "w2"})
    reply.apply(retry, lambda: None)
    reply.apply(_delta(5, "A whole sentence."), lambda: None)
    assert reply.content == "A whole sentence."
    types = [c.type for c in reply.changes]
    assert types.count(ChatEventType.REPLY_STARTED) == 2


def test_the_final_text_wins_when_the_stream_missed_some() -> None:
    reply = _Projection(REPLY)
    reply.apply(_delta(3, "Hel"), lambda: None)
    done = _task(Status.COMPLETED, result={"generated_text": "Hello"})
    assert reply.apply(_ended(6, done), lambda: None)
    assert reply.content == "Hello"
    assert [(c.type, c.delta) for c in reply.changes][-3:] == [
        (ChatEventType.REPLY_STARTED, ""),
        (ChatEventType.REPLY_DELTA, "Hello"),
        (ChatEventType.REPLY_FINISHED, ""),
    ]


def test_a_failed_generation_finishes_the_reply_with_the_tasks_error() -> None:
    reply = _Projection(REPLY)
    failed = _task(Status.FAILED, error="model not loaded", error_code="MODEL_NOT_FOUND")
    # A terminal event without the task: the reply reads it.
    event = _event(4, EventType.STATUS_CHANGED, Status.FAILED)
    assert reply.apply(event, lambda: failed)
    assert (reply.status, reply.error, reply.error_code) == (
        Status.FAILED,
        "model not loaded",
        "MODEL_NOT_FOUND",
    )
    values = reply.values(task_sequence=4, now=NOW)
    assert values["error_code"] == "MODEL_NOT_FOUND" and values["generation"] is None


def test_progress_without_an_attempt_leaves_the_reply_alone() -> None:
    reply = _Projection(REPLY)
    assert not reply.apply(_event(2, EventType.PROGRESS, Status.PENDING, message="queued"), dict)
    assert reply.changes == [] and reply.status is Status.PENDING


def test_a_grounded_question_numbers_its_sources_for_citation() -> None:
    sources = [
        Source("handbook", "doc-1", "Leases last 30 s.", 0.91),
        Source("handbook", "doc-7", "Heartbeats extend them.", 0.80),
    ]
    assert grounded("How long is a lease?", sources) == (
        "Answer using these sources; cite them by number, like [1].\n"
        "\n"
        "[1] (handbook/doc-1) Leases last 30 s.\n"
        "[2] (handbook/doc-7) Heartbeats extend them.\n"
        "\n"
        "Question: How long is a lease?"
    )
    assert grounded("Plain?", []) == "Plain?"
