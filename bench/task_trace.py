"""Where the time of one paced task goes: submit → done (notified) cut into its steps.

A server (``serve --workers 1``, SQLite) runs with bench/_trace/ on its PYTHONPATH, which
stamps the wall-clock time at each step a task passes (the interceptor, the servicer, the
engine's batch, the hand-over, the handler, the report, the rows, the COMMIT, the events to
the stream). The client submits ``--tasks`` echo tasks at ``--rate`` per second (the SDK's
AsyncClient), one ``WatchTasks`` stream of ends open before the first, as bench/peers.py
does. For each task, every step's offset from the client's submit is taken (the first stamp
of that step after the submit); the table shows their medians, the gap to the step before,
and where the client heard of the end. Client and server share one clock (one machine).

The wrapping itself costs a few microseconds per step (about 0.1 ms per task in all).
Usage:

    python bench/task_trace.py [--tasks 300] [--rate 50] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from _harness import machine, server_hook, taskorch_server

from taskorch.client import AsyncClient

HOOK = Path(__file__).resolve().parent / "_trace"


async def paced(addr: str, tasks: int, rate: float) -> tuple[dict[str, float], dict[str, float]]:
    """Submits paced tasks; their submit times and when their ends were heard."""
    client = AsyncClient(addr)
    heard: dict[str, float] = {}
    watch = client.watch_tasks(terminal_only=True, timeout=600)
    await watch.__aenter__()

    async def listen() -> None:
        async for event in watch.events():
            heard[event.task_id] = time.time()

    listener = asyncio.create_task(listen())
    for n in range(30):  # warm-up
        await client.create_task(task_type="echo", input_data={"n": n})
    await asyncio.sleep(0.3)
    submitted: dict[str, float] = {}
    begin = time.monotonic()
    for n in range(tasks):
        at = time.time()
        task = await client.create_task(task_type="echo", input_data={"n": n})
        submitted[task.task_id] = at
        await asyncio.sleep(max(0.0, begin + (n + 1) / rate - time.monotonic()))
    deadline = time.monotonic() + 30
    while any(t not in heard for t in submitted) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    listener.cancel()
    await client.close()
    return submitted, heard


def steps(
    stamps: list[tuple[str, float]], submitted: dict[str, float], heard: dict[str, float]
) -> dict[str, list[float]]:
    """Each step's offsets from the submits (the first stamp of the step after each)."""
    starts = sorted(submitted.values())
    heard_at = {submitted[t]: heard[t] for t in submitted if t in heard}
    offsets: dict[str, list[float]] = {}
    i = 0
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else start + 1.0
        while i < len(stamps) and stamps[i][1] < start:
            i += 1
        seen: set[str] = set()
        j = i
        while j < len(stamps) and stamps[j][1] < end:
            label, at = stamps[j]
            if label not in seen:
                seen.add(label)
                offsets.setdefault(label, []).append(at - start)
            j += 1
        if start in heard_at:
            offsets.setdefault("client hears the end", []).append(heard_at[start] - start)
    return offsets


async def run(tasks: int, rate: float) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="taskorch-trace-") as folder:
        out = Path(folder) / "stamps.json"
        hook = server_hook(HOOK, TASKORCH_TRACE_OUT=str(out))
        with hook, taskorch_server("--workers", "1") as server:
            submitted, heard = await paced(server.grpc_addr, tasks, rate)
        stamps = sorted(
            ((label, at) for label, at in json.loads(out.read_text())), key=lambda s: s[1]
        )
    return steps(stamps, submitted, heard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print(machine())
    for n in range(args.runs):
        offsets = asyncio.run(run(args.tasks, args.rate))
        rows = sorted((statistics.median(v) * 1e3, k, len(v)) for k, v in offsets.items())
        print(f"\nrun {n + 1}: {args.tasks} tasks at {args.rate:g}/s, median offsets from submit")
        print("| step | ms after submit | ms since the step before | tasks |")
        print("| --- | --- | --- | --- |")
        before = 0.0
        for ms, label, count in rows:
            print(f"| {label} | {ms:.2f} | {ms - before:.2f} | {count} |")
            before = ms


if __name__ == "__main__":
    main()
