"""The payload format of the change notices replicas send each other (PostgreSQL NOTIFY).

The store sends a notice inside the transaction that makes the change, so it is delivered
exactly when that commits (and never if it rolls back); it asks this module what the notice
says (store/notices.py; :func:`install` plugs this format in, which a replica's listener
does, so the store never imports events). The listener
(events/postgres.py) parses it with :func:`parse`.

Payloads stay small and bounded, whatever the change: what changed and where to read it;
the data itself (an event's output delta, a chat reply's tokens) is in the tables, and the
listener reads it from there. Every process has a node id so it can ignore its own notices
(it published locally).

    e|NODE|TASK_ID|SEQUENCE                   a task event was stored
    b|NODE|FIRST_ID|LAST_ID                   the task engine stored events FIRST_ID..LAST_ID
    w|NODE                                    work became runnable
    s|NODE|WORKER|SUBTASK|LEASE               a worker should stop a subtask
    c|NODE|SESSION_ID|FIRST|LAST|TENANT       chat events FIRST..LAST of a session were stored
                                              (none stored: the session was deleted, FIRST is
                                              the deletion's sequence number)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from taskorch.store import notices

CHANNEL = "taskorch"
NODE_ID = uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class TaskEventStored:
    task_id: str
    sequence: int


@dataclass(frozen=True)
class TaskEventsStored:
    """Events of the task engine's batch, by their ids in the event table."""

    first_id: int
    last_id: int


@dataclass(frozen=True)
class WorkReady:
    pass


@dataclass(frozen=True)
class WorkerStop:
    worker_id: str
    subtask_id: str
    lease_id: str


@dataclass(frozen=True)
class ChatEventsStored:
    session_id: str
    first: int
    last: int
    tenant_id: str


Notice = TaskEventStored | TaskEventsStored | WorkReady | WorkerStop | ChatEventsStored


class PayloadFormat:
    """What each notice says: the store calls these (store/notices.py)."""

    channel = CHANNEL

    def event_stored(self, task_id: str, sequence: int) -> str:
        return f"e|{NODE_ID}|{task_id}|{sequence}"

    def events_stored(self, first_id: int, last_id: int) -> str:
        return f"b|{NODE_ID}|{first_id}|{last_id}"

    def work_ready(self) -> str:
        return f"w|{NODE_ID}"

    def worker_stop(self, worker_id: str, subtask_id: str, lease_id: str) -> str:
        return f"s|{NODE_ID}|{worker_id}|{subtask_id}|{lease_id}"

    def chat_events_stored(self, session_id: str, first: int, last: int, tenant_id: str) -> str:
        # The tenant last: the one field that is not an id or a number of ours.
        return f"c|{NODE_ID}|{session_id}|{first}|{last}|{tenant_id}"


FORMAT = PayloadFormat()


def install() -> None:
    """Makes the store send notices in this format (idempotent; the listener does it)."""
    notices.use(FORMAT)


def parse(payload: str) -> Notice | None:
    """The notice another replica sent; None for our own, and for one this version does
    not know (a newer replica's), which is ignored."""
    parts = payload.split("|", 5)
    if len(parts) < 2 or parts[1] == NODE_ID:
        return None
    kind, fields = parts[0], parts[2:]
    try:
        if kind == "e" and len(fields) == 2:
            return TaskEventStored(fields[0], int(fields[1]))
        if kind == "b" and len(fields) == 2:
            return TaskEventsStored(int(fields[0]), int(fields[1]))
        if kind == "w":
            return WorkReady()
        if kind == "s" and len(fields) == 3:
            return WorkerStop(*fields)
        if kind == "c" and len(fields) == 4:
            return ChatEventsStored(fields[0], int(fields[1]), int(fields[2]), fields[3])
    except ValueError:
        return None
    return None
