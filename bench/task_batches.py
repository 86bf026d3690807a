"""What bounds a loaded server: its event loop, or its database writer.

A server (``serve --workers SLOTS``, SQLite) runs with bench/_batches/ on its PYTHONPATH,
which times each batch of its database writer: the transitions' statements on the event
loop, the hop to the writer thread, the COMMIT there (its fsync; with that thread's CPU),
the hop back. 32 SDK clients submit ``--tasks`` echo tasks, one per call, as bench/peers.py
does, each timing its calls. Over the loaded part of the run it prints the throughput, how
long a create waited for its answer, the loop thread's CPU (its busy share and per task),
and the batches: how many, how full, how long, and how much of the run the writer held one.

How to read it: the writer holds a batch nearly all the time under any load (the next one
forms while the last commits), so its busy share says little. If a create waits several
batch cycles for its answer, the requests queue before the engine ever sees them: the
event loop, not the commit, sets the pace, and throughput is one over the loop's CPU a
task. Usage:

    python bench/task_batches.py [--tasks 6000] [--slots 10] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from _harness import cpu_seconds, echo_tasks, machine, percentile, server_hook, taskorch_server

HOOK = Path(__file__).resolve().parent / "_batches"
SUBMITTERS = 32


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else 0.0


def run(tasks: int, slots: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="taskorch-batches-") as folder:
        out = Path(folder) / "batches.json"
        hook = server_hook(HOOK, TASKORCH_BATCHES_OUT=str(out))
        with hook, taskorch_server("--workers", str(slots)) as server:
            warm_up = min(500, tasks)
            asyncio.run(echo_tasks(server.grpc_addr, warm_up, submitters=SUBMITTERS))
            pid = server.proc.pid  # the event loop's thread has the process's id
            waits: list[float] = []
            cpu, begin = cpu_seconds(pid, pid), time.perf_counter()
            asyncio.run(echo_tasks(server.grpc_addr, tasks, submitters=SUBMITTERS, waits=waits))
            loop_cpu, end = cpu_seconds(pid, pid) - cpu, time.perf_counter()
        # perf_counter is the machine's monotonic clock: the server's and ours agree.
        batches = [b for b in json.loads(out.read_text()) if begin <= b[0] and b[5] <= end]
    if not batches:
        raise SystemExit("no batch fell inside the loaded part of the run")
    wall = end - begin
    on_thread = [b for b in batches if b[2]]
    return {
        "tasks/s": tasks / wall,
        "create p50": percentile(waits, 50) * 1e3,
        "create p90": percentile(waits, 90) * 1e3,
        "loop busy": loop_cpu / wall,
        "loop ms/task": loop_cpu / tasks * 1e3,
        "batches/s": len(batches) / wall,
        "items": statistics.mean(b[6] for b in batches),
        "writer busy": sum(b[5] - b[0] for b in batches) / wall,
        "batch": statistics.mean(b[5] - b[0] for b in batches) * 1e3,
        "statements": statistics.mean(b[1] - b[0] for b in batches) * 1e3,
        "to thread": _mean([b[2] - b[1] for b in on_thread]) * 1e3,
        "commit": _mean([b[3] - b[2] for b in on_thread]) * 1e3,
        "commit cpu": _mean([b[4] for b in on_thread]) * 1e3,
        "back": _mean([b[5] - b[3] for b in on_thread]) * 1e3,
        "on loop": 1 - len(on_thread) / len(batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=6000)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    if min(args.tasks, args.slots, args.runs) < 1:
        parser.error("--tasks, --slots and --runs must be at least 1")
    print(machine())
    print(f"{args.tasks} tasks from {SUBMITTERS} clients, {args.slots} in-process slots, SQLite")
    for n in range(1, args.runs + 1):
        r = run(args.tasks, args.slots)
        print(
            f"\nrun {n}: {r['tasks/s']:,.0f} tasks/s; a create answered in "
            f"{r['create p50']:.1f} ms (p50), {r['create p90']:.1f} ms (p90)\n"
            f"- event loop thread: {r['loop busy']:.0%} busy, {r['loop ms/task']:.2f} ms of "
            "CPU a task\n"
            f"- writer: {r['batches/s']:.0f} batches/s of {r['items']:.1f} transitions, "
            f"holding one {r['writer busy']:.0%} of the run\n"
            f"- a batch: {r['batch']:.2f} ms = statements on the loop {r['statements']:.2f} "
            f"+ to the writer thread {r['to thread']:.2f} + COMMIT {r['commit']:.2f} (of it "
            f"CPU {r['commit cpu']:.2f}) + back on the loop {r['back']:.2f} "
            f"({r['on loop']:.0%} of batches committed on the loop)\n"
            f"- a create waited {r['create p50'] / r['batch']:.1f} batches (p50): "
            + (
                "the requests queue before the engine; the event loop sets the pace"
                if r["create p50"] > 2.5 * r["batch"]
                else "the commit cycle sets the pace"
            )
        )


if __name__ == "__main__":
    main()
