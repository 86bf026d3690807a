"""Delayed tasks and concurrency keys: how precisely a delayed task starts, and what keys cost.

In one run, on one server per backend (``serve --workers 4``, echo tasks):

1. precision: ``--delayed`` tasks created with run_after_seconds spread over 0.5-3 s, paced so a
   worker is free when each comes due; figure = started_at - run_at (the server's record of
   the lease against the task's time), p50 / p99;
2. throughput: ``--tasks`` tasks submitted from 32 coroutines and run to the end, plain (FIFO)
   against the same tasks each carrying one of 64 concurrency keys of limit 8 (the keys never
   bind with 4 slots: this is the bookkeeping's cost) and against one key of limit 4 (binding:
   the line admits the next task as each one ends); end-to-end tasks/s and the ratio to plain.

Usage: python bench/scheduling.py [--tasks 1000] [--delayed 60] [--backends sqlite,pg]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from _harness import machine, percentile, table, taskorch_server

from taskorch.client import AsyncClient

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"


async def precision(client: AsyncClient, count: int) -> list[float]:
    tasks = []
    for _ in range(count):
        tasks.append(
            await client.create_task(task_type="echo", run_after_seconds=random.uniform(0.5, 3.0))
        )
        await asyncio.sleep(0.01)
    done = await asyncio.gather(*(client.wait_for_task(t.task_id, timeout=60) for t in tasks))
    late = []
    for task in done:
        assert task.status == "COMPLETED" and task.started_at and task.run_at, task
        late.append((task.started_at - task.run_at).total_seconds() * 1000)
    return late


async def throughput(client: AsyncClient, count: int, keys: int, limit: int) -> float:
    queue = list(range(count))
    ids: list[str] = []

    async def submitter() -> None:
        while queue:
            n = queue.pop()
            fields: dict[str, Any] = {}
            if keys:
                fields = {"concurrency_key": f"key-{n % keys}", "concurrency_limit": limit}
            task = await client.create_task(task_type="echo", input_data={"n": n}, **fields)
            ids.append(task.task_id)

    first = time.time()
    await asyncio.gather(*(submitter() for _ in range(32)))
    done = await asyncio.gather(*(client.wait_for_task(t, timeout=300) for t in ids))
    last = max(t.completed_at.timestamp() for t in done if t.completed_at)
    return count / (last - first)


async def measure(addr: str, args: argparse.Namespace) -> dict[str, Any]:
    client = AsyncClient(addr)
    try:
        await throughput(client, 50, 0, 0)  # warm up
        figures: dict[str, Any] = {"late": await precision(client, args.delayed)}
        ways = {"plain": (0, 0), "64 keys of 8": (64, 8), "1 key of 4": (1, 4)}
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):  # alternating, so a slow minute hits every way
            for name, (keys, limit) in ways.items():
                rates[name].append(await throughput(client, args.tasks, keys, limit))
        figures["rates"] = {name: statistics.median(r) for name, r in rates.items()}
        return figures
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--delayed", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,pg")
    args = parser.parse_args()
    print(machine())
    rows = [
        ("backend", "start after run_at p50 / p99", "plain tasks/s", "64 keys of 8", "1 key of 4")
    ]
    for backend in args.backends.split(","):
        url = None
        if backend == "pg":
            from peers import recreate_database

            recreate_database("taskorch_bench_scheduling")
            url = PG_URL.format(db="taskorch_bench_scheduling")
        with taskorch_server("--workers", "4", database_url=url) as server:
            f = asyncio.run(measure(server.grpc_addr, args))
        late, rates = f["late"], f["rates"]
        plain = rates["plain"]
        rows.append(
            (
                "SQLite" if backend == "sqlite" else "PostgreSQL",
                f"{percentile(late, 50):.1f} / {percentile(late, 99):.1f} ms",
                f"{plain:,.0f}",
                f"{rates['64 keys of 8']:,.0f} ({rates['64 keys of 8'] / plain:.2f}x)",
                f"{rates['1 key of 4']:,.0f} ({rates['1 key of 4'] / plain:.2f}x)",
            )
        )
    print(table(rows))


if __name__ == "__main__":
    main()
