"""What one trivial task costs the server, counted, for this code and (``--before DIR``) an
earlier checkout's, in the same run.

For each mode (``--slots`` in-process slots or one remote worker of that concurrency, 10 by
default; SQLite or PostgreSQL) a fresh server takes ``--tasks`` echo tasks submitted one per
call from 32 coroutines (the SDK's AsyncClient) and runs them; then, per task:

- server CPU (user + system, every thread, from ``/proc``) and the remote worker's;
- gRPC calls the server answered (its ``taskorch_rpc_duration_seconds`` counts: CreateTask,
  the worker's reports; the submitter's own ListTasks polls are left out);
- write transactions and the operations they held (``taskorch_db_write_*``; absent before
  this release) and, on PostgreSQL, every transaction it committed (``pg_stat_database``),
  the CPU of PostgreSQL's processes (every process named ``postgres``: the backends, the
  WAL writer, the checkpointer) and the WAL written (``pg_stat_wal``: bytes and full-page
  images, the copies of a page written the first time it changes after a checkpoint) and the
  rows of the hot tables inserted and updated (``pg_stat_user_tables``).

The earlier checkout runs from its own ``src`` (PYTHONPATH) with this checkout's client and
benchmark. Usage:

    python bench/task_cost.py [--tasks 2000] [--slots 10] [--before /path/to/checkout]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
from _harness import cpu_seconds, echo_tasks, machine, table, taskorch_server

from taskorch.client import AsyncClient
from tests.servers import WorkerProcess

PG = "postgres@127.0.0.1:5432"
DB = "taskorch_bench_cost"
SUBMITTERS = 32
SLOTS = 10
SPREAD = ("tasks/s", "server CPU ms")  # shown with their runs' min-max


def _pg(sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(f"postgresql://{PG}/test", autocommit=True) as conn:
        cursor = conn.execute(sql)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def _commits() -> int:
    rows = _pg(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DB}'")
    return int(rows[0][0]) if rows else 0


def _wal() -> tuple[float, float]:
    """WAL bytes and full-page images written so far (the whole cluster)."""
    rows = _pg("SELECT wal_bytes, wal_fpi FROM pg_stat_wal")
    return float(rows[0][0]), float(rows[0][1])  # type: ignore[arg-type]


def _row_writes() -> dict[str, float]:
    """Rows inserted and updated so far in the hot tables of the benchmark's database."""
    with psycopg.connect(f"postgresql://{PG}/{DB}", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables "
            "WHERE relname IN ('tasks', 'subtasks', 'task_events')"
        ).fetchall()
    found = {}
    for table_name, inserted, updated in rows:
        found[f"{table_name} inserted"] = float(inserted)
        found[f"{table_name} updated"] = float(updated)
    return found


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds used so far by every process named postgres, by pid."""
    used = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "postgres":
                    used[int(proc.name)] = cpu_seconds(int(proc.name))
            except OSError:  # ended meanwhile
                continue
    return used


def _metrics(url: str) -> dict[str, float]:
    """Sums of the counters of interest, by name (RPC counts by method)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("taskorch_db_write_"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
        elif line.startswith("taskorch_rpc_duration_seconds_count"):
            method = re.search(r'method="([^"]+)"', line)
            if method and not method.group(1).endswith(("ListTasks", "Check")):
                name = "rpc " + method.group(1).rsplit("/", 1)[-1]
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


async def measure(backend: str, remote: bool, tasks: int, slots: int) -> dict[str, float]:
    url = None
    if backend == "postgresql":
        _pg(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        _pg(f"CREATE DATABASE {DB}")
        url = f"postgresql+asyncpg://{PG}/{DB}"
    with taskorch_server("--workers", "0" if remote else str(slots), database_url=url) as server:
        workers = []
        if remote:
            log = Path(tempfile.mkdtemp(prefix="taskorch-bench-cost-")) / "worker.log"
            args = ("--concurrency", str(slots), "--kinds", "echo")
            workers.append(WorkerProcess(server.grpc_addr, log, args=args).start())
            await asyncio.to_thread(workers[0].wait_connected)
        client = AsyncClient(server.grpc_addr)
        for _ in range(20):  # warm: connections, statements, the worker's stream
            task = await client.create_task(task_type="echo", input_data={"n": 0})
            await client.wait_for_task(task.task_id, timeout=30)
        assert server.proc is not None
        pids = [server.proc.pid] + [w.proc.pid for w in workers if w.proc is not None]
        before_cpu = [cpu_seconds(pid) for pid in pids]
        before = _metrics(server.metrics_url)
        commits = _commits() if url else 0
        wal = _wal() if url else (0.0, 0.0)
        writes = _row_writes() if url else {}
        postgres_cpu = _postgres_cpu() if url else {}
        started = time.monotonic()
        await echo_tasks(server.grpc_addr, tasks, submitters=SUBMITTERS)
        elapsed = time.monotonic() - started
        used = [cpu_seconds(pid) - b for pid, b in zip(pids, before_cpu, strict=True)]
        after = _metrics(server.metrics_url)
        result = {
            "tasks/s": tasks / elapsed,
            "server CPU ms": used[0] / tasks * 1e3,
            "worker CPU ms": sum(used[1:]) / tasks * 1e3,
        }
        for name in after:
            result[name] = (after[name] - before.get(name, 0.0)) / tasks
        if url:
            result["pg commits"] = (_commits() - commits) / tasks
            # Processes that ended during the run are missed; the pool's connections do not.
            result["postgres CPU ms"] = (
                sum(c - postgres_cpu.get(pid, 0.0) for pid, c in _postgres_cpu().items())
                / tasks
                * 1e3
            )
            wal_bytes, fpi = _wal()
            await asyncio.sleep(1.5)  # backends report their table counts within a second
            for name, count in _row_writes().items():
                result[f"pg rows: {name}"] = (count - writes.get(name, 0.0)) / tasks
            result["WAL kB"] = (wal_bytes - wal[0]) / tasks / 1e3
            result["WAL full pages"] = (fpi - wal[1]) / tasks
        await client.close()
        for worker in workers:
            worker.stop()
    if url:
        _pg(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    return result


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--before", type=Path, help="an earlier checkout to measure beside")
    parser.add_argument(
        "--modes",
        default="sqlite,postgresql,sqlite-remote,postgresql-remote",
        help="which of sqlite, postgresql, sqlite-remote, postgresql-remote",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating")
    parser.add_argument(
        "--slots",
        type=int,
        default=SLOTS,
        help="in-process worker slots, or the remote worker's concurrency (bench/peers.py's "
        "4-worker rows are 40)",
    )
    args = parser.parse_args()
    codes: list[tuple[str, str | None]] = [("now", None)]
    if args.before:
        codes.insert(0, ("before", str(args.before.resolve() / "src")))
    wanted = args.modes.split(",")
    modes = [
        (b, r)
        for r in (False, True)
        for b in ("sqlite", "postgresql")
        if f"{b}{'-remote' if r else ''}" in wanted
    ]
    print(f"{machine()}; {args.tasks} echo tasks per run, {SUBMITTERS} submitters")
    results: dict[tuple[str, str, bool], dict[str, float]] = {}
    original = os.environ.get("PYTHONPATH")
    runs: dict[tuple[str, str, bool], list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        for backend, remote in modes:
            for label, src in codes:
                if src:
                    os.environ["PYTHONPATH"] = src
                elif original is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = original
                found = await measure(backend, remote, args.tasks, args.slots)
                runs.setdefault((label, backend, remote), []).append(found)
                how = "remote worker" if remote else "in process"
                where = f"{backend}, {how} x{args.slots}, {label}"
                cpu = found["server CPU ms"]
                print(f"  {where}: {found['tasks/s']:.0f} tasks/s, {cpu:.2f} ms", flush=True)
    for key, found_all in runs.items():  # medians of the runs
        names_here = {n for f in found_all for n in f}
        results[key] = {n: statistics.median(f[n] for f in found_all if n in f) for n in names_here}
    rows = [
        (
            "per task (median of runs; min-max)",
            *(
                f"{'remote' if r else 'in process'} {b} {label}"
                for b, r in modes
                for label, _ in codes
            ),
        )
    ]
    names = sorted({name for found in results.values() for name in found})
    order = ["tasks/s", "server CPU ms", "worker CPU ms", "taskorch_db_write_transactions_total",
             "taskorch_db_write_operations_total", "pg commits", "postgres CPU ms", "WAL kB",
             "WAL full pages"]  # fmt: skip
    names = [n for n in order if n in names] + [n for n in names if n not in order]
    for name in names:
        digits = 0 if name == "tasks/s" else 2
        cells = []
        for b, r in modes:
            for label, _ in codes:
                cell = _cell(results[(label, b, r)].get(name), digits)
                spread = [f[name] for f in runs[(label, b, r)] if name in f]
                if name in SPREAD and len(spread) > 1:
                    cell += f" ({min(spread):.{digits}f}-{max(spread):.{digits}f})"
                cells.append(cell)
        rows.append((name, *cells))
    print()
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
