"""Change notices for other replicas (PostgreSQL NOTIFY), sent inside the transaction that
makes the change, so they are delivered exactly when it commits (and never if it rolls back).

Payloads stay small: what changed and where to read it; the data itself is in the tables.
Every process has a node id so it can ignore its own notices (it published locally).

    e|NODE|TASK_ID|SEQUENCE      a task event was stored
    w|NODE                       work became runnable
    s|NODE|WORKER|SUBTASK|LEASE  a worker should stop a subtask
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, text

CHANNEL = "taskorch"
NODE_ID = uuid.uuid4().hex[:12]

_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def _send(conn: Connection, payload: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


def event_stored(conn: Connection, task_id: str, sequence: int) -> None:
    _send(conn, f"e|{NODE_ID}|{task_id}|{sequence}")


def work_ready(conn: Connection) -> None:
    _send(conn, f"w|{NODE_ID}")


def worker_stop(conn: Connection, worker_id: str, subtask_id: str, lease_id: str) -> None:
    _send(conn, f"s|{NODE_ID}|{worker_id}|{subtask_id}|{lease_id}")
