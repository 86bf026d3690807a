"""PostgreSQL: a batch's BEGIN travels with its first statement (store/queue/postgres.py's
Transaction), a round trip less for every create (its first statement is the quota lock),
and with room under the quota the check travels with them too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from taskorch.store.database import Database
from taskorch.store.queue.postgres import PostgresQueue, PostgresWriter, Transaction
from tests import databases


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    url = databases.create_postgres_database()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        yield connection
    finally:
        await connection.close()
        databases.discard(url)


class Recorded:
    """The connection, recording the messages sent through it (one per round trip)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.messages: list[str] = []

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.conn, name)

        def recording(query: str, *args: Any) -> Any:
            self.messages.append(query)
            return real(query, *args)

        return recording


# This connection's only: tests running beside it (pytest -n) hold advisory locks of their own.
OWN_ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
)


async def test_a_plain_first_statement_carries_the_begin(
    conn: asyncpg.Connection,
) -> None:
    recorded = Recorded(conn)
    tx = Transaction(recorded)  # type: ignore[arg-type]
    await tx.execute("SELECT pg_advisory_xact_lock(42)")
    assert recorded.messages == ["BEGIN; SELECT pg_advisory_xact_lock(42)"]
    assert conn.is_in_transaction()
    assert await tx.fetchval(OWN_ADVISORY_LOCKS) == 1
    await tx.execute("COMMIT")
    assert not conn.is_in_transaction()
    assert await conn.fetchval(OWN_ADVISORY_LOCKS) == 0


async def test_a_first_statement_with_parameters_is_preceded_by_the_begin(
    conn: asyncpg.Connection,
) -> None:
    recorded = Recorded(conn)
    tx = Transaction(recorded)  # type: ignore[arg-type]
    assert await tx.fetchval("SELECT $1::int + 1", 1) == 2
    assert recorded.messages == ["BEGIN", "SELECT $1::int + 1"]
    assert conn.is_in_transaction() and tx.begun
    await tx.execute("ROLLBACK")


async def test_a_failing_first_statement_leaves_a_transaction_to_roll_back(
    conn: asyncpg.Connection,
) -> None:
    """What the writer does after a failed statement (ROLLBACK) ends what BEGIN began."""
    tx = Transaction(conn)
    with pytest.raises(asyncpg.PostgresError):
        await tx.execute("SELECT 1 / 0")
    assert tx.begun and conn.is_in_transaction()
    await conn.execute("ROLLBACK")
    assert not conn.is_in_transaction()


async def test_a_batch_that_runs_no_statement_sends_nothing(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Recorded(conn)
    writer = PostgresWriter("unused: the connection is the recorded one")

    async def connection() -> Any:
        return recorded

    async def nothing(queue: Any, changes: Any, batch: Any) -> None:
        return None

    monkeypatch.setattr(writer, "_connection", connection)
    await writer.commit(nothing, [])
    assert recorded.messages == []


async def test_a_quota_with_room_is_checked_in_the_message_that_takes_the_tenant_lock() -> None:
    """A create's quota check (PostgresQueue.active_tasks): with room for the batch's tasks
    the check travels with BEGIN and the tenant's lock, one message; near the quota the
    check fails inside a savepoint and the count is read, exact, the transaction still
    usable; the tenant's lock is held either way."""
    url = databases.create_postgres_database()
    database = Database(url)
    await database.open()  # the schema
    conn = await asyncpg.connect(database.dsn, timeout=5)
    try:
        await conn.execute(
            "INSERT INTO task_counts (tenant_id, status, task_type, model_name, template, count) "
            "VALUES ('acme', 1, 'echo', '', '', 2), ('acme', 2, 'echo', '', '', 1), "
            "('acme', 3, 'echo', '', '', 50), ('other', 1, 'echo', '', '', 9)"
        )
        await conn.execute(
            "INSERT INTO task_count_deltas (tenant_id, status, task_type, model_name, template, "
            "delta) VALUES ('acme', 1, 'echo', '', '', 1)"
        )
        recorded = Recorded(conn)
        queue = PostgresQueue(Transaction(recorded))  # type: ignore[arg-type]
        assert await queue.active_tasks("acme", 4) == 4  # 4 active: room for none more
        assert len(recorded.messages) == 1 and recorded.messages[0].startswith("BEGIN; ")
        assert await conn.fetchval(OWN_ADVISORY_LOCKS) == 1
        recorded.messages.clear()
        assert await queue.active_tasks("acme", 3) == 4  # more than 3: counted
        failed, rolled_back, count = recorded.messages
        assert "SAVEPOINT quota" in failed
        assert rolled_back == "ROLLBACK TO SAVEPOINT quota; RELEASE SAVEPOINT quota"
        assert "task_count_deltas" in count and "$1" in count
        assert await queue.active_tasks("acme") == 4  # no room asked for: counted
        assert conn.is_in_transaction() and await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval(OWN_ADVISORY_LOCKS) == 1
        await conn.execute("ROLLBACK")
        assert await conn.fetchval(OWN_ADVISORY_LOCKS) == 0
    finally:
        await conn.close()
        await database.close()
        databases.discard(url)
