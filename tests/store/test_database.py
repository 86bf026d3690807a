"""The store: migrations build exactly the declared schema; group commit keeps its promises."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, insert, select, text

from taskorch.domain.errors import Unavailable
from taskorch.store.database import Database, Transaction
from taskorch.store.migrate import current_revision, head_revision
from taskorch.store.schema import metadata, tasks, utcnow


def _row(task_id: str) -> dict[str, object]:
    now = utcnow()
    return {
        "task_id": task_id,
        "tenant_id": "default",
        "status": 1,
        "task_type": "echo",
        "priority": 5,
        "max_attempts": 3,
        "created_at": now,
        "updated_at": now,
    }


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await database.open()
    yield database  # type: ignore[misc]
    await database.close()


def _declared(name: str | None, type_: str, parent_names: object) -> bool:
    """SQLite's FTS5 table for keyword search (and its shadow tables) is created by the
    migration outside the declared metadata (SQLAlchemy cannot declare a virtual table)."""
    return not (type_ == "table" and (name or "").startswith("collection_chunks_fts"))


def _diff(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"include_name": _declared})
    return list(compare_metadata(context, metadata))


async def test_migrations_build_exactly_the_declared_schema(db: Database) -> None:
    assert await db.read(_diff) == []
    assert await db.read(current_revision) == head_revision()


async def test_reopening_a_migrated_database_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for _ in range(2):
        database = Database(url)
        await database.open()
        assert await database.read(current_revision) == head_revision()
        await database.close()


async def test_a_failing_operation_is_rolled_back_alone(db: Database) -> None:
    def good(tx: Transaction) -> str:
        task_id = str(uuid.uuid4())
        tx.conn.execute(insert(tasks), _row(task_id))
        return task_id

    def bad(tx: Transaction) -> None:
        tx.conn.execute(insert(tasks), _row("half-written"))
        raise ValueError("changed my mind")

    def duplicate(tx: Transaction) -> None:
        tx.conn.execute(insert(tasks), _row("dup"))
        tx.conn.execute(insert(tasks), _row("dup"))

    ops = [good, bad, good, duplicate, good, bad, good]
    results = await asyncio.gather(*(db.write(op) for op in ops), return_exceptions=True)
    assert isinstance(results[1], ValueError) and isinstance(results[5], ValueError)
    assert "UNIQUE" in str(results[3])
    kept = [r for r in results if isinstance(r, str)]
    assert len(kept) == 4
    stored = await db.read(lambda c: {r[0] for r in c.execute(select(tasks.c.task_id))})
    assert stored == set(kept)


async def test_after_commit_hooks_run_in_commit_order(db: Database) -> None:
    seen: list[int] = []

    def op(n: int):  # type: ignore[no-untyped-def]
        def run(tx: Transaction) -> int:
            tx.conn.execute(insert(tasks), _row(str(uuid.uuid4())))
            tx.after_commit(lambda: seen.append(n))
            return n

        return run

    results = await asyncio.gather(*(db.write(op(n)) for n in range(100)))
    assert results == list(range(100))
    assert seen == list(range(100))


async def test_many_concurrent_writes_are_all_durable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    database = Database(url)
    await database.open()

    def op(tx: Transaction) -> None:
        tx.conn.execute(insert(tasks), _row(str(uuid.uuid4())))

    await asyncio.gather(*(database.write(op) for _ in range(2000)))
    await database.close()
    reopened = Database(url)
    await reopened.open()
    count = await reopened.read(
        lambda c: c.execute(select(func.count()).select_from(tasks)).scalar()
    )
    await reopened.close()
    assert count == 2000


async def test_the_write_ahead_log_is_checkpointed_as_the_writer_writes(tmp_path: Path) -> None:
    """The writer checkpoints the WAL itself (its commits may run on the event loop, where
    SQLite's automatic checkpoint would stall it): a long run of small commits leaves the
    log at about SQLite's usual few megabytes, not one frame per page ever written."""
    path = tmp_path / "db.sqlite"
    database = Database(f"sqlite:///{path}")
    await database.open()

    def op(tx: Transaction) -> None:
        tx.conn.execute(insert(tasks), _row(str(uuid.uuid4())))

    try:
        for _ in range(3000):  # one commit each: 3 pages or more, 12 KB of log or more
            await database.write(op)
        log_bytes = Path(f"{path}-wal").stat().st_size
    finally:
        await database.close()
    assert log_bytes < 8_000_000, f"the WAL grew to {log_bytes:,} bytes"


async def test_sqlite_uses_wal_and_full_sync(db: Database) -> None:
    assert await db.read(lambda c: c.execute(text("PRAGMA journal_mode")).scalar()) == "wal"
    assert await db.read(lambda c: c.execute(text("PRAGMA synchronous")).scalar()) == 2
    assert await db.read(lambda c: c.execute(text("PRAGMA foreign_keys")).scalar()) == 1


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await database.open()
    await database.close()
    with pytest.raises(Unavailable):
        await database.write(lambda tx: None)


def test_in_memory_sqlite_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="SQLite needs a file"):
        asyncio.run(Database("sqlite:///:memory:").open())


def test_unknown_backends_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        Database("mysql://root@localhost/test")


async def test_migrations_build_the_declared_schema_on_postgresql(tmp_path: Path) -> None:
    from tests import databases

    url = databases.create_postgres_database()
    try:
        database = Database(url)
        await database.open()
        assert await database.read(_diff) == []
        assert await database.read(current_revision) == head_revision()
        await database.close()
        again = Database(url)  # a second replica starting: migrations are a no-op
        await again.open()
        await again.close()
    finally:
        databases.discard(url)


async def test_a_value_the_database_refuses_fails_only_its_own_operation(tmp_path: Path) -> None:
    """On the test backend: a write whose value the database refuses (PostgreSQL refuses a NUL
    character in text; SQLite stores it) never fails the writes committed with it."""
    from tests import databases

    url = databases.new_database(tmp_path)
    database = Database(url)
    await database.open()
    try:

        def insert_task(task_type: str) -> Callable[[Transaction], str]:
            def op(tx: Transaction) -> str:
                task_id = str(uuid.uuid4())
                tx.conn.execute(insert(tasks), {**_row(task_id), "task_type": task_type})
                return task_id

            return op

        kinds = ["bad\x00kind" if i % 4 == 0 else "echo" for i in range(40)]
        results = await asyncio.gather(
            *(database.write(insert_task(kind)) for kind in kinds), return_exceptions=True
        )
        good = [r for kind, r in zip(kinds, results, strict=True) if kind == "echo"]
        assert all(isinstance(r, str) for r in good), [r for r in good if not isinstance(r, str)]
        bad = [r for kind, r in zip(kinds, results, strict=True) if kind != "echo"]
        if url.startswith("postgresql"):
            assert all(isinstance(r, Exception) for r in bad)
            assert not any(isinstance(r, Unavailable) for r in bad)
        stored = await database.read(lambda c: {r[0] for r in c.execute(select(tasks.c.task_id))})
        assert set(good) <= stored
    finally:
        await database.close()
        databases.discard(url)


async def test_exclusive_transitions_run_in_one_batch_at_a_time_on_postgresql() -> None:
    """Creates hold their tenant's quota lock until the commit, so the PostgreSQL writers run
    them in one in-flight batch at a time (the rest gather for the next one) while other
    transitions still commit in concurrent batches; none is lost, even when the database
    closes with some deferred."""
    from dataclasses import dataclass
    from typing import ClassVar

    from tests import databases

    @dataclass(frozen=True)
    class Exclusive:
        n: int
        exclusive: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Plain:
        n: int

    url = databases.create_postgres_database()
    database = Database(url, transition_writers=4)
    in_flight = {"exclusive": 0, "plain": 0}
    most = {"exclusive": 0, "plain": 0}
    batches_with: list[int] = []

    async def runner(q: object, changes: object, ops: object) -> None:
        kinds = {"exclusive" if isinstance(op.value, Exclusive) else "plain" for op in ops}  # type: ignore[attr-defined]
        for kind in kinds:
            in_flight[kind] += 1
            most[kind] = max(most[kind], in_flight[kind])
        if "exclusive" in kinds:
            batches_with.append(sum(isinstance(op.value, Exclusive) for op in ops))  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)  # the batch's statements and commit
        for op in ops:  # type: ignore[attr-defined]
            op.result = op.value.n
        for kind in kinds:
            in_flight[kind] -= 1

    try:
        await database.open()
        database.hot_runner = runner  # type: ignore[assignment]
        futures = []
        for wave in range(10):
            futures += [database.transition(Exclusive(wave * 10 + i)) for i in range(10)]
            futures += [database.transition(Plain(1000 + wave * 10 + i)) for i in range(10)]
            await asyncio.sleep(0.005)
        last = [database.transition(Exclusive(500 + i)) for i in range(20)]
        await database.close()  # the last ones are still deferred: close runs them
        results = await asyncio.gather(*futures, *last)
        expected = [w * 10 + i for w in range(10) for i in range(10)]
        assert sorted(r for r in results if r < 1000) == sorted(
            expected + [500 + i for i in range(20)]
        )
        assert most["exclusive"] == 1
        assert most["plain"] > 1, "other transitions kept their concurrent writers"
        assert max(batches_with) > 1, "deferred creates gathered into one batch"
    finally:
        databases.drop_postgres_database(url)
