"""Where committed task events go: watchers (through the bus), listeners such as metrics,
and the signal that wakes idle workers when new work is queued."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from taskorch.core.model import TaskEvent
from taskorch.events.bus import DEFAULT_BUFFER, EventBus, Subscription

log = structlog.get_logger(__name__)


class WorkSignal:
    """Wakes every waiter when work may have become runnable (a broadcast, not a queue)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True if notified within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class EventHub:
    """Publishes committed task events. Call :meth:`publish` only after the commit."""

    def __init__(
        self, bus: EventBus[TaskEvent] | None = None, *, watch_buffer: int = DEFAULT_BUFFER
    ) -> None:
        self.bus: EventBus[TaskEvent] = bus or EventBus()
        self.watch_buffer = watch_buffer
        self.work = WorkSignal()
        self._listeners: list[Callable[[TaskEvent], None]] = []

    def add_listener(self, listener: Callable[[TaskEvent], None]) -> None:
        self._listeners.append(listener)

    def publish(self, event: TaskEvent) -> None:
        self.bus.publish(event.task_id, event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed", task_id=event.task_id)

    def subscribe(self, task_id: str) -> Subscription[TaskEvent]:
        return self.bus.subscribe(task_id, buffer=self.watch_buffer)
