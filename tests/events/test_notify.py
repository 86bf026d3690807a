"""The NOTIFY payload format (events/notify.py): what one replica sends, another reads back;
its own notices and ones it does not know are ignored; payloads stay small."""

from __future__ import annotations

import uuid

import pytest

from taskorch.events import notify

OTHER_NODE = "0123456789ab"


def _from_another_replica(payload: str) -> str:
    kind, _node, *rest = payload.split("|")
    return "|".join([kind, OTHER_NODE, *rest])


@pytest.mark.parametrize(
    ("payload", "notice"),
    [
        (notify.FORMAT.event_stored("t-1", 7), notify.TaskEventStored("t-1", 7)),
        (notify.FORMAT.events_stored(10, 42), notify.TaskEventsStored(10, 42)),
        (notify.FORMAT.work_ready(), notify.WorkReady()),
        (notify.FORMAT.worker_stop("w", "s", "l"), notify.WorkerStop("w", "s", "l")),
        (
            notify.FORMAT.chat_events_stored("c-1", 3, 9, "tenant|with|bars"),
            notify.ChatEventsStored("c-1", 3, 9, "tenant|with|bars"),
        ),
    ],
    ids=["task-event", "task-events", "work", "stop", "chat-events"],
)
def test_another_replica_reads_back_what_was_sent(payload: str, notice: notify.Notice) -> None:
    assert notify.parse(_from_another_replica(payload)) == notice


def test_a_replica_ignores_its_own_notices_and_unknown_ones() -> None:
    assert notify.parse(notify.FORMAT.work_ready()) is None  # published here already
    assert notify.parse(f"z|{OTHER_NODE}|from a newer version") is None
    assert notify.parse(f"e|{OTHER_NODE}|t-1|not-a-number") is None
    assert notify.parse("") is None


def test_a_chat_notice_stays_small_whatever_the_reply_holds() -> None:
    """The events' deltas are read from the store; PostgreSQL refuses payloads of 8000
    bytes or more."""
    ids = str(uuid.uuid4())
    payload = notify.FORMAT.chat_events_stored(ids, 1, 2**40, str(uuid.uuid4()))
    assert len(payload.encode()) < 200
