"""Read and create latency of taskorch at 10k, 100k and 1M stored tasks (SQLite, PostgreSQL).

How the database is filled (honestly, but quickly):
1. 10k tasks through the API: a server with 2 in-process worker slots runs 9,400 of them
   (60% text_analysis, 35% echo, 5% echo that fails its only attempt); then, with no workers,
   600 more are created and 200 of those cancelled, so every status but RUNNING has rows.
2. With the server stopped, bulk inserts of rows that follow store/schema.py, written in the
   same shape the server writes them (one subtask per task except containers, one event per
   status change: queued, started, completed/failed/cancelled), grow it to 100k, then to 1M:
   70% of the rows in tenant ``default`` (the caller's, as an anonymous client is) and 30%
   spread over 20 other tenants; statuses 88% completed, 4% failed, 3% cancelled, 4% pending
   (queued work no one takes: the server runs with --workers 0), 1% running (leases that
   expire in a week); task types 40% text_analysis, 20% echo, 30% inference over 6 models,
   5% git_script, 5% container tasks of 3 templates; created_at spread over the 90 days
   before the run, priorities 1-10. The counters behind list totals are then recounted (as
   migration 0005 first fills them; the server keeps them itself, bulk inserts bypass it).
   SQLite gets no ANALYZE (taskorch never runs one); PostgreSQL gets a VACUUM ANALYZE after
   each fill (what autovacuum does shortly after such an insert-only load since PostgreSQL 13).
3. At each size, a fresh server (``--workers 0``) is warmed up, then each call is sent one
   at a time (latency, concurrency 1) and its p50/p99 taken: GetTask of random tasks of the
   tenant, ListTasks (default sort; filtered by status; by task_type; a page half-way down
   the list by page_token and by offset), CreateTask and GetTasksByStatus (100 per status).

The table shows each call's p50/p99 at each size and the growth of its p50 from 10k to 1M;
flat or logarithmic costs stay near 1. Then the query plans (EXPLAIN QUERY PLAN on SQLite,
EXPLAIN ANALYZE on PostgreSQL) of the statements behind the calls, at the largest size.

Usage: python bench/scale.py [--backends sqlite,postgresql] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
from _harness import machine, percentile, table
from sqlalchemy import Connection, create_engine, event

from taskorch.client import AsyncClient
from taskorch.domain.values import Status
from taskorch.store import tasks as task_store
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess

PG = "postgres@127.0.0.1:5432"
PG_DB = "taskorch_bench_scale"
TENANT = "default"
OTHER_TENANTS = [f"tenant-{i:02d}" for i in range(20)]
MODELS = ["distilbert-sst2", "minilm-l6", "bert-ner", "gpt2", "tinyllama", "resnet18"]
TEMPLATES = ["summarise-then-classify", "embed-and-index", "ocr-pipeline"]
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "data"]
SECONDS_PER_CALL = 6.0  # each measured call runs at most this long, or its sample count


# -- servers and databases ---------------------------------------------------------------------


class Backend:
    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        if name == "sqlite":
            self.path = workdir / "scale.db"
            self.url = f"sqlite:///{self.path}"
        else:
            _pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
            _pg_admin(f"CREATE DATABASE {PG_DB}")
            self.url = f"postgresql+asyncpg://{PG}/{PG_DB}"
        self.workdir = workdir

    @property
    def sync_url(self) -> str:
        return self.url if self.name == "sqlite" else f"postgresql+psycopg://{PG}/{PG_DB}"

    @contextmanager
    def server(self, workers: int) -> Iterator[ServerProcess]:
        server = ServerProcess(
            workdir=self.workdir,
            database_url=self.url,
            # No quota: 5% of the synthetic tasks are unfinished, far more than its default.
            args=("--log-level", "warning", "--workers", str(workers), "--max-active-tasks", "0"),
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def drop(self) -> None:
        if self.name == "postgresql":
            _pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")


def _pg_admin(sql: str) -> None:
    with psycopg.connect(f"postgresql://{PG}/test", autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


# -- 1. the first 10k through the API ----------------------------------------------------------


async def fill_through_api(backend: Backend, count: int) -> None:
    queued = max(1, count * 6 // 100)
    ran = count - queued

    async def create_all(client: AsyncClient, specs: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        cursor = 0

        async def submitter() -> None:
            nonlocal cursor
            while cursor < len(specs):
                spec = specs[cursor]
                cursor += 1
                ids.append((await client.create_task(**spec)).task_id)

        await asyncio.gather(*(submitter() for _ in range(32)))
        return ids

    rng = random.Random(1)
    specs: list[dict[str, Any]] = []
    for i in range(ran):
        roll = rng.random()
        priority = rng.randint(1, 10)
        if roll < 0.60:
            specs.append({"text": _sentence(rng, i), "priority": priority})
        elif roll < 0.95:
            specs.append({"task_type": "echo", "input_data": {"n": i}, "priority": priority})
        else:
            specs.append(
                {
                    "task_type": "echo",
                    "input_data": {"n": i, "fail_attempts": 1},
                    "max_attempts": 1,
                    "priority": priority,
                }
            )
    with backend.server(workers=2) as server:
        async with AsyncClient(server.grpc_addr) as client:
            await create_all(client, specs)
            deadline = time.monotonic() + 900
            while True:
                counts = await _counts(server.grpc_addr)
                if counts["completed"] + counts["failed"] >= ran:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"API fill did not finish: {counts}")
                await asyncio.sleep(0.5)
    with backend.server(workers=0) as server:
        async with AsyncClient(server.grpc_addr) as client:
            ids = await create_all(
                client, [{"task_type": "echo", "input_data": {"n": i}} for i in range(queued)]
            )
            for task_id in ids[: queued // 3]:
                await client.cancel_task(task_id, "benchmark fill")


async def _counts(addr: str) -> dict[str, int]:
    async with AsyncClient(addr) as client:
        return {
            s: (await client.list_tasks(status=s, limit=1)).total
            for s in ("pending", "running", "completed", "failed", "cancelled")
        }


def _sentence(rng: random.Random, i: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + f" #{i}"


# -- 2. growing it with bulk inserts -----------------------------------------------------------


def synthetic_rows(
    rng: random.Random, count: int, now: datetime
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]]:
    """(task, subtask or None, events) rows shaped like the ones the server writes."""
    span = timedelta(days=90).total_seconds()
    for _ in range(count):
        created = now - timedelta(seconds=rng.uniform(3600, span))
        tenant = TENANT if rng.random() < 0.70 else rng.choice(OTHER_TENANTS)
        roll = rng.random()
        status = (
            Status.COMPLETED
            if roll < 0.88
            else Status.FAILED
            if roll < 0.92
            else Status.CANCELLED
            if roll < 0.95
            else Status.PENDING
            if roll < 0.99
            else Status.RUNNING
        )
        roll = rng.random()
        model, template, text, data = "", "", None, None
        if roll < 0.40:
            task_type = kind = "text_analysis"
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
            subtask_input: Any = {"text": text, "top_n": 5}
        elif roll < 0.60:
            task_type = kind = "echo"
            data = {"n": rng.randint(0, 10**6)}
            subtask_input = data
        elif roll < 0.90:
            task_type = kind = "inference"
            model = rng.choice(MODELS)
            data = {"inputs": " ".join(rng.choice(WORDS) for _ in range(8))}
            subtask_input = {"model": model, **data}
        elif roll < 0.95:
            task_type = kind = "git_script"
            data = {"repository": "https://example.invalid/repo.git", "script": "run.sh"}
            subtask_input = data
        else:
            task_type, kind = "container", None
            template = rng.choice(TEMPLATES)
            subtask_input = None
        task_id = str(uuid.uuid4())
        started = created + timedelta(milliseconds=rng.uniform(1, 500))
        ended = started + timedelta(milliseconds=rng.uniform(5, 3000))
        worker = f"worker-{rng.randint(1, 40)}"
        result = error = error_code = None
        started_at = completed_at = cancelled_at = lease_id = lease_expires = None
        progress, attempt, updated = 0.0, 0, created
        messages = ["queued"]
        if status is Status.RUNNING:
            started_at, updated, attempt, progress = started, started, 1, 50.0
            lease_id, lease_expires = str(uuid.uuid4()), now + timedelta(days=7)
            messages.append(f"attempt 1 started on {worker}")
        elif status in (Status.COMPLETED, Status.FAILED):
            started_at, completed_at, updated, attempt = started, ended, ended, 1
            messages += [f"attempt 1 started on {worker}", status.name.lower()]
            if status is Status.COMPLETED:
                progress, result = 100.0, {"ok": True, "n": rng.randint(0, 1000)}
            else:
                error, error_code = "the handler raised", "HANDLER_ERROR"
        elif status is Status.CANCELLED:
            cancelled_at = completed_at = updated = ended
            messages.append("cancelled")
        task = {
            "task_id": task_id,
            "tenant_id": tenant,
            "status": int(status),
            "task_type": task_type,
            "model_name": model,
            "template": template,
            "text": text,
            "input_data": data,
            "parameters": None,
            "priority": rng.randint(1, 10),
            "depends_on": None,
            "result": result,
            "error": error,
            "error_code": error_code,
            "progress": progress,
            "progress_message": None,
            "worker_id": worker if started_at else None,
            "request_id": None,
            "attempt": attempt,
            "max_attempts": 3,
            "timeout_seconds": None,
            "resource_usage": None,
            "sequence": len(messages),
            "cancel_reason": "no longer needed" if status is Status.CANCELLED else None,
            "created_at": created,
            "updated_at": updated,
            "started_at": started_at,
            "completed_at": completed_at,
            "cancelled_at": cancelled_at,
        }
        subtask = None
        if kind is not None:
            subtask = {
                "subtask_id": str(uuid.uuid4()),
                "task_id": task_id,
                "tenant_id": tenant,
                "kind": kind,
                "model_name": model,
                "name": "",
                "stage": 0,
                "input": subtask_input,
                "info": None,
                "status": int(status),
                "progress": progress,
                "result": result,
                "error": error,
                "error_code": error_code,
                "attempt": attempt,
                "max_attempts": 3,
                "priority": task["priority"],
                "ready": True,
                "available_at": created,
                "lease_id": lease_id,
                "lease_expires_at": lease_expires,
                "worker_id": task["worker_id"],
                "timeout_seconds": None,
                "created_at": created,
                "updated_at": updated,
                "started_at": started_at,
                "completed_at": completed_at,
            }
        stamps = [created, started, ended]
        statuses = [Status.PENDING, Status.RUNNING, status]
        if status is Status.CANCELLED:
            stamps, statuses = [created, ended], [Status.PENDING, status]
        events = [
            {
                "task_id": task_id,
                "tenant_id": tenant,
                "sequence": n + 1,
                "type": 2,  # STATUS_CHANGED
                "status": int(statuses[n]),
                "progress": 100.0 if statuses[n] is Status.COMPLETED else 0.0,
                "message": message,
                "output_delta": None,
                "data": None,
                "created_at": stamps[n],
            }
            for n, message in enumerate(messages)
        ]
        yield task, subtask, events


JSON_COLUMNS = {
    "input_data",
    "parameters",
    "depends_on",
    "result",
    "resource_usage",
    "input",
    "info",
    "data",
}


# The counters behind list totals, /health and the quota, recounted after a bulk insert exactly
# as migration 0005 first filled them (the server keeps them up to date itself).
RECOUNT = (
    "DELETE FROM task_count_deltas",
    "DELETE FROM task_counts",
    "INSERT INTO task_counts (tenant_id, status, task_type, model_name, template, count) "
    "SELECT tenant_id, status, task_type, model_name, template, COUNT(*) FROM tasks "
    "GROUP BY tenant_id, status, task_type, model_name, template",
)


def bulk_insert(backend: Backend, count: int, seed: int) -> float:
    """Adds ``count`` synthetic tasks; returns the seconds it took."""
    from taskorch.store.schema import subtasks, task_events, tasks

    started = time.monotonic()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    task_cols = [c.name for c in tasks.columns]
    subtask_cols = [c.name for c in subtasks.columns]
    event_cols = [c.name for c in task_events.columns if c.name != "event_id"]
    chunk = 20_000
    rows = synthetic_rows(rng, count, now)
    if backend.name == "sqlite":

        def value(name: str, v: Any) -> Any:
            if name in JSON_COLUMNS:
                return json.dumps(v)  # the JSON type stores None as 'null'
            if isinstance(v, datetime):
                return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            return v

        def insert_sql(table: str, cols: list[str]) -> str:
            return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

        conn = sqlite3.connect(backend.path)
        conn.execute("PRAGMA journal_mode=WAL")
        try:
            while True:
                batch = [r for _, r in zip(range(chunk), rows, strict=False)]
                if not batch:
                    break
                with conn:
                    conn.executemany(
                        insert_sql("tasks", task_cols),
                        [[value(c, t[c]) for c in task_cols] for t, _, _ in batch],
                    )
                    conn.executemany(
                        insert_sql("subtasks", subtask_cols),
                        [[value(c, s[c]) for c in subtask_cols] for _, s, _ in batch if s],
                    )
                    conn.executemany(
                        insert_sql("task_events", event_cols),
                        [[value(c, e[c]) for c in event_cols] for _, _, es in batch for e in es],
                    )
            with conn:
                for statement in RECOUNT:
                    conn.execute(statement)
        finally:
            conn.close()
    else:

        def pg_value(name: str, v: Any) -> Any:
            return json.dumps(v) if name in JSON_COLUMNS else v

        with psycopg.connect(f"postgresql://{PG}/{PG_DB}") as conn:
            while True:
                batch = [r for _, r in zip(range(chunk), rows, strict=False)]
                if not batch:
                    break
                with conn.cursor() as cur:
                    for table_name, cols, items in (
                        ("tasks", task_cols, [t for t, _, _ in batch]),
                        ("subtasks", subtask_cols, [s for _, s, _ in batch if s]),
                        ("task_events", event_cols, [e for _, _, es in batch for e in es]),
                    ):
                        with cur.copy(f"COPY {table_name} ({', '.join(cols)}) FROM STDIN") as copy:
                            for item in items:
                                copy.write_row([pg_value(c, item[c]) for c in cols])
                conn.commit()
            with conn.cursor() as cur:
                for statement in RECOUNT:
                    cur.execute(statement)
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE tasks")
            conn.execute("VACUUM ANALYZE subtasks")
            conn.execute("VACUUM ANALYZE task_events")
    return time.monotonic() - started


# -- 3. measuring ------------------------------------------------------------------------------


CALLS = [
    "GetTask",
    "ListTasks, default sort",
    "ListTasks, status=pending",
    "ListTasks, status=completed",
    "ListTasks, task_type=inference",
    "ListTasks, half-way down by page_token",
    "ListTasks, half-way down by offset",
    "GetTasksByStatus (100 per status)",
    "CreateTask",
]


async def sample(
    call: Callable[[], Any], count: int, seconds: float = SECONDS_PER_CALL
) -> list[float]:
    """Latencies of ``call`` sent one at a time: ``count`` of them, or fewer (at least 10)
    when they take longer than ``seconds`` in all."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while len(latencies) < count and (len(latencies) < 10 or time.monotonic() < deadline):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


def tenant_tasks(backend: Backend, n: int) -> tuple[list[str], int]:
    """``n`` random task ids of the caller's tenant, and how many tasks it has."""
    engine = create_engine(backend.sync_url)
    try:
        with engine.connect() as conn:
            ids = [
                row[0]
                for row in conn.exec_driver_sql(
                    "SELECT task_id FROM tasks WHERE tenant_id = 'default' "
                    f"ORDER BY random() LIMIT {n}"
                )
            ]
            stored = conn.exec_driver_sql(
                "SELECT count(*) FROM tasks WHERE tenant_id = 'default'"
            ).scalar_one()
            return ids, stored
    finally:
        engine.dispose()


async def measure(backend: Backend, samples: int) -> dict[str, list[float]]:
    ids, stored = tenant_tasks(backend, 1000)
    rng = random.Random(7)
    with backend.server(workers=0) as server:
        channel = grpc.aio.insecure_channel(server.grpc_addr)
        stub = pb_grpc.TaskServiceStub(channel)
        total = (await stub.ListTasks(pb.ListTasksRequest(limit=1))).total
        assert total == stored, f"ListTasks total {total}, but {stored} tasks are stored"
        half = total // 2
        deep = await stub.ListTasks(pb.ListTasksRequest(limit=50, offset=half))
        token = deep.next_page_token
        assert token, "no page token half-way down"
        calls: dict[str, Callable[[], Any]] = {
            "GetTask": lambda: stub.GetTask(pb.GetTaskRequest(task_id=rng.choice(ids))),
            "ListTasks, default sort": lambda: stub.ListTasks(pb.ListTasksRequest()),
            "ListTasks, status=pending": lambda: stub.ListTasks(
                pb.ListTasksRequest(status="pending")
            ),
            "ListTasks, status=completed": lambda: stub.ListTasks(
                pb.ListTasksRequest(status="completed")
            ),
            "ListTasks, task_type=inference": lambda: stub.ListTasks(
                pb.ListTasksRequest(task_type="inference")
            ),
            "ListTasks, half-way down by page_token": lambda: stub.ListTasks(
                pb.ListTasksRequest(limit=50, page_token=token)
            ),
            "ListTasks, half-way down by offset": lambda: stub.ListTasks(
                pb.ListTasksRequest(limit=50, offset=half)
            ),
            "GetTasksByStatus (100 per status)": lambda: stub.GetTasksByStatus(
                pb.GetTasksByStatusRequest()
            ),
            "CreateTask": lambda: stub.CreateTask(
                pb.CreateTaskRequest(task_type="echo", input_data={"n": 1})
            ),
        }
        results: dict[str, list[float]] = {}
        for name in CALLS:  # warm caches and connections first
            await sample(calls[name], 5, seconds=2)
        for name in CALLS:
            results[name] = await sample(calls[name], samples)
        await channel.close()
    return results


# -- the plans ---------------------------------------------------------------------------------


def explain(backend: Backend) -> list[tuple[str, list[str]]]:
    """The statements behind the measured calls, as the server builds them, and their plans."""
    engine = create_engine(backend.sync_url)
    captured: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        captured.append((statement, params))

    out: list[tuple[str, list[str]]] = []
    try:
        with engine.connect() as conn:
            any_id = conn.exec_driver_sql(
                "SELECT task_id FROM tasks WHERE tenant_id = 'default' LIMIT 1"
            ).scalar_one()
            total = conn.exec_driver_sql(
                "SELECT count(*) FROM tasks WHERE tenant_id = 'default'"
            ).scalar_one()
            middle = task_store.list_tasks(
                conn,
                task_store.TaskQuery(tenant_id=TENANT, limit=1, offset=total // 2),
                count=False,
            )[0][0]
            Q = task_store.TaskQuery
            cases: list[tuple[str, Callable[[Connection], Any]]] = [
                ("GetTask", lambda c: task_store.get_task(c, TENANT, any_id)),
                ("ListTasks, default sort", lambda c: task_store.list_tasks(c, Q(TENANT))),
                (
                    "ListTasks, status=pending",
                    lambda c: task_store.list_tasks(c, Q(TENANT, status=Status.PENDING)),
                ),
                (
                    "ListTasks, task_type=inference",
                    lambda c: task_store.list_tasks(c, Q(TENANT, task_type="inference")),
                ),
                (
                    "ListTasks, by page_token",
                    lambda c: task_store.list_tasks(
                        c, Q(TENANT, after=(middle.created_at, middle.task_id))
                    ),
                ),
                (
                    "ListTasks, by offset",
                    lambda c: task_store.list_tasks(c, Q(TENANT, offset=total // 2)),
                ),
                (
                    "GetTasksByStatus, one of its 5 queries",
                    lambda c: task_store.list_tasks(
                        c, Q(TENANT, status=Status.COMPLETED, limit=100), count=False
                    ),
                ),
            ]
            for name, run in cases:
                captured.clear()
                event.listen(engine, "before_cursor_execute", before)
                try:
                    run(conn)
                finally:
                    event.remove(engine, "before_cursor_execute", before)
                for statement, params in captured:
                    prefix = (
                        "EXPLAIN QUERY PLAN "
                        if backend.name == "sqlite"
                        else "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
                    )
                    plan = conn.exec_driver_sql(prefix + statement, params).fetchall()
                    timings = []
                    for _ in range(3):
                        started = time.perf_counter()
                        conn.exec_driver_sql(statement, params).fetchall()
                        timings.append(time.perf_counter() - started)
                    if backend.name == "sqlite":
                        lines = [f"{row[-1]}" for row in plan]
                    else:
                        lines = [row[0] for row in plan]
                    kind = "COUNT" if "count(" in statement.lower() else "SELECT"
                    kind += f", the statement alone {statistics.median(timings) * 1e3:.1f} ms"
                    sql = re.sub(
                        r"^SELECT tasks\.task_id, .*? FROM", "SELECT tasks.* FROM",
                        " ".join(statement.split()),
                    )  # fmt: skip
                    out.append((f"{name}: {kind}", [sql, *lines]))
    finally:
        engine.dispose()
    return out


# -- the run -----------------------------------------------------------------------------------


def ms(values: list[float], p: float) -> float:
    return percentile(values, p) * 1e3


async def run_backend(name: str, sizes: list[int], samples: int) -> None:
    print(f"\n## {name}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-scale-") as workdir:
        backend = Backend(name, Path(workdir))
        try:
            results: dict[int, dict[str, list[float]]] = {}
            stored = 0
            for size in sizes:
                t0 = time.monotonic()
                if stored == 0:
                    await fill_through_api(backend, size)
                    how = "through the API"
                else:
                    bulk_insert(backend, size - stored, seed=size)
                    how = "by bulk insert"
                stored = size
                print(
                    f"filled to {size:,} tasks {how} in {time.monotonic() - t0:.0f} s", flush=True
                )
                results[size] = await measure(backend, samples)
                print(
                    "  "
                    + ", ".join(f"{call}: {ms(results[size][call], 50):.1f} ms" for call in CALLS),
                    flush=True,
                )
            first, last = sizes[0], sizes[-1]
            header = (
                "call (p50 / p99 ms)",
                *(f"{s:,} tasks" for s in sizes),
                f"p50 growth {first // 1000}k→{last // 1000}k",
            )
            rows: list[tuple[str, ...]] = [header]
            for call in CALLS:
                growth = statistics.median(results[last][call]) / statistics.median(
                    results[first][call]
                )
                rows.append(
                    (
                        call,
                        *(
                            f"{ms(results[s][call], 50):.1f} / {ms(results[s][call], 99):.1f}"
                            for s in sizes
                        ),
                        f"{growth:.1f}x",
                    )
                )
            print()
            print(table(rows))
            print(f"\nQuery plans at {last:,} tasks ({name}):")
            for title, lines in explain(backend):
                print(f"\n- {title}\n    {lines[0]}")
                for line in lines[1:]:
                    print(f"      {line}")
        finally:
            backend.drop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--samples", type=int, default=200, help="calls per measure, at most")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {machine()}")
    with psycopg.connect(f"postgresql://{PG}/test") as conn:
        print(f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}")  # type: ignore[index]
    print(f"SQLite {sqlite3.sqlite_version}; latency of one call at a time, p50 / p99")
    for name in args.backends.split(","):
        await run_backend(name, sizes, args.samples)


if __name__ == "__main__":
    asyncio.run(main())
