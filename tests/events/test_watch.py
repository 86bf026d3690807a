"""The one watch loop (events/watch.py) on its own: a fake store and a real bus show that it
yields every event once, in order, whatever arrives live (late, early, twice, not at all)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import pytest

from taskorch.events import watch
from taskorch.events.bus import EventBus


@dataclass(frozen=True)
class Event:
    sequence: int
    last: bool = False


class Stream:
    """A stored stream and its topic on a bus: ``store`` stores, ``publish`` publishes."""

    def __init__(self, stored: int = 0) -> None:
        self.bus: EventBus[Event] = EventBus()
        self.stored = [Event(n) for n in range(1, stored + 1)]
        self.replays: list[int] = []

    def store(self, *events: Event) -> None:
        self.stored += events

    def publish(self, *events: Event) -> None:
        for event in events:
            self.bus.publish("s", event)

    async def replay(self, after: int) -> AsyncGenerator[Event, None]:
        self.replays.append(after)
        for event in self.stored:
            if event.sequence > after:
                yield event

    def follow(
        self, *, snapshot: bool = True, after: int = 0, recheck: float = 5.0
    ) -> AsyncGenerator[Event, None]:
        async def read() -> Event | None:
            return Event(len(self.stored)) if snapshot else None

        return watch.follow(
            self.bus.subscribe("s", buffer=4),
            read,
            self.replay,
            after_sequence=after,
            is_terminal=lambda event: event.last,
            recheck_seconds=recheck,
        )


async def _take(events: AsyncIterator[Event], count: int) -> list[int]:
    return [(await asyncio.wait_for(anext(events), 2)).sequence for _ in range(count)]


async def test_snapshot_then_live_events_in_order_until_the_terminal_one() -> None:
    stream = Stream(stored=2)
    events = stream.follow()
    assert await _take(events, 1) == [2]  # the snapshot: the state after event 2
    stream.store(Event(3), Event(4, last=True))
    stream.publish(Event(3), Event(4, last=True))
    assert [e.sequence async for e in events] == [3, 4]
    assert stream.replays == []  # everything came live
    assert stream.bus.subscriber_count("s") == 0  # the subscription ended with the stream


async def test_resuming_replays_the_stored_events_after_the_last_one_seen() -> None:
    stream = Stream(stored=5)
    events = stream.follow(snapshot=False, after=3)
    assert await _take(events, 2) == [4, 5]
    stream.store(Event(6, last=True))
    stream.publish(Event(6, last=True))
    assert [e.sequence async for e in events] == [6]
    assert stream.replays == [3]


async def test_duplicates_are_dropped_and_a_gap_is_read_from_the_store() -> None:
    stream = Stream(stored=1)
    events = stream.follow()
    assert await _take(events, 1) == [1]
    stream.store(Event(2), Event(3), Event(4))
    stream.publish(Event(1), Event(2), Event(2), Event(4))  # 1 and 2 again; 3 missing
    assert await _take(events, 3) == [2, 3, 4]
    assert stream.replays == [2]  # 4 came after a gap: 3 and 4 read from the store
    stream.store(Event(5, last=True))
    stream.publish(Event(4), Event(5, last=True))
    assert [e.sequence async for e in events] == [5]


async def test_a_lagged_subscription_replays_what_it_missed() -> None:
    stream = Stream(stored=0)
    events = stream.follow()
    assert await _take(events, 1) == [0]
    stream.store(*(Event(n) for n in range(1, 11)))
    stream.publish(*(Event(n) for n in range(1, 11)))  # more than its buffer of 4
    assert await _take(events, 10) == list(range(1, 11))
    assert stream.replays == [0]  # the overflow emptied its buffer: all from the store
    await events.aclose()


async def test_a_quiet_stream_is_read_again_from_the_store() -> None:
    """An event stored but never published here (another replica's, its notice lost)."""
    stream = Stream(stored=1)
    events = stream.follow(recheck=0.05)
    assert await _take(events, 1) == [1]
    stream.store(Event(2, last=True))
    assert [e.sequence async for e in events] == [2]


async def test_a_terminal_snapshot_ends_the_stream_at_once() -> None:
    stream = Stream(stored=0)

    async def ended() -> Event | None:
        return Event(7, last=True)

    events = watch.follow(
        stream.bus.subscribe("s"),
        ended,
        stream.replay,
        after_sequence=0,
        is_terminal=lambda event: event.last,
    )
    assert [e.sequence async for e in events] == [7]


async def test_an_error_of_the_read_reaches_the_watcher_and_unsubscribes() -> None:
    stream = Stream()

    async def missing() -> Event | None:
        raise LookupError("no such stream")

    subscription = stream.bus.subscribe("s")
    events = watch.follow(
        subscription, missing, stream.replay, after_sequence=0, is_terminal=lambda e: e.last
    )
    with pytest.raises(LookupError):
        await anext(events)
    assert subscription.closed
