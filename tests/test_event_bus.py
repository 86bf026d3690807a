"""The in-process event bus: fan-out, bounded buffers, and what overflow does."""

from __future__ import annotations

import pytest

from taskorch.events.bus import EventBus, SubscriptionLagged


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus: EventBus[int] = EventBus()
    first, second = bus.subscribe("t"), bus.subscribe("t")
    for n in range(5):
        bus.publish("t", n)
    assert [await first.get(0.1) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert [await second.get(0.1) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert await first.get(0.01) is None


async def test_overflow_marks_the_subscriber_lagged_and_spares_the_others() -> None:
    bus: EventBus[int] = EventBus()
    slow = bus.subscribe("t", buffer=3)
    fast = bus.subscribe("t", buffer=100)
    for n in range(10):
        bus.publish("t", n)  # never blocks, whatever the subscribers do
    with pytest.raises(SubscriptionLagged):
        await slow.get(0.1)
    bus.publish("t", 10)
    assert await slow.get(0.1) == 10  # live again after the lag was reported
    assert [await fast.get(0.1) for _ in range(11)] == list(range(11))


async def test_topics_are_separate_and_closing_unsubscribes() -> None:
    bus: EventBus[str] = EventBus()
    async with bus.subscribe("a") as a:
        b = bus.subscribe("b")
        bus.publish("a", "for a")
        assert await a.get(0.1) == "for a"
        assert await b.get(0.01) is None
        assert bus.subscriber_count("a") == 1
    assert bus.subscriber_count("a") == 0
