"""The least a durable gRPC task service in Python can do per task here: the bound that
bench/peers.py measures taskorch against in the same run (its "bare" system).

It speaks taskorch's own CreateTask and WatchTasks (so the same SDK client drives it), on
grpc.aio over uvloop like ``taskorch serve``, and per task does only what no task service
can skip: the call in, the task run (an echo, inline: no queue, no worker, no lease), one
row inserted and committed with an fsync (SQLite, WAL, synchronous=FULL, the COMMIT on a
writer thread, concurrent creates group-committed in one transaction), then the event out
to every watcher and the answer. No validation, auth, tenancy, events table, counters,
retries or anything else a real service keeps. Usage: ``_bare_task_server.py PORT DBFILE``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf import json_format

from taskorch.cli import _loop
from taskorch.v1 import status_pb2, task_service_pb2, task_service_pb2_grpc

COMPLETED = status_pb2.COMPLETED
MAX_BATCH = 1000


class BareTasks(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, input TEXT, "
            "result TEXT, created_at REAL, completed_at REAL)"
        )
        self.writer = ThreadPoolExecutor(1)
        self.pending: asyncio.Queue[tuple[task_service_pb2.Task, asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self.watchers: set[asyncio.Queue[task_service_pb2.TaskEvent]] = set()
        self._writing: asyncio.Task[None] | None = None

    async def CreateTask(self, request: Any, context: Any) -> task_service_pb2.Task:
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_loop())
        now = time.time()
        task = task_service_pb2.Task(
            task_id=f"t_{uuid.uuid4().hex}", task_type=request.task_type, status=COMPLETED
        )
        task.input_data.CopyFrom(request.input_data)
        task.result.CopyFrom(request.input_data)  # the echo, run inline
        task.created_at.FromNanoseconds(int(now * 1e9))
        task.started_at.CopyFrom(task.created_at)
        task.completed_at.FromNanoseconds(int(time.time() * 1e9))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.put_nowait((task, done))
        await done
        return task

    async def _write_loop(self) -> None:
        """Group commit: every create waiting goes in the next transaction."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.pending.get()]
            while len(batch) < MAX_BATCH and not self.pending.empty():
                batch.append(self.pending.get_nowait())
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        t.task_id,
                        json.dumps(json_format.MessageToDict(t.input_data)),
                        json.dumps(json_format.MessageToDict(t.result)),
                        t.created_at.ToNanoseconds() / 1e9,
                        t.completed_at.ToNanoseconds() / 1e9,
                    )
                    for t, _ in batch
                ],
            )
            await loop.run_in_executor(self.writer, self.conn.execute, "COMMIT")
            for task, done in batch:
                event = task_service_pb2.TaskEvent(
                    task_id=task.task_id,
                    sequence=3,
                    type=task_service_pb2.TaskEvent.STATUS_CHANGED,
                    status=COMPLETED,
                    progress=100.0,
                    task=task,
                )
                event.created_at.CopyFrom(task.completed_at)
                for watcher in self.watchers:
                    watcher.put_nowait(event)
                done.set_result(None)

    async def WatchTasks(self, request: Any, context: Any) -> AsyncIterator[Any]:
        events: asyncio.Queue[task_service_pb2.TaskEvent] = asyncio.Queue()
        self.watchers.add(events)
        try:
            await context.send_initial_metadata(())
            while True:
                yield await events.get()
        finally:
            self.watchers.discard(events)


async def main(port: int, path: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(BareTasks(path), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    _loop.run(main(int(sys.argv[1]), sys.argv[2]))
