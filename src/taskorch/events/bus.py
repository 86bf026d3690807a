"""In-process fan-out of committed events to the streams watching them.

Events are stored before they are published (see core/), so the bus may drop what a slow
subscriber cannot take: each subscription has a bounded buffer, and when it overflows the
buffer is emptied and the subscription is marked *lagged*. Its reader then gets
:class:`SubscriptionLagged`, replays what it missed from the store (after the last sequence
number it saw) and carries on. A slow watcher therefore never blocks the publisher, the
worker or other watchers, and never silently misses an event.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

E = TypeVar("E")

DEFAULT_BUFFER = 1024


class SubscriptionLagged(Exception):
    """The subscriber fell more than its buffer behind; replay from the store."""


class Subscription(Generic[E]):
    """One subscriber's view of one topic. Use as an async context manager."""

    def __init__(self, bus: EventBus[E], topic: Hashable, buffer: int) -> None:
        self._bus = bus
        self.topic = topic
        self._buffer: deque[E] = deque()
        self._capacity = buffer
        self._ready = asyncio.Event()
        self._lagged = False
        self.closed = False

    def _offer(self, event: E) -> None:
        if self._lagged:
            return
        if len(self._buffer) >= self._capacity:
            self._buffer.clear()
            self._lagged = True
        else:
            self._buffer.append(event)
        self._ready.set()

    async def get(self, timeout: float | None = None) -> E | None:
        """The next event, or None after ``timeout`` seconds without one.

        Raises:
            SubscriptionLagged: events were dropped; the buffer is empty again afterwards.
        """
        while not self._buffer:
            if self._lagged:
                self._lagged = False
                raise SubscriptionLagged(str(self.topic))
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._buffer.popleft()

    async def wait(self, timeout: float | None = None) -> bool:
        """Waits, consuming nothing, until an event (or a lag) is pending; False on timeout."""
        if self._buffer or self._lagged:
            return True
        self._ready.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription[E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventBus(Generic[E]):
    """Topic-keyed fan-out. ``publish`` never blocks and never fails."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[Hashable, set[Subscription[E]]] = defaultdict(set)

    def subscribe(self, topic: Hashable, *, buffer: int = DEFAULT_BUFFER) -> Subscription[E]:
        subscription = Subscription(self, topic, buffer)
        self._subscribers[topic].add(subscription)
        return subscription

    def publish(self, topic: Hashable, event: E) -> None:
        for subscription in self._subscribers.get(topic, ()):
            subscription._offer(event)

    def topics(self) -> list[Hashable]:
        """The topics that have subscribers."""
        return list(self._subscribers)

    def subscriber_count(self, topic: Hashable) -> int:
        return len(self._subscribers.get(topic, ()))

    def _unsubscribe(self, subscription: Subscription[E]) -> None:
        subscribers = self._subscribers.get(subscription.topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.topic]
