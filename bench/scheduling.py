"""Delayed tasks, concurrency keys and fair sharing: how precisely a delayed task starts, and
what keys and fair sharing cost.

In one run, on two servers per backend (``serve --workers 4``, echo tasks; one with
``--no-fair-sharing``, first come, first served, the other with fair sharing, the default):

1. precision: ``--delayed`` tasks created with run_after_seconds spread over 0.5-3 s, paced so a
   worker is free when each comes due; figure = started_at - run_at (the server's record of
   the lease against the task's time), p50 / p99;
2. throughput: ``--tasks`` tasks submitted from 32 coroutines and run to the end, plain on the
   first-come-first-served server (FIFO) against: the same on the fair-sharing server (every
   new subtask's turn computed in its insert: that is the cost of fair sharing, which is the
   same for one tenant or many: two index probes per subtask), and, on the fair server, the
   same tasks each carrying one of 64 concurrency keys of limit 8 (the keys never bind with 4
   slots: this is the bookkeeping's cost) and one key of limit 4 (binding: the line admits the
   next task as each one ends); end-to-end tasks/s and the ratio to FIFO;
3. the binding key with work: ``--work-tasks`` tasks that each take ``--work-ms`` (echo's
   delay_seconds), FIFO against one key of limit 4 (on 4 slots the key costs only its
   admissions: each task's end admits the next in the ending's own transaction, while FIFO
   slots hold leases in hand); the ratio of the two.

Usage: python bench/scheduling.py [--tasks 1000] [--delayed 60] [--backends sqlite,pg]
    [--work-ms 50] [--work-tasks 200]
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


async def throughput(
    client: AsyncClient, count: int, keys: int, limit: int, work_ms: float = 0.0
) -> float:
    queue = list(range(count))
    ids: list[str] = []

    async def submitter() -> None:
        while queue:
            n = queue.pop()
            fields: dict[str, Any] = {}
            if keys:
                fields = {"concurrency_key": f"key-{n % keys}", "concurrency_limit": limit}
            data: dict[str, Any] = {"n": n}
            if work_ms:
                data.update(delay_seconds=work_ms / 1000, progress_steps=1)
            task = await client.create_task(task_type="echo", input_data=data, **fields)
            ids.append(task.task_id)

    first = time.time()
    await asyncio.gather(*(submitter() for _ in range(32)))
    done = await asyncio.gather(*(client.wait_for_task(t, timeout=300) for t in ids))
    last = max(t.completed_at.timestamp() for t in done if t.completed_at)
    return count / (last - first)


async def measure(fifo_addr: str, fair_addr: str, args: argparse.Namespace) -> dict[str, Any]:
    fifo, fair = AsyncClient(fifo_addr), AsyncClient(fair_addr)
    try:
        for client in (fifo, fair):
            await throughput(client, 50, 0, 0)  # warm up
        figures: dict[str, Any] = {"late": await precision(fair, args.delayed)}
        ways = {
            "FIFO": (fifo, 0, 0),
            "fair": (fair, 0, 0),
            "64 keys of 8": (fair, 64, 8),
            "1 key of 4": (fair, 1, 4),
        }
        working = {
            f"FIFO, {args.work_ms:g} ms tasks": (fifo, 0, 0),
            f"1 key of 4, {args.work_ms:g} ms tasks": (fair, 1, 4),
        }
        rates: dict[str, list[float]] = {name: [] for name in {**ways, **working}}
        for _ in range(args.repeats):  # alternating, so a slow minute hits every way
            for name, (client, keys, limit) in ways.items():
                rates[name].append(await throughput(client, args.tasks, keys, limit))
            for name, (client, keys, limit) in working.items():
                rates[name].append(
                    await throughput(client, args.work_tasks, keys, limit, args.work_ms)
                )
        figures["rates"] = {name: statistics.median(r) for name, r in rates.items()}
        figures["spread"] = {name: (min(r), max(r)) for name, r in rates.items()}
        return figures
    finally:
        await fifo.close()
        await fair.close()


def _rate(figures: dict[str, Any], name: str) -> str:
    """A way's median tasks/s and its rounds' spread."""
    low, high = figures["spread"][name]
    return f"{figures['rates'][name]:,.0f} ({low:,.0f}-{high:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--delayed", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,pg")
    parser.add_argument("--work-ms", type=float, default=50.0, help="the working tasks' time")
    parser.add_argument("--work-tasks", type=int, default=200)
    args = parser.parse_args()
    print(machine())
    ways = ("fair", "64 keys of 8", "1 key of 4")
    fifo_working = f"FIFO, {args.work_ms:g} ms tasks"
    keyed_working = f"1 key of 4, {args.work_ms:g} ms tasks"
    rows = [
        (
            "backend",
            "start after run_at p50 / p99",
            "FIFO tasks/s",
            *ways,
            fifo_working,
            keyed_working,
        )
    ]
    for backend in args.backends.split(","):
        urls: list[str | None] = [None, None]
        if backend == "pg":
            from peers import recreate_database

            for n in range(2):
                recreate_database(f"taskorch_bench_scheduling{n}")
            urls = [PG_URL.format(db=f"taskorch_bench_scheduling{n}") for n in range(2)]
        with (
            taskorch_server("--workers", "4", "--no-fair-sharing", database_url=urls[0]) as fifo,
            taskorch_server("--workers", "4", database_url=urls[1]) as fair,
        ):
            f = asyncio.run(measure(fifo.grpc_addr, fair.grpc_addr, args))
        late, rates = f["late"], f["rates"]
        plain = rates["FIFO"]
        rows.append(
            (
                "SQLite" if backend == "sqlite" else "PostgreSQL",
                f"{percentile(late, 50):.1f} / {percentile(late, 99):.1f} ms",
                _rate(f, "FIFO"),
                *(f"{_rate(f, name)} {rates[name] / plain:.2f}x" for name in ways),
                _rate(f, fifo_working),
                f"{_rate(f, keyed_working)} {rates[keyed_working] / rates[fifo_working]:.2f}x",
            )
        )
    print(table(rows))


if __name__ == "__main__":
    main()
