"""List totals from counters: always equal to counting the rows, before and after compaction."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from taskorch.core.engine import TaskEngine
from taskorch.core.planning import Catalog, EchoPlanner, TaskSpec, TextAnalysisPlanner
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import ANONYMOUS, Caller
from taskorch.domain.leases import WorkerIdentity
from taskorch.domain.values import Status
from taskorch.events.hub import EventHub
from taskorch.store import counts
from taskorch.store.database import Database
from taskorch.store.schema import tasks
from tests import databases


def _true_count(conn, **filters):  # type: ignore[no-untyped-def]
    stmt = select(func.count()).select_from(tasks)
    for name, value in filters.items():
        stmt = stmt.where(tasks.c[name] == value)
    return conn.execute(stmt).scalar_one()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_counters_match_the_rows_through_every_change(tmp_path: Path, backend: str) -> None:
    url = databases.new_database(tmp_path, backend)
    db = Database(url)
    await db.open()
    hub = EventHub()
    scheduler = TaskEngine(db, hub)
    service = TaskService(db, hub, scheduler, Catalog([TextAnalysisPlanner(), EchoPlanner()]))
    other = Caller(tenant_id="other")
    try:
        made = await asyncio.gather(
            *(service.create(ANONYMOUS, TaskSpec(text=f"t {i}")) for i in range(30)),
            *(service.create(other, TaskSpec(task_type="echo")) for _ in range(10)),
        )
        leases = await scheduler.take(WorkerIdentity("w", ("text_analysis",)), limit=12)
        await asyncio.gather(
            *(
                scheduler.complete(lease.subtask.subtask_id, lease.lease_id, {})
                for lease in leases[:8]
            )
        )
        await asyncio.gather(*(service.cancel(ANONYMOUS, t.task_id) for t in made[20:25]))

        def compare(conn):  # type: ignore[no-untyped-def]
            checks = [
                ({"tenant_id": "default"}, {"tenant_id": "default"}),
                ({"tenant_id": None}, {}),
                ({"tenant_id": "other", "task_type": "echo"}, {"tenant_id": "other"}),
            ]
            for status in Status:
                checks.append(
                    (
                        {"tenant_id": "default", "status": int(status)},
                        {"tenant_id": "default", "status": int(status)},
                    )
                )
            return [(counts.total(conn, f), _true_count(conn, **t)) for f, t in checks]

        before = await db.read(compare)
        assert all(a == b for a, b in before), before
        folded = await db.write(lambda tx: counts.compact(tx.conn))
        assert folded > 0
        after = await db.read(compare)
        assert after == before
        by_status = await db.read(lambda conn: counts.by_status(conn, "default"))
        assert by_status[Status.COMPLETED] == 8 and by_status[Status.CANCELLED] == 5
        assert by_status[Status.RUNNING] == 4 and by_status[Status.PENDING] == 13
    finally:
        await db.close()
        databases.discard(url)


async def test_a_delta_committed_while_compacting_is_folded_later_not_lost(tmp_path: Path) -> None:
    """PostgreSQL: another writer's delta row, inserted before the compaction began but
    committed while it runs, is neither lost nor counted twice."""
    url = databases.new_database(tmp_path, "postgresql")
    db = Database(url)
    await db.open()
    hub = EventHub()
    service = TaskService(db, hub, TaskEngine(db, hub), Catalog([EchoPlanner()]))
    other = _OtherWriter(url)
    try:
        # The other writer's row gets its id first, then a task's delta (a higher id)
        # commits: the compaction sees rows on both sides of the uncommitted one.
        other.run("BEGIN")
        other.run(
            "INSERT INTO task_count_deltas (tenant_id, status, task_type, model_name, template,"
            " delta) VALUES ('default', 1, 'echo', '', '', 1)"
        )
        await service.create(ANONYMOUS, TaskSpec(task_type="echo"))
        committed = False

        def commit_the_other_writer(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            nonlocal committed
            # At the compaction's first statement over the deltas: a sum (how it used to
            # work, and lost the row) or the DELETE ... RETURNING (how it works now).
            reads_deltas = "task_count_deltas" in statement and (
                "sum(" in statement or statement.lstrip().upper().startswith("DELETE")
            )
            if reads_deltas and not committed:
                committed = True
                other.run("COMMIT")

        assert db._async_engine is not None
        engine = db._async_engine.sync_engine
        event.listen(engine, "after_cursor_execute", commit_the_other_writer)
        await db.write(lambda tx: counts.compact(tx.conn))
        event.remove(engine, "after_cursor_execute", commit_the_other_writer)
        assert committed
        await db.write(lambda tx: counts.compact(tx.conn))
        pending = await db.read(lambda conn: counts.by_status(conn, "default")[Status.PENDING])
        assert pending == 2  # the task, and the other writer's +1
    finally:
        other.close()
        await db.close()
        databases.discard(url)


async def test_a_compaction_between_reads_does_not_change_a_total(tmp_path: Path) -> None:
    """PostgreSQL: a compaction that commits while a total or the by-status counts are being
    read moves deltas into task_counts; the reader must count each of them exactly once."""
    url = databases.new_database(tmp_path, "postgresql")
    db = Database(url)
    await db.open()
    hub = EventHub()
    service = TaskService(db, hub, TaskEngine(db, hub), Catalog([EchoPlanner()]))
    other = _OtherWriter(url)
    compacted = False

    def compact_after_the_first_read(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        nonlocal compacted
        if not compacted and "task_counts" in statement:
            compacted = True
            other.run(
                "BEGIN;"
                " INSERT INTO task_counts (tenant_id, status, task_type, model_name, template,"
                " count) SELECT tenant_id, status, task_type, model_name, template, sum(delta)"
                " FROM task_count_deltas GROUP BY tenant_id, status, task_type, model_name,"
                " template ON CONFLICT (tenant_id, status, task_type, model_name, template)"
                " DO UPDATE SET count = task_counts.count + excluded.count;"
                " DELETE FROM task_count_deltas; COMMIT"
            )

    try:
        await asyncio.gather(
            *(service.create(ANONYMOUS, TaskSpec(task_type="echo")) for _ in range(5))
        )
        assert db._async_engine is not None
        engine = db._async_engine.sync_engine
        event.listen(engine, "after_cursor_execute", compact_after_the_first_read)
        total = await db.read(lambda conn: counts.total(conn, {"tenant_id": "default"}))
        assert compacted and total == 5
        await service.create(ANONYMOUS, TaskSpec(task_type="echo"))  # a delta again
        compacted = False
        pending = await db.read(lambda conn: counts.by_status(conn, "default")[Status.PENDING])
        event.remove(engine, "after_cursor_execute", compact_after_the_first_read)
        assert compacted and pending == 6
    finally:
        other.close()
        await db.close()
        databases.discard(url)


class _OtherWriter:
    """A second PostgreSQL session on a thread of its own, to interleave with a compaction."""

    def __init__(self, url: str) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = self._wait(asyncpg.connect(dsn, timeout=5))

    def _wait(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def run(self, sql: str) -> None:
        self._wait(self.conn.execute(sql))

    def close(self) -> None:
        self._wait(self.conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
