"""A WebSocket client that does not keep up: its subscription ends with a ``lagged`` message
naming the last sequence it was given, within the patience, instead of holding anything up;
subscribing again from there delivers the rest without loss (server/web.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from taskorch.domain.caller import ANONYMOUS, Caller
from taskorch.domain.values import EventType, Status, TaskEvent
from taskorch.server.web import Lagged, LiveConnection, Outbox

EVENTS = 20


class _Tasks:
    """The part of TaskService a subscription uses: a watch over 20 stored events."""

    def __init__(self) -> None:
        self.hub = None

    async def watch(self, caller: Caller, task_id: str, after: int = 0) -> AsyncIterator[TaskEvent]:
        for sequence in range(after + 1, EVENTS + 1):
            yield TaskEvent(
                task_id=task_id,
                tenant_id=caller.tenant_id,
                sequence=sequence,
                type=EventType.PROGRESS,
                status=Status.RUNNING,
                created_at=datetime.now(UTC),
                progress=100 * sequence / EVENTS,
            )

    def estimate_completion(self, task: Any) -> None:
        return None


def _connection(capacity: int, patience: float) -> LiveConnection:
    return LiveConnection(
        None,  # type: ignore[arg-type]  (subscriptions only queue; the writer is not run)
        _Tasks(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        ANONYMOUS,
        capacity=capacity,
        patience=patience,
    )


def _drain(outbox: Outbox) -> list[dict[str, Any]]:
    items = []
    while len(outbox):
        items.append(outbox._items.popleft())
    return items


async def test_a_client_that_does_not_read_is_told_it_lagged_and_resumes_without_loss() -> None:
    connection = _connection(capacity=5, patience=0.2)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(connection._follow_task(ANONYMOUS, "t1", 0), 5)
    # Ended within its patience: a client that reads nothing holds nothing up.
    assert asyncio.get_running_loop().time() - started < 2
    first = _drain(connection.outbox)
    assert first[0]["type"] == "subscribed"
    updates = [m for m in first if m["type"] == "update"]
    lagged = first[-1]
    assert lagged["type"] == "lagged" and lagged["task_id"] == "t1"
    assert lagged["after_sequence"] == updates[-1]["sequence"] < EVENTS
    # Subscribing again from there, with a reader this time.
    reader = _connection(capacity=5, patience=0.2)
    follow = asyncio.create_task(reader._follow_task(ANONYMOUS, "t1", lagged["after_sequence"]))
    rest: list[dict[str, Any]] = []
    while not follow.done() or len(reader.outbox):
        if len(reader.outbox):
            rest.append(await reader.outbox.get())
        else:
            await asyncio.sleep(0.01)
    sequences = [m["sequence"] for m in updates + rest if m["type"] == "update"]
    assert sequences == list(range(1, EVENTS + 1))
    assert not [m for m in rest if m["type"] == "lagged"]


async def test_the_outbox_holds_at_most_its_capacity_but_notices_always_fit() -> None:
    outbox = Outbox(capacity=2)
    await outbox.put({"n": 1})
    await outbox.put({"n": 2})
    with pytest.raises(Lagged):
        await outbox.put({"n": 3}, patience=0.05)
    outbox.notice({"type": "lagged"})
    assert len(outbox) == 3
    assert (await outbox.get()) == {"n": 1}
    # Room again once the writer took one.
    waiting = asyncio.create_task(outbox.put({"n": 4}, patience=1))
    await outbox.get()
    await outbox.get()
    await asyncio.wait_for(waiting, 1)
    assert (await outbox.get()) == {"n": 4}
