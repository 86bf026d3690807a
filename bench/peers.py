"""taskorch against pgqueuer, Celery + Redis and procrastinate on the same trivial task, in one
run.

For each system and each number of workers (1, 2, 4 by default), on a fresh queue:

1. throughput: ``--tasks`` tasks submitted as fast as the system's client goes while the
   workers run them; end-to-end tasks/s = tasks / (last completion - first submit); also the
   whole machine's busy CPU time per task over that run (every process, the client and the
   database too: how much work a task is, apart from how much of it runs in parallel; the
   submitting client's share apart) and the share of the run some process waited for the
   disk (a run far above its neighbours had a disk the others did not);
2. latency at a paced rate (``--rate``, 50 tasks/s): submit → done and dispatch
   (submit → a worker has it), p50 and p99.

Times: "submit" is the client's clock just before the submit call; "start" and "done" are
each system's own record of it: taskorch's started_at (the lease) and completed_at (the
completing transaction); procrastinate's job events ``started`` (the fetch) and ``succeeded``
(the finish); for Celery the task body's clock at start (after the prefork parent handed the
message to a child: a little later than a lease) and the result's ``date_done`` (stored in
Redis). All processes run on this machine, so they share one clock. "Notified" is when a
client that listens for completions hears of each: every system's listener is open before the
first submit (Celery's pattern subscription to its result keys, a LISTEN on the peers'
PostgreSQL triggers, and for taskorch one ``WatchTasks`` stream of ends; until 2026-12-04 it
was a ``WatchTask`` per task opened after its submit returned, one round trip more).

Systems (the task returns its input; see _peer_apps.py):
- taskorch, SQLite (synchronous=FULL) or PostgreSQL (fsync on); the like-for-like setup is
  ``serve --workers 0`` plus N ``taskorch worker --concurrency 1 --kinds echo`` processes; its
  default, N in-process worker slots (``serve --workers N``), is shown too. ``:10`` rows give
  each worker 10 concurrent tasks (``--concurrency 10``; in process, 10N slots), the
  concurrency a pgqueuer worker runs at;
- Celery 5 with Redis as broker and result backend (a private redis-server without
  persistence), prefork pool of N child processes, acks_late + prefetch multiplier 1;
- procrastinate 3 on the same PostgreSQL: N ``procrastinate worker --concurrency 1``;
- pgqueuer 1.6 on the same PostgreSQL: N worker processes with its defaults (dequeue batches
  of 10, every job its own asyncio task with no concurrency limit, buffered completion
  logging; bench/_pgqueuer_worker.py), the fastest durable Python queue measured here;
- ``bare``, the bound rather than a peer: bench/_bare_task_server.py speaks taskorch's
  CreateTask and WatchTasks (the same SDK client and listener) and per task does only the
  call, the echo inline, one durable SQLite commit (group-committed) and the event out: what
  any durable gRPC task service in Python pays here before its own features.

Clients: every system submits one task per call from 32 concurrent clients: coroutines of
the async clients (taskorch's SDK, procrastinate, pgqueuer through an asyncpg pool), threads
for Celery's synchronous one. taskorch's BatchCreateTasks rows are shown apart.

Every configuration runs ``--repeats`` times, in alternating order; the tables show medians
(throughput with min-max). Usage:

    python bench/peers.py [--tasks 600] [--paced 200] [--rate 50] [--repeats 3]
        [--workers 1,2,4]
        [--systems sqlite,pg,sqlite:10,pg:10,sqlite-batch,pg-batch,sqlite-inproc,pg-inproc,
                   sqlite-inproc:10,pg-inproc:10,celery,procrastinate,pgqueuer,bare]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import inspect
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from _harness import (
    cpu_seconds,
    empty_server_process,
    free_port,
    io_stall_seconds,
    machine,
    machine_busy_seconds,
    percentile,
    table,
    taskorch_server,
)

from taskorch.client import AsyncClient
from tests.servers import ServerProcess, WorkerProcess

BENCH = Path(__file__).resolve().parent
PG = "postgres@127.0.0.1:5432"
PG_ADMIN_DSN = f"postgresql://{PG}/test"
TASKORCH_DB = "taskorch_bench_peers"
PROCRASTINATE_DB = "taskorch_bench_procrastinate"
PGQUEUER_DB = "taskorch_bench_pgqueuer"
SUBMITTERS = 32
TIMEOUT = 300.0


# -- PostgreSQL and Redis of the run -----------------------------------------------------------


def pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def recreate_database(name: str) -> None:
    pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg_admin(f"CREATE DATABASE {name}")


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port, without persistence."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="taskorch-bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A peer's worker in a process group of its own (Celery's pool children go with it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=BENCH,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group
        os.killpg(proc.pid, signal.SIGKILL)


# -- the systems -------------------------------------------------------------------------------


class System:
    """One queue system with N workers running, from ``start`` to ``stop``."""

    label = ""

    async def start(self, workers: int, logdir: Path) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def submit(self, n: int) -> Any:
        raise NotImplementedError

    async def submit_many(self, first: int, count: int) -> list[Any]:
        ids: list[Any] = [None] * count
        cursor = 0

        async def submitter() -> None:
            nonlocal cursor
            while cursor < count:
                index = cursor
                cursor += 1
                ids[index] = await self.submit(first + index)

        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
        return ids

    async def wait_done(self, ids: list[Any]) -> None:
        raise NotImplementedError

    async def times(self, ids: list[Any]) -> dict[Any, tuple[float, float]]:
        """(start, done) of each task, as epoch seconds."""
        raise NotImplementedError

    # A client that waits for completions through the system's own notifications: the time
    # it learns of each (epoch seconds).

    async def observe(self) -> None:
        self.heard: dict[Any, float] = {}

    def submitted(self, task: Any) -> None:
        """Called right after a paced task was submitted."""

    def server_pid(self) -> int | None:
        """The system's one server process, when it has one (taskorch, the bound)."""
        return None

    def server_cpu(self) -> float | None:
        """CPU seconds the system's server process has used so far (None: not measured)."""
        pid = self.server_pid()
        return cpu_seconds(pid) if pid is not None else None

    def loop_cpu(self) -> float | None:
        """CPU seconds its server's main thread (the event loop) has used so far."""
        pid = self.server_pid()
        return cpu_seconds(pid, thread=pid) if pid is not None else None

    async def notified(self, ids: list[Any]) -> dict[Any, float]:
        deadline = time.monotonic() + TIMEOUT
        while any(k not in self.heard for k in ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: completions not heard")
            await asyncio.sleep(0.05)
        return self.heard


class _ThreadObserver:
    """A thread that records when each completion notice arrives."""

    def __init__(self, listen: Any) -> None:
        self.heard: dict[Any, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=listen, args=(self,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)


class Taskorch(System):
    def __init__(
        self, backend: str, in_process: bool, batch: int = 0, concurrency: int = 1
    ) -> None:
        self.backend = backend
        self.in_process = in_process
        self.batch = batch
        self.concurrency = concurrency
        where = "SQLite" if backend == "sqlite" else "PostgreSQL"
        each = f"{concurrency}x" if concurrency > 1 else ""
        self.label = f"taskorch {where}, " + (
            f"{each}N in-process slots" if in_process else f"N remote worker procs x{concurrency}"
        )
        if batch:
            self.label += f", submits {batch} per BatchCreateTasks"
        self._server: contextlib.AbstractContextManager[ServerProcess] | None = None
        self._process: ServerProcess | None = None
        self._workers: list[WorkerProcess] = []
        self.client: AsyncClient | None = None
        self._done_before = 0

    async def start(self, workers: int, logdir: Path) -> None:
        url = None
        if self.backend == "postgresql":
            recreate_database(TASKORCH_DB)
            url = f"postgresql+asyncpg://{PG}/{TASKORCH_DB}"
        slots = str(workers * self.concurrency if self.in_process else 0)
        self._server = taskorch_server("--workers", slots, database_url=url)
        server = self._process = self._server.__enter__()
        if not self.in_process:
            for i in range(workers):
                worker = WorkerProcess(
                    server.grpc_addr,
                    logdir / f"taskorch-worker-{i}.log",
                    args=("--concurrency", str(self.concurrency), "--kinds", "echo"),
                )
                self._workers.append(worker.start())
            for worker in self._workers:
                await asyncio.to_thread(worker.wait_connected)
        self.client = AsyncClient(server.grpc_addr)
        self._done_before = 0

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        for worker in self._workers:
            worker.stop()
        self._workers = []
        if self._server is not None:
            self._server.__exit__(None, None, None)
        self._server = self._process = None
        if self.backend == "postgresql":
            pg_admin(f"DROP DATABASE IF EXISTS {TASKORCH_DB} WITH (FORCE)")

    async def submit(self, n: int) -> str:
        assert self.client is not None
        task = await self.client.create_task(task_type="echo", input_data={"n": n})
        return task.task_id

    def server_pid(self) -> int | None:
        proc = self._process.proc if self._process is not None else None
        return proc.pid if proc is not None else None

    async def submit_many(self, first: int, count: int) -> list[Any]:
        if not self.batch:
            return await super().submit_many(first, count)
        client = self.client
        assert client is not None
        chunks = [
            range(first + start, first + min(start + self.batch, count))
            for start in range(0, count, self.batch)
        ]
        # A few calls in flight, each a whole batch (one transaction on the server).
        limit = asyncio.Semaphore(4)

        async def send(chunk: range) -> list[str]:
            async with limit:
                requests = [{"task_type": "echo", "input_data": {"n": n}} for n in chunk]
                return [t.task_id for t in await client.create_tasks(requests)]

        done = await asyncio.gather(*(send(chunk) for chunk in chunks))
        return [task_id for ids in done for task_id in ids]

    async def wait_done(self, ids: list[Any]) -> None:
        assert self.client is not None
        deadline = time.monotonic() + TIMEOUT
        expected = self._done_before + len(ids)
        while (await self.client.list_tasks(status="completed", limit=1)).total < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: tasks did not complete")
            await asyncio.sleep(0.05)
        self._done_before = expected

    async def observe(self) -> None:
        # One stream of every task's end, open before the first submit, as the peers'
        # listeners are (Celery's pattern subscription, the PostgreSQL LISTENs).
        assert self.client is not None
        self.heard = {}
        self._watch = self.client.watch_tasks(terminal_only=True, timeout=TIMEOUT)
        await self._watch.__aenter__()

        async def listen() -> None:
            async for event in self._watch.events():
                self.heard[event.task_id] = time.time()

        self._listener = asyncio.create_task(listen())

    async def notified(self, ids: list[Any]) -> dict[Any, float]:
        deadline = time.monotonic() + TIMEOUT
        try:
            while any(i not in self.heard for i in ids):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.label}: completions not heard")
                await asyncio.sleep(0.05)
            return {i: self.heard[i] for i in ids}
        finally:
            await self._watch.__aexit__(None, None, None)
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener

    async def times(self, ids: list[Any]) -> dict[Any, tuple[float, float]]:
        assert self.client is not None
        wanted = set(ids)
        found = {}
        async for task in self.client.iter_tasks(limit=1000):
            if task.task_id in wanted:
                assert task.started_at and task.completed_at
                found[task.task_id] = (task.started_at.timestamp(), task.completed_at.timestamp())
        return found


class BareTaskService(Taskorch):
    """The bound: bench/_bare_task_server.py, a gRPC task service that per task does only
    the call, one inline echo, one durable SQLite commit (group-committed) and the event out;
    driven by the same SDK client and WatchTasks listener as taskorch. Workers: none (the
    task runs inside the call)."""

    label = "bound: bare gRPC + SQLite task service (inline run, one commit)"

    def __init__(self) -> None:
        super().__init__("sqlite", in_process=True)
        self.label = BareTaskService.label
        self._bare: subprocess.Popen[bytes] | None = None
        self._times: dict[str, tuple[float, float]] = {}

    async def start(self, workers: int, logdir: Path) -> None:
        port = free_port()
        self._bare = spawn(
            [sys.executable, str(BENCH / "_bare_task_server.py"), str(port),
             str(logdir / "bare.db")],
            logdir / "bare.log",
        )  # fmt: skip
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as channel:
            await asyncio.to_thread(grpc.channel_ready_future(channel).result, 20)
        self.client = AsyncClient(target)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self._bare is not None:
            stop_group(self._bare)
            self._bare = None

    async def submit(self, n: int) -> str:
        assert self.client is not None
        task = await self.client.create_task(task_type="echo", input_data={"n": n})
        assert task.started_at and task.completed_at
        self._times[task.task_id] = (task.started_at.timestamp(), task.completed_at.timestamp())
        return task.task_id

    def server_pid(self) -> int | None:
        return self._bare.pid if self._bare is not None else None

    async def wait_done(self, ids: list[Any]) -> None:
        """Nothing to wait for: each create answers once its task is done and durable."""

    async def times(self, ids: list[Any]) -> dict[Any, tuple[float, float]]:
        return {i: self._times[i] for i in ids}


class CeleryRedis(System):
    label = "Celery + Redis, prefork N, acks_late, prefetch 1"

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._proc: subprocess.Popen[bytes] | None = None
        from _peer_apps import celery_app, celery_echo

        self.app = celery_app
        self.echo = celery_echo

    async def start(self, workers: int, logdir: Path) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()
        self._proc = spawn(
            [sys.executable, "-m", "celery", "-A", "_peer_apps", "worker", "--pool", "prefork",
             "--concurrency", str(workers), "--prefetch-multiplier", "1", "--loglevel", "warning",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            logdir / "celery.log",
            {"BENCH_REDIS_URL": self.redis_url},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.app.control.ping(timeout=0.5):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start: {logdir / 'celery.log'}")

    async def stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc)

    async def submit(self, n: int) -> Any:
        return self.echo.apply_async(({"n": n},))

    async def submit_many(self, first: int, count: int) -> list[Any]:
        # A synchronous client: 32 threads, each sending one task per call like the other
        # systems' 32 coroutines (kombu's producer pool gives each thread its connection).
        results: list[Any] = [None] * count

        def send(index: int) -> None:
            results[index] = self.echo.apply_async(({"n": first + index},))

        with ThreadPoolExecutor(SUBMITTERS) as pool:
            list(pool.map(send, range(count)))
        return results

    async def wait_done(self, ids: list[Any]) -> None:
        for result in ids:
            result.get(timeout=TIMEOUT)

    async def times(self, ids: list[Any]) -> dict[Any, tuple[float, float]]:
        return {r: (r.result["started"], r.date_done.timestamp()) for r in ids}

    async def observe(self) -> None:
        import redis

        subscribed = threading.Event()

        def listen(observer: _ThreadObserver) -> None:
            # The result backend stores a result with SET and PUBLISH in one pipeline.
            pubsub = redis.Redis.from_url(self.redis_url).pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe("celery-task-meta-*")
            subscribed.set()
            while not observer.stopping.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is not None:
                    key = message["channel"].decode().removeprefix("celery-task-meta-")
                    observer.heard[key] = time.time()
            pubsub.close()

        self._observer = _ThreadObserver(listen)
        await asyncio.to_thread(subscribed.wait, 10)

    async def notified(self, ids: list[Any]) -> dict[Any, float]:
        deadline = time.monotonic() + TIMEOUT
        try:
            while any(r.id not in self._observer.heard for r in ids):
                if time.monotonic() > deadline:
                    raise TimeoutError("celery: completions not heard")
                await asyncio.sleep(0.05)
            return {r: self._observer.heard[r.id] for r in ids}
        finally:
            self._observer.close()


# procrastinate keeps no results: a trigger tells a listening client of each success (the
# way the peer baselines timed it); the NOTIFY is delivered when the finishing commit is done.
NOTIFY_SUCCEEDED = """
CREATE FUNCTION bench_notify_succeeded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_succeeded', NEW.id::text);
    RETURN NEW;
END;
$$;
CREATE TRIGGER bench_notify_succeeded AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION bench_notify_succeeded();
"""


class Procrastinate(System):
    label = "procrastinate, PostgreSQL, N worker procs"

    def __init__(self) -> None:
        self.dsn = f"postgresql://{PG}/{PROCRASTINATE_DB}"
        from _peer_apps import procrastinate_app, procrastinate_echo

        recreate_database(PROCRASTINATE_DB)
        self.app = procrastinate_app
        self.echo = procrastinate_echo
        self._procs: list[subprocess.Popen[bytes]] = []
        self._opened: Any = None
        self._schema_applied = False

    async def _sql(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
            return await cursor.fetchall() if cursor.description else []

    async def start(self, workers: int, logdir: Path) -> None:
        self._opened = self.app.open_async()
        await self._opened.__aenter__()
        if not self._schema_applied:
            await self.app.schema_manager.apply_schema_async()
            await self._sql(NOTIFY_SUCCEEDED)
            self._schema_applied = True
        await self._sql(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE"
        )
        for i in range(workers):
            self._procs.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "procrastinate",
                        "--app",
                        "_peer_apps.procrastinate_app",
                        "worker",
                        "--concurrency",
                        "1",
                        "--name",
                        f"bench-{i}",
                    ],
                    logdir / f"procrastinate-{i}.log",
                    {"BENCH_PROCRASTINATE_DSN": self.dsn},
                )
            )
        deadline = time.monotonic() + 60
        while (await self._sql("SELECT count(*) FROM procrastinate_workers"))[0][0] < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self._procs):
                raise RuntimeError(f"procrastinate workers did not start: see {logdir}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for proc in self._procs:
            stop_group(proc)
        self._procs = []
        if self._opened is not None:
            await self._opened.__aexit__(None, None, None)
            self._opened = None

    async def submit(self, n: int) -> int:
        return await self.echo.defer_async(data={"n": n})

    async def wait_done(self, ids: list[Any]) -> None:
        deadline = time.monotonic() + TIMEOUT
        query = (
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' AND id = ANY(%s)"
        )
        while (await self._sql(query, ids))[0][0] < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError("procrastinate: jobs did not complete")
            await asyncio.sleep(0.05)

    async def observe(self) -> None:
        listening = threading.Event()

        def listen(observer: _ThreadObserver) -> None:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("LISTEN bench_succeeded")
                listening.set()
                while not observer.stopping.is_set():
                    for notice in conn.notifies(timeout=0.2):
                        observer.heard[int(notice.payload)] = time.time()

        self._observer = _ThreadObserver(listen)
        await asyncio.to_thread(listening.wait, 10)

    async def notified(self, ids: list[Any]) -> dict[Any, float]:
        self.heard = self._observer.heard
        try:
            return await super().notified(ids)
        finally:
            self._observer.close()

    async def times(self, ids: list[Any]) -> dict[Any, tuple[float, float]]:
        rows = await self._sql(
            "SELECT job_id, type::text, extract(epoch FROM at) FROM procrastinate_events "
            "WHERE job_id = ANY(%s) AND type IN ('started', 'succeeded')",
            ids,
        )
        seen: dict[int, dict[str, float]] = {}
        for job_id, kind, at in rows:
            seen.setdefault(job_id, {})[kind] = float(at)
        return {j: (t["started"], t["succeeded"]) for j, t in seen.items()}


# pgqueuer logs every transition in pgqueuer_log (queued, picked, successful); a trigger
# tells a listening client of each success, delivered when the logging commit is done.
PGQUEUER_NOTIFY_SUCCESSFUL = """
CREATE FUNCTION bench_notify_successful() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_successful', NEW.job_id::text);
    RETURN NEW;
END;
$$;
CREATE TRIGGER bench_notify_successful AFTER INSERT ON pgqueuer_log
    FOR EACH ROW WHEN (NEW.status = 'successful') EXECUTE FUNCTION bench_notify_successful();
"""


class PgQueuer(System):
    """pgqueuer 1.6 on the same PostgreSQL: N worker processes (bench/_pgqueuer_worker.py, its
    defaults: dequeue batches of 10, completions logged in buffered batches), clients
    enqueueing one job per call through an asyncpg pool."""

    label = "pgqueuer, PostgreSQL, N worker procs"

    def __init__(self) -> None:
        self.dsn = f"postgresql://{PG}/{PGQUEUER_DB}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._pool: Any = None
        self._queries: Any = None

    async def _sql(self, sql: str, *params: Any) -> list[Any]:
        assert self._pool is not None
        return list(await self._pool.fetch(sql, *params))

    async def start(self, workers: int, logdir: Path) -> None:
        import asyncpg
        from pgqueuer import AsyncpgPoolDriver, Queries

        recreate_database(PGQUEUER_DB)
        self._pool = await asyncpg.create_pool(self.dsn, min_size=4, max_size=SUBMITTERS)
        self._queries = Queries(AsyncpgPoolDriver(self._pool))
        await self._queries.install()
        await self._pool.execute(PGQUEUER_NOTIFY_SUCCESSFUL)
        for i in range(workers):
            proc = spawn(
                [sys.executable, str(BENCH / "_pgqueuer_worker.py"), self.dsn],
                logdir / f"pgqueuer-{i}.log",
            )
            self._procs.append(proc)
        deadline = time.monotonic() + 60
        logs = [logdir / f"pgqueuer-{i}.log" for i in range(workers)]
        while not all(log.exists() and b"ready" in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self._procs):
                raise RuntimeError(f"pgqueuer workers did not start: see {logdir}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for proc in self._procs:
            stop_group(proc)
        self._procs = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        pg_admin(f"DROP DATABASE IF EXISTS {PGQUEUER_DB} WITH (FORCE)")

    async def submit(self, n: int) -> int:
        ids = await self._queries.enqueue("echo", str(n).encode())
        return int(ids[0])

    async def wait_done(self, ids: list[Any]) -> None:
        deadline = time.monotonic() + TIMEOUT
        query = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful' AND job_id = ANY($1)"
        while (await self._sql(query, ids))[0][0] < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError("pgqueuer: jobs did not complete")
            await asyncio.sleep(0.05)

    async def observe(self) -> None:
        listening = threading.Event()

        def listen(observer: _ThreadObserver) -> None:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("LISTEN bench_successful")
                listening.set()
                while not observer.stopping.is_set():
                    for notice in conn.notifies(timeout=0.2):
                        observer.heard[int(notice.payload)] = time.time()

        self._observer = _ThreadObserver(listen)
        await asyncio.to_thread(listening.wait, 10)

    async def notified(self, ids: list[Any]) -> dict[Any, float]:
        self.heard = self._observer.heard
        try:
            return await super().notified(ids)
        finally:
            self._observer.close()

    async def times(self, ids: list[Any]) -> dict[Any, tuple[float, float]]:
        rows = await self._sql(
            "SELECT job_id, status::text, extract(epoch FROM created) FROM pgqueuer_log "
            "WHERE job_id = ANY($1) AND status IN ('picked', 'successful')",
            ids,
        )
        seen: dict[int, dict[str, float]] = {}
        for job_id, kind, at in rows:
            seen.setdefault(job_id, {})[kind] = float(at)
        return {j: (t["picked"], t["successful"]) for j, t in seen.items()}


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Figures:
    tasks_per_s: list[float] = field(default_factory=list)
    submit_per_s: list[float] = field(default_factory=list)
    # (p50, p99) of each run, seconds
    start: list[tuple[float, float]] = field(default_factory=list)
    done: list[tuple[float, float]] = field(default_factory=list)
    notified: list[tuple[float, float]] = field(default_factory=list)
    # CPU seconds the server process used per paced task (taskorch only)
    paced_cpu: list[float] = field(default_factory=list)
    # Throughput runs: CPU seconds of the whole machine per task (every process), and the
    # cores that kept busy on average
    machine_cpu: list[float] = field(default_factory=list)
    cores_busy: list[float] = field(default_factory=list)
    # and the share of each run's time some process waited for the disk
    io_stall: list[float] = field(default_factory=list)
    # CPU seconds per task of this process, the client that submits and waits
    client_cpu: list[float] = field(default_factory=list)
    # The share of each throughput run the server's event-loop thread was busy (servers
    # with one loop: taskorch, the bound)
    loop_busy: list[float] = field(default_factory=list)


async def measure(system: System, workers: int, args: argparse.Namespace, into: Figures) -> None:
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-peers-") as logdir:
        await system.start(workers, Path(logdir))
        try:
            warm = await system.submit_many(0, 20)
            await system.wait_done(warm)

            first, busy_before, stall_before, client_before, loop_before = (
                time.time(),
                machine_busy_seconds(),
                io_stall_seconds(),
                time.process_time(),
                system.loop_cpu(),
            )
            ids = await system.submit_many(100, args.tasks)
            submitted = time.time()
            await system.wait_done(ids)
            busy, took = machine_busy_seconds() - busy_before, time.time() - first
            into.client_cpu.append((time.process_time() - client_before) / args.tasks)
            into.machine_cpu.append(busy / args.tasks)
            into.cores_busy.append(busy / took)
            into.io_stall.append((io_stall_seconds() - stall_before) / took)
            if loop_before is not None and (loop_after := system.loop_cpu()) is not None:
                into.loop_busy.append((loop_after - loop_before) / took)
            times = await system.times(ids)
            assert len(times) == len(ids), f"{system.label}: {len(times)} of {len(ids)} timed"
            last = max(done for _, done in times.values())
            into.tasks_per_s.append(args.tasks / (last - first))
            into.submit_per_s.append(args.tasks / (submitted - first))

            submit_at: dict[Any, float] = {}
            await system.observe()
            cpu_before = system.server_cpu()
            begin = time.monotonic()
            for i in range(args.paced):
                at = time.time()
                task = await system.submit(10_000_000 + i)
                submit_at[task] = at
                system.submitted(task)
                await asyncio.sleep(max(0.0, begin + (i + 1) / args.rate - time.monotonic()))
            paced_ids = list(submit_at)
            heard = await system.notified(paced_ids)
            cpu_after = system.server_cpu()
            if cpu_before is not None and cpu_after is not None:
                into.paced_cpu.append((cpu_after - cpu_before) / len(paced_ids))
            await system.wait_done(paced_ids)
            paced = await system.times(paced_ids)
            start = [paced[k][0] - at for k, at in submit_at.items()]
            done = [paced[k][1] - at for k, at in submit_at.items()]
            notified = [heard[k] - at for k, at in submit_at.items()]
            into.start.append((percentile(start, 50), percentile(start, 99)))
            into.done.append((percentile(done, 50), percentile(done, 99)))
            into.notified.append((percentile(notified, 50), percentile(notified, 99)))
        finally:
            await system.stop()


def versions() -> str:
    def v(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    redis_server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    with psycopg.connect(PG_ADMIN_DSN) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
    ).stdout.strip()
    return (
        f"taskorch {commit}, celery {v('celery')}, kombu {v('kombu')}, redis-py {v('redis')}, "
        f"redis-server {redis_server[2].removeprefix('v=') if len(redis_server) > 2 else '?'}, "
        f"procrastinate {v('procrastinate')}, psycopg {v('psycopg')}, PostgreSQL {pg}, "
        f"asyncpg {v('asyncpg')}, SQLAlchemy {v('sqlalchemy')}"
    )


async def commit_floors(rate: float, samples: int = 200) -> tuple[str, dict[str, float]]:
    """The durable commit of each backend, measured now, back to back and paced at the
    latency runs' rate (an idle disk and CPU answer slower): a one-row SQLite transaction
    (WAL, synchronous=FULL, as taskorch's) in a temporary folder on this disk, and a one-row
    PostgreSQL commit. A task needs at least two durable commits in series (accepting it,
    then its result) before its client hears it is done, and one worker slot that runs one
    task at a time commits once per task (its result with its next take). Returns the lines
    to print and each backend's paced commit (s)."""
    import sqlite3

    folder = Path(tempfile.mkdtemp(prefix="taskorch-bench-fsync-"))
    try:
        db = sqlite3.connect(folder / "floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (x INTEGER)")

        def sqlite_commit(i: int) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (i,))
            db.execute("COMMIT")

        sqlite_s = [await _timed(sqlite_commit, samples, pace) for pace in (0.0, rate)]
        db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS taskorch_bench_floor (x int)")
        pg_s = [
            await _timed(
                lambda i: conn.execute("INSERT INTO taskorch_bench_floor VALUES (%s)", (i,)),
                samples,
                pace,
            )
            for pace in (0.0, rate)
        ]
        conn.execute("DROP TABLE taskorch_bench_floor")
    lines = []
    paced = {}
    for name, (busy, idle) in (("SQLite", sqlite_s), ("PostgreSQL", pg_s)):
        paced[name] = idle
        lines.append(
            f"{name}: a durable commit takes {busy * 1e3:.2f} ms (p50) back to back, "
            f"{idle * 1e3:.2f} ms paced at {rate:g}/s: submit→done >= {2 * idle * 1e3:.1f} ms "
            f"at that rate; one slot running one task at a time <= {1 / busy:,.0f} tasks/s"
        )
    return "\n".join(lines), paced


async def _timed(step: Any, samples: int, rate: float) -> float:
    """The p50 seconds of ``samples`` calls of ``step(i)`` (awaited when it returns an
    awaitable), back to back (``rate`` 0) or one every 1/``rate`` s."""
    took = []
    begin = time.monotonic()
    for i in range(samples):
        started = time.perf_counter()
        result = step(i)
        if inspect.isawaitable(result):
            await result
        took.append(time.perf_counter() - started)
        if rate:
            await asyncio.sleep(max(0.0, begin + (i + 1) / rate - time.monotonic()))
    return percentile(took, 50)


async def grpc_floor(rate: float, samples: int = 300) -> tuple[str, float]:
    """A call to a grpc.aio server (uvloop, as ``taskorch serve``) whose one method does
    nothing, from a grpc.aio client, back to back and paced at ``rate``: its round trip and
    the server's CPU per call. Returns the line to print and the paced round trip (s)."""
    lines = []
    with empty_server_process("uvloop") as (target, pid):
        channel = grpc.aio.insecure_channel(target)
        call = channel.unary_unary("/bench.Empty/Call")
        try:
            for _ in range(20):
                await call(b"")
            for pace in (0.0, rate):
                cpu_before = cpu_seconds(pid)
                rtt = await _timed(lambda _: call(b""), samples, pace)
                cpu = (cpu_seconds(pid) - cpu_before) / samples
                lines.append(
                    f"{rtt * 1e3:.2f} ms round trip (p50) and {cpu * 1e3:.2f} ms of the "
                    "server's CPU per call " + (f"paced at {pace:g}/s" if pace else "back to back")
                )
        finally:
            await channel.close()
    return "gRPC, an empty unary call: " + "; ".join(lines), rtt


def median_ms(pairs: list[tuple[float, float]]) -> str:
    """Median p50 / median p99 of the runs, in ms."""
    p50 = statistics.median(p[0] for p in pairs) * 1e3
    p99 = statistics.median(p[1] for p in pairs) * 1e3
    return f"{p50:.1f} / {p99:.1f}"


def ratio(mine: list[Any], theirs: list[Any] | None) -> str:
    """Median against median; for latency pairs, of the p50s."""
    if not theirs or not mine:
        return "-"
    if isinstance(mine[0], tuple):
        mine, theirs = [p[0] for p in mine], [p[0] for p in theirs]
    return f"{statistics.median(mine) / statistics.median(theirs):.2f}"


def report(
    labels: dict[str, str],
    results: dict[tuple[str, int], Figures],
    workers: list[int],
    rate: float,
) -> None:
    def peers(n: int) -> tuple[Figures | None, Figures | None, Figures | None]:
        return (
            results.get(("celery", n)),
            results.get(("procrastinate", n)),
            results.get(("pgqueuer", n)),
        )

    def by_workers(heading: str, cell: Callable[[Figures, int], str]) -> str:
        """A table of one cell per system and number of workers ("-" where not measured)."""
        rows: list[tuple[str, ...]] = [(heading, *(f"{n} workers" for n in workers))]
        for key, label in labels.items():
            cells = []
            for n in workers:
                f = results.get((key, n))
                cells.append(cell(f, n) if f is not None and f.tasks_per_s else "-")
            rows.append((label, *cells))
        return table(rows)

    def throughput(f: Figures, n: int) -> str:
        celery, procr, pgq = peers(n)
        return (
            f"{statistics.median(f.tasks_per_s):,.0f} "
            f"({min(f.tasks_per_s):,.0f}-{max(f.tasks_per_s):,.0f}) "
            f"xQ {ratio(f.tasks_per_s, pgq and pgq.tasks_per_s)} "
            f"xC {ratio(f.tasks_per_s, celery and celery.tasks_per_s)} "
            f"xP {ratio(f.tasks_per_s, procr and procr.tasks_per_s)}"
        )

    def machine_cpu(f: Figures, n: int) -> str:
        pgq = peers(n)[2]
        return (
            f"{statistics.median(f.machine_cpu) * 1e3:.2f} ms "
            f"({min(f.machine_cpu) * 1e3:.2f}-{max(f.machine_cpu) * 1e3:.2f}) "
            f"xQ {ratio(f.machine_cpu, pgq and pgq.machine_cpu)}, "
            f"client {statistics.median(f.client_cpu) * 1e3:.2f} ms, "
            f"{statistics.median(f.cores_busy):.2f} cores busy, "
            f"I/O stall {statistics.median(f.io_stall):.0%} ({max(f.io_stall):.0%})"
            + (
                f", server loop thread {statistics.median(f.loop_busy):.0%} busy"
                if f.loop_busy
                else ""
            )
        )

    print(
        "\nEnd-to-end tasks/s, median (min-max); xQ = ratio to pgqueuer, xC = to Celery, "
        "xP = to procrastinate\n"
    )
    print(by_workers("system (end-to-end tasks/s)", throughput))
    print(
        "\nThe throughput runs' CPU: the whole machine's busy time per task (every process: "
        "client, server, workers, database, broker), median (min-max); xQ = ratio to "
        "pgqueuer's; client = the part of it the submitting client took (this process); cores "
        "busy = that time over the run's, on average; I/O stall = the share "
        "of the run some process waited for the disk, median (the worst run's); server loop "
        "thread = the share of the run the server's event-loop thread was on a core (taskorch, "
        "the bound)\n"
    )
    print(by_workers("system (machine CPU per task)", machine_cpu))

    for n in workers:
        celery, procr, _ = peers(n)
        rows = [
            ("system", "submit/s", "submit→done, notified p50/p99 ms", "xC", "xP",
             "submit→done, recorded", "dispatch p50/p99 ms", "xC", "xP", "server CPU/task")
        ]  # fmt: skip
        for key, label in labels.items():
            f = results.get((key, n))
            if f is None or not f.notified:
                continue
            # A system whose throughput is below the paced rate falls behind: its latency
            # is then mostly the time spent queued.
            saturated = statistics.median(f.tasks_per_s) < rate * 1.1
            rows.append(
                (
                    label + (" (*)" if saturated else ""),
                    f"{statistics.median(f.submit_per_s):,.0f}",
                    median_ms(f.notified),
                    ratio(f.notified, celery and celery.notified),
                    ratio(f.notified, procr and procr.notified),
                    median_ms(f.done),
                    median_ms(f.start),
                    ratio(f.start, celery and celery.start),
                    ratio(f.start, procr and procr.start),
                    f"{statistics.median(f.paced_cpu) * 1e3:.2f} ms" if f.paced_cpu else "-",
                )
            )
        print(
            f"\nLatency at {rate:g} tasks/s, {n} worker{'s' if n > 1 else ''} (ratios of p50s; "
            "(*) = end-to-end throughput under 1.1x that rate: the queue grows)\n"
        )
        print(table(rows))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=600, help="tasks of each throughput run")
    parser.add_argument("--paced", type=int, default=200, help="tasks of each latency run")
    parser.add_argument("--rate", type=float, default=50.0, help="paced submit rate, tasks/s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument(
        "--systems",
        default="sqlite,pg,sqlite:10,pg:10,sqlite-batch,pg-batch,sqlite-inproc,pg-inproc,"
        "sqlite-inproc:10,pg-inproc:10,celery,procrastinate,pgqueuer,bare",
        help="taskorch systems take ':C' for C concurrent tasks per worker (default 1)",
    )
    args = parser.parse_args()
    for name in ("tasks", "paced", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.rate <= 0:
        parser.error("--rate must be above 0")
    workers = [int(w) for w in args.workers.split(",")]
    wanted = args.systems.split(",")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(
        f"{args.tasks} tasks per throughput run, {args.paced} per latency run at {args.rate:g}/s, "
        f"median of {args.repeats} runs in alternating order"
    )
    with private_redis() as redis_url:
        # Read when _peer_apps is imported, here and in the workers.
        os.environ["BENCH_REDIS_URL"] = redis_url
        os.environ["BENCH_PROCRASTINATE_DSN"] = f"postgresql://{PG}/{PROCRASTINATE_DB}"
        makers = {
            "sqlite": lambda: Taskorch("sqlite", in_process=False),
            "pg": lambda: Taskorch("postgresql", in_process=False),
            "sqlite-batch": lambda: Taskorch("sqlite", in_process=False, batch=100),
            "pg-batch": lambda: Taskorch("postgresql", in_process=False, batch=100),
            "sqlite-inproc": lambda: Taskorch("sqlite", in_process=True),
            "pg-inproc": lambda: Taskorch("postgresql", in_process=True),
            "celery": lambda: CeleryRedis(redis_url),
            "procrastinate": Procrastinate,
            "pgqueuer": PgQueuer,
            "bare": BareTaskService,
        }
        systems: dict[str, System] = {}
        for key in wanted:
            name, _, each = key.partition(":")
            if each:
                backend = "sqlite" if name.startswith("sqlite") else "postgresql"
                systems[key] = Taskorch(
                    backend, in_process=name.endswith("-inproc"), concurrency=int(each)
                )
            else:
                systems[key] = makers[name]()
        labels = {key: s.label for key, s in systems.items()}
        results: dict[tuple[str, int], Figures] = {}
        configs = [(key, n) for n in workers for key in systems]
        started = time.monotonic()
        for repeat in range(args.repeats):
            order = configs if repeat % 2 == 0 else configs[::-1]
            for key, n in order:
                t0 = time.monotonic()
                figures = results.setdefault((key, n), Figures())
                await measure(systems[key], n, args, figures)
                print(
                    f"  run {repeat + 1}: {labels[key]}, {n} workers: "
                    f"{figures.tasks_per_s[-1]:,.0f} tasks/s, "
                    f"notified p50 {figures.notified[-1][0] * 1e3:.1f} ms, "
                    f"dispatch p50 {figures.start[-1][0] * 1e3:.1f} ms, "
                    f"I/O stall {figures.io_stall[-1]:.0%} "
                    f"({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
        pg_admin(f"DROP DATABASE IF EXISTS {PROCRASTINATE_DB} WITH (FORCE)")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    commits, paced_commit = await commit_floors(args.rate)
    call_floor, paced_rtt = await grpc_floor(args.rate)
    print(f"\nFloors, measured after the runs:\n{commits}\n{call_floor}")
    # A task's client makes one call (the create) and hears one message (its end): about
    # one paced round trip, plus at least one durable commit (taskorch's in-process slots
    # create, lease and complete a short task in one).
    floor = paced_rtt + paced_commit["SQLite"]
    print(
        f"submit→done (notified) of a gRPC task service on SQLite at {args.rate:g}/s >= "
        f"{floor * 1e3:.1f} ms here (one paced call + one paced commit), before any of its "
        "own code runs"
    )
    report(labels, results, workers, args.rate)


if __name__ == "__main__":
    asyncio.run(main())
