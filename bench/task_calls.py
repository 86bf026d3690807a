"""How many Python function calls one trivial task costs the server's event loop: a count
that the machine's speed does not move, for A/Bs the timing benchmarks cannot resolve.

On this VM the server CPU a task of one code moves by a third between rounds minutes apart
(bench/task_cost.py), so a change worth a few percent of the loop thread cannot be seen in
time. The calls it makes can: the server runs with bench/_calls/ on its PYTHONPATH, which
profiles its main thread (the event loop: gRPC calls, the engine's batches, the in-process
workers) with cProfile, and two servers take ``--tasks`` and twice as many echo tasks
(32 SDK clients, one task per call, in-process slots, SQLite); the difference between the
two, per task, is what one more task costs, start-up and warm-up left out. Calls of C
functions (builtins, methods of C types) count too; time inside them does not add calls.
With ``--before DIR`` an earlier checkout's ``src`` runs the same way beside this one.

The figure depends on how the tasks fall into batches (a batch's fixed work is shared by its
tasks), which the machine's state of the moment sets: on 2026-12-07 three rounds gave 827-913
calls a task, but the two codes of one round, run back to back, were within 2 calls of each
other in every round (844/843, 913/915, 827/829), so compare within rounds. It counts calls,
not the work in them: a change that makes a call cheaper (fewer strings built, say) shows
only in time. Usage:

    python bench/task_calls.py [--tasks 1000] [--slots 10] [--repeats 3] [--before DIR]
        [--top 30]
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import re
import statistics
import tempfile
from pathlib import Path

from _harness import echo_tasks, machine, server_hook, taskorch_server

HOOK = Path(__file__).resolve().parent / "_calls"

Key = tuple[str, int, str]
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _profiled_run(tasks: int, slots: int, src: Path | None, out: Path) -> dict[Key, int]:
    """Calls of each function on the loop of a server that ran ``tasks`` tasks."""
    hook = server_hook(HOOK, *([src] if src else []), TASKORCH_CALLS_OUT=str(out))
    with hook, taskorch_server("--workers", str(slots)) as server:
        asyncio.run(echo_tasks(server.grpc_addr, tasks))
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    return {key: int(value[1]) for key, value in stats.items()}


def per_task(tasks: int, slots: int, src: Path | None) -> dict[str, float]:
    """Calls of each function for one more task (the two runs' difference), by name."""
    with tempfile.TemporaryDirectory(prefix="taskorch-calls-") as folder:
        few = _profiled_run(tasks, slots, src, Path(folder) / "few.prof")
        many = _profiled_run(2 * tasks, slots, src, Path(folder) / "many.prof")
    calls: dict[str, float] = {}
    for key, n in many.items():
        name = _name(key)
        calls[name] = calls.get(name, 0.0) + (n - few.get(key, 0)) / tasks
    return calls


def _medians(samples: list[dict[str, float]]) -> dict[str, float]:
    names = {name for calls in samples for name in calls}
    return {name: statistics.median(calls.get(name, 0.0) for calls in samples) for name in names}


def _name(key: Key) -> str:
    """The function's name and file, the same in any checkout (no line: lines move)."""
    file, _line, function = key
    for marker in ("/src/", "site-packages/", "python3.11/"):
        if marker in file:
            file = file.split(marker)[-1]
            break
    function = _ADDRESS.sub("", function)
    return f"{function} ({file})" if file != "~" else function


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs of each code")
    parser.add_argument("--before", type=Path, help="an earlier checkout to count beside")
    parser.add_argument("--top", type=int, default=30, help="functions to list")
    args = parser.parse_args()
    if min(args.tasks, args.slots, args.repeats) < 1:
        parser.error("--tasks, --slots and --repeats must be at least 1")
    print(machine())
    sources: dict[str, Path | None] = {"now": None}
    if args.before:
        sources["before"] = args.before.resolve() / "src"
    samples: dict[str, list[dict[str, float]]] = {label: [] for label in sources}
    for _ in range(args.repeats):
        for label, src in sources.items():
            samples[label].append(per_task(args.tasks, args.slots, src))
            print(f"  {label}: {sum(samples[label][-1].values()):.0f} calls a task", flush=True)
    runs = {label: _medians(found) for label, found in samples.items()}
    print(
        f"\nPython calls on the server's loop for one more task ({args.slots} in-process "
        f"slots), median of {args.repeats} (min-max)"
    )
    for label, found in samples.items():
        totals = sorted(sum(calls.values()) for calls in found)
        print(f"- {label}: {statistics.median(totals):.0f} ({totals[0]:.0f}-{totals[-1]:.0f})")
    now = runs["now"]
    before = runs.get("before", {})
    print(f"\n| function | calls a task now |{' before |' if before else ''}")
    print(f"| --- | --- |{' --- |' if before else ''}")
    names = sorted(set(now) | set(before), key=lambda k: -max(now.get(k, 0), before.get(k, 0)))
    for name in names[: args.top]:
        row = f"| {name} | {now.get(name, 0):.2f} |"
        print(row + (f" {before.get(name, 0):.2f} |" if before else ""))


if __name__ == "__main__":
    main()
