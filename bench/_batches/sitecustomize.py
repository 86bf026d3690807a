"""Loaded by the server that bench/task_batches.py starts (this folder on its PYTHONPATH):
it times each SQLite batch of the database writer (its start, the end of its statements on
the event loop, the COMMIT on the writer thread with that thread's CPU, its end) and writes
the records to ``$TASKORCH_BATCHES_OUT`` (JSON) when the server exits. The batch methods are
wrapped here; nothing of this runs in a server started otherwise."""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

OUT = os.environ.get("TASKORCH_BATCHES_OUT")


def _install(out: str) -> None:
    from taskorch.store import database
    from taskorch.store.queue import sqlite

    # Per batch: start, statements done, COMMIT begins and ends on the writer thread (0
    # when the batch committed on the loop), the writer thread's CPU in it, end, items.
    records: list[tuple[float, ...]] = []
    current: dict[str, float] = {}

    commit_sqlite = database.Database._commit_sqlite
    settle = sqlite.SqliteQueue.settle
    on_thread = database.Database._commit_on_writer_thread

    async def timed_batch(self: Any, batch: list[Any]) -> Any:
        current.clear()
        start = time.perf_counter()
        try:
            return await commit_sqlite(self, batch)
        finally:
            end = time.perf_counter()
            records.append(
                (
                    start,
                    current.get("written", end),
                    current.get("thread_start", 0.0),
                    current.get("thread_end", 0.0),
                    current.get("thread_cpu", 0.0),
                    end,
                    float(len(batch)),
                )
            )

    async def timed_settle(self: Any, changes: Any) -> None:
        await settle(self, changes)
        current["written"] = time.perf_counter()

    def timed_commit(self: Any, conn: Any) -> None:
        current["thread_start"] = time.perf_counter()
        cpu = time.thread_time()
        on_thread(self, conn)
        current["thread_cpu"] = time.thread_time() - cpu
        current["thread_end"] = time.perf_counter()

    database.Database._commit_sqlite = timed_batch  # type: ignore[method-assign]
    sqlite.SqliteQueue.settle = timed_settle  # type: ignore[method-assign]
    database.Database._commit_on_writer_thread = timed_commit  # type: ignore[method-assign]

    def write() -> None:
        with open(out, "w") as file:
            json.dump(records, file)

    atexit.register(write)


if OUT:
    _install(OUT)
