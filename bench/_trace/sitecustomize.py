"""Loaded by the server that bench/task_trace.py starts (this folder on its PYTHONPATH): it
stamps the wall-clock time at each step a task passes on the server, and writes the stamps
to ``$TASKORCH_TRACE_OUT`` (JSON) when the server exits. The steps are methods of the
server's own classes, wrapped here; nothing of this runs in a server started otherwise."""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import time
from typing import Any

OUT = os.environ.get("TASKORCH_TRACE_OUT")


def _install(out: str) -> None:
    from taskorch.core import engine, tasks
    from taskorch.server import convert, interceptors, task_service
    from taskorch.store import database
    from taskorch.store.queue import sqlite
    from taskorch.workers import loop

    stamps: list[tuple[str, float]] = []

    def wrap(owner: Any, name: str, label: str, end: str | None = None) -> None:
        real = getattr(owner, name)
        if inspect.iscoroutinefunction(real):

            @functools.wraps(real)
            async def stamped(*args: Any, **kwargs: Any) -> Any:
                stamps.append((label, time.time()))
                try:
                    return await real(*args, **kwargs)
                finally:
                    if end:
                        stamps.append((end, time.time()))

        else:

            @functools.wraps(real)
            def stamped(*args: Any, **kwargs: Any) -> Any:
                stamps.append((label, time.time()))
                try:
                    return real(*args, **kwargs)
                finally:
                    if end:
                        stamps.append((end, time.time()))

        setattr(owner, name, stamped)

    wrap(interceptors.ServerInterceptor, "_identify", "interceptor")
    wrap(task_service.TaskServicer, "CreateTask", "servicer", "create answered")
    wrap(tasks.TaskService, "_prepare", "validate + plan")
    wrap(engine.TaskEngine, "create", "engine create")
    wrap(database.Database, "_sqlite_batch", "batch begins")
    wrap(engine.TaskEngine, "_hand_over", "lease handed over")
    wrap(database.Database, "_join_reports", "batch waits for report", "report joined")
    wrap(loop.WorkerLoop, "_run", "handler runs")
    wrap(engine.TaskEngine, "complete", "worker reports")
    wrap(sqlite.SqliteQueue, "insert_tasks", "rows written")
    wrap(sqlite.SqliteQueue, "settle", "events + counts written")
    wrap(database.Database, "_end", "COMMIT", "committed")
    wrap(engine.TaskEngine, "_committed", "published")
    wrap(convert, "event_to_proto", "event to the stream")

    def write() -> None:
        with open(out, "w") as file:
            json.dump(stamps, file)

    atexit.register(write)


if OUT:
    _install(OUT)
