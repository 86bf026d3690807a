"""The watch loop against a real SQLite store: a lagged subscriber replays from the store."""

from __future__ import annotations

from pathlib import Path

from taskorch.core.engine import TaskEngine
from taskorch.core.planning import Catalog, EchoPlanner, TaskSpec
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import ANONYMOUS
from taskorch.domain.leases import WorkerIdentity
from taskorch.events.hub import EventHub
from taskorch.store.database import Database


async def test_a_watcher_that_overflows_its_buffer_misses_nothing(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await db.open()
    hub = EventHub(watch_buffer=4)
    scheduler = TaskEngine(db, hub)
    tasks = TaskService(db, hub, scheduler, Catalog([EchoPlanner()]))
    try:
        task = await tasks.create(ANONYMOUS, TaskSpec(task_type="echo"))
        watch = tasks.watch(ANONYMOUS, task.task_id)
        snapshot = await anext(watch)
        assert snapshot.sequence == 1
        [lease] = await scheduler.take(WorkerIdentity("w1", ("echo",)))
        for percent in range(1, 41):  # 40 events while the watcher reads nothing
            await scheduler.heartbeat(lease.subtask.subtask_id, lease.lease_id, progress=percent)
        await scheduler.complete(lease.subtask.subtask_id, lease.lease_id, {"ok": True})
        events = [event async for event in watch]
    finally:
        await db.close()
    assert [e.sequence for e in events] == list(range(2, 2 + 1 + 40 + 1))
    assert events[-1].task is not None and events[-1].task.result == {"ok": True}
