"""End-to-end task throughput and latency over gRPC, against the raw gRPC ceiling.

In one run, on this machine:
1. the raw unary rate of an empty grpc.aio RPC (Python client, concurrency 32): the ceiling;
2. tasks submitted per second and tasks completed end to end per second (text analysis,
   concurrency 32, in-process workers, SQLite), as ratios of that ceiling;
3. dispatch latency, submit → RUNNING, at a paced 50 tasks/s;
4. latency from a status or progress change to a watcher receiving it.

Usage: python bench/tasks_e2e.py [--tasks 3000] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from _harness import (
    closed_loop,
    empty_server,
    machine,
    percentile,
    raw_unary_rate,
    summary_ms,
    table,
    taskorch_server,
)

from taskorch.client import AsyncClient


async def throughput(client: AsyncClient, tasks: int, concurrency: int) -> tuple[float, float]:
    submitted = 0
    started = time.perf_counter()

    async def submitter() -> None:
        nonlocal submitted
        while submitted < tasks:
            submitted += 1
            await client.create_task(text=f"benchmark task {submitted} with a few words")

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    submit_done = time.perf_counter()
    while (await client.list_tasks(status="completed", limit=1)).total < tasks:
        await asyncio.sleep(0.02)
    all_done = time.perf_counter()
    return tasks / (submit_done - started), tasks / (all_done - started)


async def dispatch_latency(client: AsyncClient, count: int, rate: float) -> list[float]:
    ids = []
    for _ in range(count):
        ids.append((await client.create_task(text="dispatch latency probe")).task_id)
        await asyncio.sleep(1 / rate)
    delays = []
    for task_id in ids:
        task = await client.wait_for_task(task_id, timeout=60)
        assert task.started_at and task.created_at
        delays.append((task.started_at - task.created_at).total_seconds())
    return delays


async def watch_latency(client: AsyncClient, count: int) -> list[float]:
    latencies: list[float] = []

    async def one() -> None:
        task = await client.create_task(
            task_type="echo", input_data={"delay_seconds": 0.5, "progress_steps": 5}
        )
        async for event in client.watch_task(task.task_id):
            received = datetime.now(UTC)
            if event.type != "SNAPSHOT" and event.created_at is not None:
                latencies.append((received - event.created_at).total_seconds())

    for batch in range(0, count, 10):
        await asyncio.gather(*(one() for _ in range(min(10, count - batch))))
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with empty_server() as target:
        ceiling = await raw_unary_rate(target, concurrency=args.concurrency)
    with taskorch_server("--workers", str(args.workers)) as server:
        async with AsyncClient(server.grpc_addr) as client:
            get_rate, _ = await closed_loop(
                lambda: client.list_tasks(limit=1), concurrency=args.concurrency, seconds=3
            )
            submit_rate, e2e_rate = await throughput(client, args.tasks, args.concurrency)
            dispatch = await dispatch_latency(client, 300, rate=50)
            watch = await watch_latency(client, 100)

    def rate(label: str, value: float, unit: str) -> tuple[str, str, str]:
        return (label, f"{value:,.0f} {unit}", f"{value / ceiling:.2f}")

    print(
        table(
            [
                ("measure", "value", "ratio to raw gRPC ceiling"),
                rate("raw empty unary RPC, conc 32 (ceiling)", ceiling, "calls/s"),
                rate("ListTasks(limit=1), conc 32", get_rate, "calls/s"),
                rate("tasks submitted (CreateTask), conc 32", submit_rate, "tasks/s"),
                rate("tasks completed end to end", e2e_rate, "tasks/s"),
                ("dispatch latency submit→RUNNING @50/s", summary_ms(dispatch), ""),
                ("change → watcher received", summary_ms(watch), ""),
            ]
        )
    )
    print(
        f"({args.tasks} text-analysis tasks, {args.workers} in-process worker slots, SQLite "
        f"with synchronous=FULL; dispatch p90 {percentile(dispatch, 90) * 1e3:.1f} ms; "
        f"{len(watch)} watched events)"
    )


if __name__ == "__main__":
    asyncio.run(main())
