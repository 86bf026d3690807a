"""Events across replicas: LISTEN to the notices other replicas send at commit
(events/notify.py) and replay them into this process's hub.

A notice of a task event is followed only when someone here watches that task, a notice of
chat events only when someone here watches that session: the events are read from the
store and published, so a watcher on replica B sees what a worker reported (or a reply
generated) through replica A within milliseconds. Work notices wake this replica's idle
takers (in-process workers, Listen streams) instead of leaving them to poll; stop notices
reach the streams of workers connected here. If the listening connection drops (the
database restarted), it reconnects by itself; watchers meanwhile fall back on re-reading
the store every few seconds, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.engine import make_url

from taskorch.domain.chat_values import ChatEvent, ChatEventType
from taskorch.domain.leases import StopNotice
from taskorch.events import notify
from taskorch.events.hub import EventHub
from taskorch.store import chat as chat_store
from taskorch.store import tasks as task_store
from taskorch.store.database import Database
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)


class PostgresListener:
    def __init__(self, db: Database, hub: EventHub) -> None:
        self.db = db
        self.hub = hub
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # A replica that hears the others tells them of its own changes, in the same format.
        notify.install()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="postgres-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._pending):
            task.cancel()

    async def _listen_forever(self) -> None:
        import asyncpg

        dsn = make_url(self.db.url).set(drivername="postgresql").render_as_string(False)
        backoff = 0.5
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(dsn, timeout=10)
                await connection.add_listener(notify.CHANNEL, self._on_notice)
                self.connected.set()
                backoff = 0.5
                log.info("listening for other replicas' changes")
                while not connection.is_closed():
                    await asyncio.sleep(5)
                    await connection.execute("SELECT 1")  # notices a dead connection
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected.is_set():
                    log.warning("lost the notification connection; reconnecting", error=str(exc))
            finally:
                self.connected.clear()
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _on_notice(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        hub = self.hub
        match notify.parse(payload):  # None: our own change, already published here
            case notify.WorkReady():
                hub.work.notify()
            case notify.TaskEventStored(task_id, sequence):
                if hub.bus.subscriber_count(task_id) or hub.watches_tenants():
                    self._spawn(self._replay(task_id, sequence))
            case notify.TaskEventsStored(first_id, last_id):
                # A batch of the task engine stored events first..last: read the watched ones.
                if hub.bus.topics():
                    self._spawn(self._replay_span(first_id, last_id))
            case notify.WorkerStop(worker_id, subtask_id, lease_id):
                stop = StopNotice(worker_id, subtask_id, lease_id, "task cancelled")
                hub.stops.publish(worker_id, stop)
            case notify.ChatEventsStored() as chat:
                if hub.chat.subscriber_count(chat.session_id):
                    self._spawn(self._replay_chat(chat))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _replay_span(self, first: int, last: int) -> None:
        # Every event of the span when whole tenants are followed here, else the watched tasks'.
        watched = None if self.hub.watches_tenants() else self.hub.bus.topics()
        try:
            events = await self.db.read(
                lambda conn: task_store.events_between(conn, first, last, watched)
            )
            ended = [e.task_id for e in events if e.is_terminal]
            tasks = {}
            if ended:
                found = await self.db.read(lambda conn: task_store.get_tasks(conn, None, ended))
                tasks = {t.task_id: t for t in found}
            for event in events:
                if event.is_terminal:
                    event = replace(event, task=tasks.get(event.task_id))
                self.hub.relay(event)
        except Exception as exc:  # watchers re-read the store on their own
            log.debug("could not replay notified events", error=str(exc))

    async def _replay(self, task_id: str, sequence: int) -> None:
        try:
            events = await self.db.read(
                lambda conn: task_store.events_after(conn, task_id, sequence - 1, limit=1)
            )
            if not events:
                return
            event = events[0]
            if event.is_terminal:
                task = await self.db.read(lambda conn: task_store.get_task(conn, None, task_id))
                event = replace(event, task=task)
            self.hub.relay(event)
        except Exception as exc:  # watchers re-read the store on their own
            log.debug("could not replay a notified event", error=str(exc))

    async def _replay_chat(self, notice: notify.ChatEventsStored) -> None:
        try:
            span = notice.last - notice.first + 1
            events = await self.db.read(
                lambda conn: chat_store.events_after(
                    conn, notice.session_id, notice.first - 1, limit=span
                )
            )
            if not events:
                # None stored: the session was deleted (its events went with it).
                exists = await self.db.read(
                    lambda conn: chat_store.get_session(conn, None, notice.session_id)
                )
                if exists is None:
                    events = [_session_deleted(notice)]
            for event in events:
                self.hub.relay_chat(event)
        except Exception as exc:  # watchers re-read the store on their own
            log.debug("could not replay notified chat events", error=str(exc))


def _session_deleted(notice: notify.ChatEventsStored) -> ChatEvent:
    return ChatEvent(
        session_id=notice.session_id,
        tenant_id=notice.tenant_id,
        sequence=notice.first,
        type=ChatEventType.SESSION_DELETED,
        created_at=utcnow(),
    )
