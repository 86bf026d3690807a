"""Change notices for other replicas (PostgreSQL NOTIFY), sent inside the transaction that
makes the change, so they are delivered exactly when it commits (and never if it rolls back).

The store says which change happened; what the notice says is events/notify.py, the one
place of the payload format, which a replica's listener installs here (:func:`use`) when it
starts to hear the others. Until then (a store used without events, in a tool or a test) nothing is
sent: notices only speed up other replicas, whose watchers re-read the store anyway.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Connection, text


class PayloadFormat(Protocol):
    """The notices the store sends (implemented by events/notify.py)."""

    channel: str

    def event_stored(self, task_id: str, sequence: int) -> str: ...

    def events_stored(self, first_id: int, last_id: int) -> str: ...

    def work_ready(self) -> str: ...

    def worker_stop(self, worker_id: str, subtask_id: str, lease_id: str) -> str: ...

    def chat_events_stored(self, session_id: str, first: int, last: int, tenant_id: str) -> str: ...


_format: PayloadFormat | None = None

_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def use(payload_format: PayloadFormat) -> None:
    global _format
    _format = payload_format


def installed() -> PayloadFormat | None:
    """The installed format (None: notices are not sent)."""
    return _format


def _send(conn: Connection, payload: str) -> None:
    assert _format is not None
    conn.execute(_NOTIFY, {"channel": _format.channel, "payload": payload})


def _sends(conn: Connection) -> PayloadFormat | None:
    return _format if conn.dialect.name == "postgresql" else None


def event_stored(conn: Connection, task_id: str, sequence: int) -> None:
    if payload_format := _sends(conn):
        _send(conn, payload_format.event_stored(task_id, sequence))


def work_ready(conn: Connection) -> None:
    if payload_format := _sends(conn):
        _send(conn, payload_format.work_ready())


def worker_stop(conn: Connection, worker_id: str, subtask_id: str, lease_id: str) -> None:
    if payload_format := _sends(conn):
        _send(conn, payload_format.worker_stop(worker_id, subtask_id, lease_id))


def chat_events_stored(
    conn: Connection, session_id: str, first: int, last: int, tenant_id: str
) -> None:
    if payload_format := _sends(conn):
        _send(conn, payload_format.chat_events_stored(session_id, first, last, tenant_id))
