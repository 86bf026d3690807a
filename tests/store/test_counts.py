"""List totals from counters: always equal to counting the rows, before and after compaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from taskorch.core.caller import ANONYMOUS, Caller
from taskorch.core.hub import EventHub
from taskorch.core.model import Status
from taskorch.core.planning import Catalog, EchoPlanner, TaskSpec, TextAnalysisPlanner
from taskorch.core.scheduler import Scheduler, WorkerIdentity
from taskorch.core.tasks import TaskService
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
    service = TaskService(db, hub, Catalog([TextAnalysisPlanner(), EchoPlanner()]))
    scheduler = Scheduler(db, hub)
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
