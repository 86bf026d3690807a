"""Where committed events go: task and chat watchers (through the buses), listeners such as
metrics, and the signal that wakes idle workers when new work is queued.

Events of other replicas arrive here too: events/postgres.py reads what their notices point
at and :meth:`EventHub.relay` / :meth:`EventHub.relay_chat` hand it to the watchers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from taskorch.domain.chat_values import ChatEvent
from taskorch.domain.leases import StopNotice
from taskorch.domain.values import Status, Subtask, TaskEvent
from taskorch.events.bus import DEFAULT_BUFFER, EventBus, Subscription

log = structlog.get_logger(__name__)


class WorkSignal:
    """Wakes every waiter when work may have become runnable (a broadcast, not a queue).

    A taker takes a :meth:`ticket` BEFORE it looks for work and, finding none, waits on that
    ticket: work queued while it was looking has already set it, so that wake-up is not lost
    (waiting on whatever notify comes next would sleep through it until the timeout).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Calls ``listener`` on every notify (the task engine wakes its parked takers)."""
        self._listeners.append(listener)

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()
        for listener in self._listeners:
            listener()

    def ticket(self) -> asyncio.Event:
        """The event the next :meth:`notify` sets."""
        return self._event

    async def wait(self, timeout: float, ticket: asyncio.Event | None = None) -> bool:
        """True if notified (since ``ticket`` was taken, if given) within ``timeout`` s."""
        event = ticket if ticket is not None else self._event
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True)
class TenantTopic:
    """The bus topic of all of one tenant's task events (``None``: every tenant's)."""

    tenant_id: str | None


class EventHub:
    """Publishes committed task and chat events. Call :meth:`publish` and
    :meth:`publish_chat` only after the commit (the store has the events first, so a
    watcher can replay what it missed)."""

    def __init__(
        self, bus: EventBus[TaskEvent] | None = None, *, watch_buffer: int = DEFAULT_BUFFER
    ) -> None:
        self.bus: EventBus[TaskEvent] = bus or EventBus()
        self.watch_buffer = watch_buffer
        # Stop notices for remote workers' streams, by worker id.
        self.stops: EventBus[StopNotice] = EventBus()
        self.work = WorkSignal()
        # Chat sessions' events, by session id.
        self.chat: EventBus[ChatEvent] = EventBus()
        self._listeners: list[Callable[[TaskEvent], None]] = []

    def add_listener(self, listener: Callable[[TaskEvent], None]) -> None:
        self._listeners.append(listener)

    def publish(self, event: TaskEvent) -> None:
        self.relay(event)
        self._tell_listeners([event])

    def publish_all(self, events: Sequence[TaskEvent]) -> None:
        """A batch's events: its watchers first, the listeners (metrics) after the watchers'
        streams and the batch's callers (answered right after this) have had their turn on
        the loop: off the path of the event and of the answer."""
        for event in events:
            self.relay(event)
        if events and self._listeners:
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._tell_listeners, events)

    def _tell_listeners(self, events: Sequence[TaskEvent]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed", task_id=event.task_id)

    def relay(self, event: TaskEvent) -> None:
        """Hands ``event`` to its watchers only (another replica's event: its listeners, the
        metrics, ran there)."""
        self.bus.publish(event.task_id, event)
        # Watchers of every task of a tenant (the WebSocket's "all my tasks"), and of every
        # tenant (an admin's): a dictionary look-up each when nobody watches.
        self.bus.publish(TenantTopic(event.tenant_id), event)
        self.bus.publish(TenantTopic(None), event)

    def watches_tenants(self) -> bool:
        """Whether someone here follows whole tenants (then every event is of interest)."""
        return any(isinstance(topic, TenantTopic) for topic in self.bus.topics())

    def subscribe(self, task_id: str) -> Subscription[TaskEvent]:
        return self.bus.subscribe(task_id, buffer=self.watch_buffer)

    def subscribe_tenant(self, tenant_id: str | None) -> Subscription[TaskEvent]:
        """Every task event of one tenant (None: of every tenant), as published here."""
        return self.bus.subscribe(TenantTopic(tenant_id), buffer=self.watch_buffer)

    def publish_chat(self, events: Iterable[ChatEvent]) -> None:
        """Hands committed chat events to their sessions' watchers (here; the store's notice
        takes them to other replicas)."""
        for event in events:
            self.chat.publish(event.session_id, event)

    def relay_chat(self, event: ChatEvent) -> None:
        """Hands another replica's chat event to its session's watchers here."""
        self.chat.publish(event.session_id, event)

    def subscribe_chat(self, session_id: str) -> Subscription[ChatEvent]:
        return self.chat.subscribe(session_id, buffer=self.watch_buffer)

    def stop_workers(self, ended: Iterable[Subtask], reason: str) -> None:
        """After a commit that ended running subtasks: tell the workers that held them."""
        for subtask in ended:
            if subtask.status is Status.RUNNING and subtask.worker_id and subtask.lease_id:
                notice = StopNotice(subtask.worker_id, subtask.subtask_id, subtask.lease_id, reason)
                self.stops.publish(subtask.worker_id, notice)
