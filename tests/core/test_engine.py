"""The scheduler's take path on a real store (a SQLite file, and PostgreSQL when reachable),
driven by a test clock: priority then age, dependencies, delayed tasks, concurrency keys,
fair sharing between tenants, expired leases with backoff, and parked takers."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from taskorch.core import engine as engine_module
from taskorch.core.engine import (
    DEPENDENCY_FAILED,
    Backoff,
    TaskEngine,
    WorkerIdentity,
    first_stage,
)
from taskorch.core.planning import Catalog, EchoPlanner, TaskSpec, TextAnalysisPlanner
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import LeaseLost, Unavailable
from taskorch.domain.values import Lease, ResourceUsage, Status, Subtask, Task, TaskEvent
from taskorch.events.hub import EventHub
from taskorch.store import database as database_module
from taskorch.store import tasks as task_store
from taskorch.store.database import Database
from taskorch.store.queue import Turns
from taskorch.store.queue.postgres import PostgresQueue, Transaction
from taskorch.store.queue.sqlite import SqliteQueue
from tests import databases

ACME = Caller(tenant_id="acme")
GLOBEX = Caller(tenant_id="globex")
START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
ANY_WORKER = WorkerIdentity("worker-1", ("echo", "text_analysis"))


class Clock:
    """The time the engine and the task service read; tests move it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Scheduler:
    engine: TaskEngine
    tasks: TaskService
    clock: Clock

    async def create(self, caller: Caller = ACME, **fields: Any) -> Task:
        """An echo task (unless told otherwise), created one millisecond after the last."""
        self.clock.advance(0.001)
        spec = TaskSpec(**{"task_type": "echo", **fields})
        return await self.tasks.create(caller, spec)

    async def take(self, worker: WorkerIdentity = ANY_WORKER, **options: Any) -> list[Lease]:
        return await self.engine.take(worker, **options)

    async def take_one_by_one(self) -> list[str]:
        """The task ids of every runnable subtask, taken one take at a time."""
        order: list[str] = []
        while leases := await self.take(limit=1):
            order.append(leases[0].subtask.task_id)
        return order

    async def status(self, task: Task, caller: Caller = ACME) -> Task:
        return await self.tasks.get(caller, task.task_id)


StartScheduler = Callable[..., Awaitable[Scheduler]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def start(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StartScheduler]:
    """Starts a scheduler (engine + task service) on a fresh database of the parametrised
    backend; PostgreSQL runs are skipped, saying why, when no server is reachable."""
    opened: list[tuple[Database, str]] = []

    async def scheduler(turns: Turns | None = None) -> Scheduler:
        url = databases.new_database(tmp_path, request.param)
        db = Database(url)
        await db.open()
        opened.append((db, url))
        hub = EventHub()
        clock = Clock(START)
        engine = TaskEngine(db, hub, clock=clock, turns=turns, backoff=Backoff(initial=10))
        catalog = Catalog([TextAnalysisPlanner(), EchoPlanner()])
        return Scheduler(engine, TaskService(db, hub, engine, catalog, clock=clock), clock)

    yield scheduler
    for db, url in opened:
        await db.close()
        databases.discard(url)


# -- pure parts ---------------------------------------------------------------------------------


def test_backoff_doubles_from_the_initial_delay_up_to_its_cap() -> None:
    backoff = Backoff(initial=1.0, multiplier=2.0, maximum=5.0)
    assert [backoff.delay(attempt) for attempt in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.delay(0) == 1.0  # never less than the initial delay


def _subtask(stage: int, status: Status, name: str) -> Subtask:
    return Subtask(
        subtask_id=name,
        task_id="t",
        tenant_id="acme",
        kind="echo",
        status=status,
        created_at=START,
        updated_at=START,
        name=name,
        stage=stage,
    )


def test_the_next_stage_runs_only_once_every_earlier_stage_completed() -> None:
    first = _subtask(0, Status.COMPLETED, "a")
    second = [_subtask(1, Status.PENDING, "b"), _subtask(1, Status.PENDING, "c")]
    third = _subtask(2, Status.PENDING, "d")
    assert [s.name for s in first_stage([first, *second, third])] == ["b", "c"]
    running = _subtask(0, Status.RUNNING, "a")
    assert first_stage([running, *second, third]) == []
    done = [_subtask(s.stage, Status.COMPLETED, s.name) for s in (first, *second, third)]
    assert first_stage(done) == []


# -- the take path ------------------------------------------------------------------------------


async def test_higher_priority_is_taken_first_then_the_oldest(start: StartScheduler) -> None:
    s = await start()
    low_old = await s.create(priority=3)
    mid_old = await s.create(priority=5)
    high_new = await s.create(priority=9)
    mid_new = await s.create(priority=5)
    high_newest = await s.create(priority=9)
    expected = [high_new, high_newest, mid_old, mid_new, low_old]
    assert await s.take_one_by_one() == [t.task_id for t in expected]


async def test_one_take_of_many_leases_them_in_priority_then_age_order(
    start: StartScheduler,
) -> None:
    s = await start()
    made = [await s.create(priority=p) for p in (2, 8, 5, 8, 2)]
    leases = await s.take(limit=10)
    assert [lease.subtask.task_id for lease in leases] == [made[i].task_id for i in (1, 3, 2, 0, 4)]
    assert all(lease.expires_at == s.clock.now + timedelta(seconds=30) for lease in leases)
    assert {(await s.status(t)).status for t in made} == {Status.RUNNING}


async def test_a_worker_takes_only_the_kinds_it_runs(start: StartScheduler) -> None:
    s = await start()
    analysis = await s.create(task_type="", text="one two two")
    echo = await s.create(priority=10)
    [lease] = await s.take(WorkerIdentity("analyst", ("text_analysis",)), limit=5)
    assert lease.subtask.task_id == analysis.task_id
    assert (await s.status(echo)).status is Status.PENDING


async def test_a_task_with_unfinished_dependencies_is_never_taken(
    start: StartScheduler,
) -> None:
    s = await start()
    parent = await s.create()
    child = await s.create(priority=10, depends_on=(parent.task_id,))
    # Asked for by id, or by a worker with room for everything: only the parent is runnable.
    assert await s.take(task_id=child.task_id) == []
    [lease] = await s.take(limit=10)
    assert lease.subtask.task_id == parent.task_id
    assert await s.take(limit=10) == []  # still running: the child waits
    await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"answer": 42})
    [after] = await s.take(limit=10)
    assert after.subtask.task_id == child.task_id
    # The dependent reads what its dependencies produced.
    assert after.dependency_results == {parent.task_id: {"answer": 42}}


async def test_a_failed_dependency_fails_its_dependents_which_never_run(
    start: StartScheduler,
) -> None:
    s = await start()
    parent = await s.create()
    child = await s.create(depends_on=(parent.task_id,))
    grandchild = await s.create(depends_on=(child.task_id,))
    [lease] = await s.take(limit=10)
    await s.engine.fail(lease.subtask.subtask_id, lease.lease_id, "boom", retryable=False)
    for dependent in (child, grandchild):
        shown = await s.status(dependent)
        assert shown.status is Status.FAILED and shown.error_code == DEPENDENCY_FAILED
    assert await s.take(limit=10) == []


async def test_a_delayed_task_is_taken_from_its_run_at_not_before(
    start: StartScheduler,
) -> None:
    s = await start()
    later = await s.create(run_at=START + timedelta(hours=1))
    now = await s.create(priority=1)
    [lease] = await s.take(limit=10)  # only the task without a delay
    assert lease.subtask.task_id == now.task_id
    s.clock.now = START + timedelta(hours=1) - timedelta(milliseconds=1)
    assert await s.engine.promote_due() == 0
    assert await s.take(limit=10) == []
    assert (await s.status(later)).status is Status.PENDING
    s.clock.now = START + timedelta(hours=1)
    assert await s.engine.promote_due() == 1
    [due] = await s.take(limit=10)
    assert due.subtask.task_id == later.task_id


async def test_a_delayed_task_also_waits_for_its_dependencies(
    start: StartScheduler,
) -> None:
    s = await start()
    parent = await s.create(run_at=START + timedelta(minutes=10))
    child = await s.create(run_at=START + timedelta(minutes=5), depends_on=(parent.task_id,))
    s.clock.now = START + timedelta(minutes=6)
    await s.engine.promote_due()
    assert await s.take(limit=10) == []  # its time came, its dependency has not run
    s.clock.now = START + timedelta(minutes=10)
    await s.engine.promote_due()
    [lease] = await s.take(limit=10)
    assert lease.subtask.task_id == parent.task_id
    await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {})
    [after] = await s.take(limit=10)
    assert after.subtask.task_id == child.task_id


async def test_a_concurrency_key_runs_at_most_its_limit_and_admits_by_priority_then_age(
    start: StartScheduler,
) -> None:
    s = await start()
    keyed = [
        await s.create(concurrency_key="gpu", concurrency_limit=2, priority=p) for p in (5, 5, 5, 9)
    ]
    free = await s.create(priority=1)
    taken = await s.take(limit=10)
    # The first two in line hold the key; the others wait however high their priority.
    assert {lease.subtask.task_id for lease in taken} == {
        keyed[0].task_id,
        keyed[1].task_id,
        free.task_id,
    }
    assert await s.take(limit=10) == []
    first = next(lease for lease in taken if lease.subtask.task_id == keyed[0].task_id)
    await s.engine.complete(first.subtask.subtask_id, first.lease_id, {})
    [admitted] = await s.take(limit=10)  # one place freed: the highest priority waiter
    assert admitted.subtask.task_id == keyed[3].task_id
    await s.engine.complete(admitted.subtask.subtask_id, admitted.lease_id, {})
    [last] = await s.take(limit=10)
    assert last.subtask.task_id == keyed[2].task_id


async def test_a_cancelled_waiter_leaves_its_keys_line(start: StartScheduler) -> None:
    s = await start()
    running = await s.create(concurrency_key="k", concurrency_limit=1)
    cancelled = await s.create(concurrency_key="k")
    waiting = await s.create(concurrency_key="k")
    [lease] = await s.take(limit=10)
    assert lease.subtask.task_id == running.task_id
    await s.tasks.cancel(ACME, cancelled.task_id)
    await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {})
    [next_up] = await s.take(limit=10)
    assert next_up.subtask.task_id == waiting.task_id


async def test_a_tenants_few_tasks_take_turns_with_another_tenants_burst(
    start: StartScheduler,
) -> None:
    s = await start()
    burst = [await s.create(ACME) for _ in range(10)]
    few = [await s.create(GLOBEX) for _ in range(2)]
    order = await s.take_one_by_one()
    assert len(order) == 12
    # Turns alternate (a tie in turn goes either way): globex's two run within the first five
    # takes, not after acme's ten.
    assert order.index(few[0].task_id) in (1, 2) and order.index(few[1].task_id) in (3, 4)
    assert [t for t in order if t in {b.task_id for b in burst}] == [b.task_id for b in burst]


async def test_without_fair_sharing_the_burst_runs_first(start: StartScheduler) -> None:
    s = await start(Turns(fair=False))
    burst = [await s.create(ACME) for _ in range(5)]
    few = [await s.create(GLOBEX) for _ in range(2)]
    assert await s.take_one_by_one() == [t.task_id for t in burst + few]


async def test_a_tenant_of_weight_three_takes_three_turns_to_anothers_one(
    start: StartScheduler,
) -> None:
    s = await start(Turns(weights={"acme": 3.0}))
    heavy = [await s.create(ACME) for _ in range(6)]
    light = [await s.create(GLOBEX) for _ in range(2)]
    order = await s.take_one_by_one()
    assert sorted(order) == sorted(t.task_id for t in heavy + light)
    # acme's turns are a third of a step apart: three of them, then globex's first (tied with
    # acme's fourth), then acme's last two, then globex's second.
    assert order.index(light[0].task_id) in (3, 4), order
    assert order.index(light[1].task_id) == 7, order


async def test_an_expired_lease_returns_the_work_after_backoff_then_fails_past_max_attempts(
    start: StartScheduler,
) -> None:
    s = await start()
    task = await s.create(max_attempts=2)
    [first] = await s.take(lease_seconds=5)
    assert first.subtask.attempt == 1
    s.clock.advance(4.9)
    assert await s.engine.rescue_expired() == 0  # the lease still holds
    s.clock.advance(0.2)
    assert await s.engine.rescue_expired() == 1
    assert await s.take() == []  # backing off: 10 s after the first attempt
    s.clock.advance(9.9)
    assert await s.take() == []
    s.clock.advance(0.2)
    [second] = await s.take(lease_seconds=5)
    assert second.subtask.attempt == 2 and second.lease_id != first.lease_id
    s.clock.advance(6)
    await s.engine.rescue_expired()
    shown = await s.status(task)
    assert shown.status is Status.FAILED and "lease" in (shown.error or "").lower()
    assert await s.take() == []


async def test_a_parked_taker_is_handed_new_work_at_once(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await start()
    # A parked taker would look again every second anyway; make that a minute, so only the
    # create's own hand-over can answer it within the timeout below.
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = asyncio.create_task(s.take(wait_seconds=30))
    await asyncio.sleep(0)  # the waiting take is submitted first...
    assert await s.take() == []  # ...so once this later one found nothing, it has parked
    assert not waiting.done()
    task = await s.create()
    [lease] = await asyncio.wait_for(waiting, timeout=10)
    assert lease.subtask.task_id == task.task_id


async def test_a_parked_taker_passes_over_work_it_cannot_run(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    analyst = WorkerIdentity("analyst", ("text_analysis",))
    waiting = asyncio.create_task(s.take(analyst, wait_seconds=30))
    await s.create()  # echo work: the analyst stays parked
    assert not waiting.done()
    analysis = await s.create(task_type="", text="a b c")
    [lease] = await asyncio.wait_for(waiting, timeout=5)
    assert lease.subtask.task_id == analysis.task_id


async def test_a_late_result_of_a_lost_lease_is_refused_and_never_overwrites(
    start: StartScheduler,
) -> None:
    s = await start()
    task = await s.create(max_attempts=3)
    [old] = await s.take(lease_seconds=5)
    s.clock.advance(6)
    await s.engine.rescue_expired()
    s.clock.advance(11)  # past the backoff
    [new] = await s.take(lease_seconds=30)
    with pytest.raises(LeaseLost):
        await s.engine.complete(old.subtask.subtask_id, old.lease_id, {"from": "the old worker"})
    await s.engine.complete(new.subtask.subtask_id, new.lease_id, {"from": "the new worker"})
    shown = await s.status(task)
    assert shown.status is Status.COMPLETED and shown.attempt == 2
    assert shown.result is not None and shown.result["from"] == "the new worker"


async def test_cancelling_a_running_task_tells_its_worker_to_stop(start: StartScheduler) -> None:
    s = await start()
    task = await s.create()
    stops = s.engine.hub.stops.subscribe(ANY_WORKER.worker_id)
    [lease] = await s.take()
    await s.tasks.cancel(ACME, task.task_id, "not needed")
    notice = await stops.get(timeout=5)
    assert notice is not None and notice.subtask_id == lease.subtask.subtask_id
    assert notice.lease_id == lease.lease_id
    answer = await s.engine.heartbeat(lease.subtask.subtask_id, lease.lease_id)
    assert answer.cancelled
    assert await s.take(limit=10) == []


async def test_short_work_of_an_in_process_worker_completes_in_the_commit_that_created_it(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-process worker whose runs are short takes ``early``: on a quiet database (either
    backend) the batch that creates a task hands the lease over before its commit and holds
    the commit for the report, so create, lease and completion are one transaction."""
    s = await start()
    db = s.engine.db
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    handed: list[Lease] = []

    async def worker() -> None:
        [lease] = await s.take(wait_seconds=30, early=True)
        handed.append(lease)
        await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"echo": "hi"})

    running = asyncio.create_task(worker())
    await asyncio.sleep(0)  # the worker's take is submitted first...
    assert await s.take() == []  # ...so once this later one found nothing, it has parked
    await rest(db)
    before = db.batches
    task = await s.create()
    await asyncio.wait_for(running, timeout=10)
    assert db.batches - before == 1
    shown = await s.status(task)
    assert shown.status is Status.COMPLETED and shown.result == {"echo": "hi"}
    assert shown.attempt == 1 and handed[0].subtask.task_id == task.task_id
    assert (await s.tasks.counts(ACME))[Status.COMPLETED] == 1


def fail_the_next_commit(
    monkeypatch: pytest.MonkeyPatch, db: Database, error: Exception | None = None
) -> list[bool]:
    """Makes the next COMMIT of the task engine's transitions fail, by default as a full
    disk would (PostgreSQL: with ``error``, if given); the list says once it has."""
    failed: list[bool] = []
    if db.is_sqlite:
        real_end = db._end

        def end(conn: Any, *, commit: bool) -> None:
            if commit and not failed:
                failed.append(True)
                raise sqlite3.OperationalError("disk I/O error")
            real_end(conn, commit=commit)

        monkeypatch.setattr(db, "_end", end)
        return failed
    real_execute = Transaction.execute

    async def execute(tx: Transaction, query: str, *args: Any) -> str:
        if query.endswith("COMMIT") and not failed:
            failed.append(True)
            raise error or asyncpg.exceptions.DiskFullError("could not extend file")
        return await real_execute(tx, query, *args)

    monkeypatch.setattr(Transaction, "execute", execute)
    return failed


async def stored_events(s: Scheduler, task: Task) -> list[TaskEvent]:
    """The task's events as stored, in sequence."""
    return await s.engine.db.read(
        partial(task_store.events_after, task_id=task.task_id, after_sequence=0)
    )


def count_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[int]:
    """Counts the calls of one queue method (its statements) on either backend."""
    calls: list[int] = []

    def counting(real: Any) -> Any:
        async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return await real(self, *args, **kwargs)

        return counted

    for queue in (SqliteQueue, PostgresQueue):
        monkeypatch.setattr(queue, method, counting(getattr(queue, method)))
    return calls


async def rest(db: Database) -> None:
    """Lets the database's writers rest as they do between tasks on a quiet database, long
    enough for the next batch to hand work over early (store/database.py's _quiet)."""
    await asyncio.sleep(2 * database_module.EARLY_REPORT_SECONDS)


async def parked_early_worker(s: Scheduler, limit: int = 1) -> asyncio.Task[list[Lease]]:
    """An in-process worker's take (short runs: ``early``) parked until work comes."""
    waiting = asyncio.create_task(s.take(wait_seconds=30, early=True, limit=limit))
    await asyncio.sleep(0)  # the waiting take is submitted first...
    assert await s.take() == []  # ...so once this later one found nothing, it has parked
    assert not waiting.done()
    await rest(s.engine.db)
    return waiting


@pytest.mark.parametrize("start", ["sqlite"], indirect=True)
async def test_quiet_sqlite_batches_commit_on_the_loop_and_the_log_is_still_checkpointed(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a quiet SQLite database a batch commits where it began, on the event loop (a
    thread hop less on the path of each task); one commit in so many still goes through the
    writer thread, where SQLite checkpoints its log (it does so inside a COMMIT, which must
    not stall the loop): a long quiet run leaves the log at its usual few megabytes."""
    s = await start()
    db = s.engine.db
    on_thread: list[int] = []
    commit = Database._commit_on_writer_thread

    def counted(self: Database, conn: Any) -> None:
        on_thread.append(1)
        commit(self, conn)

    monkeypatch.setattr(Database, "_commit_on_writer_thread", counted)
    creates = 600
    for _ in range(creates):
        await rest(db)
        await s.create()
    assert 0 < len(on_thread) <= creates // 10
    log_bytes = Path(f"{db.url.database}-wal").stat().st_size
    assert log_bytes < 8_000_000, f"the WAL grew to {log_bytes:,} bytes"


async def test_a_batch_that_comes_while_the_writer_is_busy_does_not_hold_its_commit(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load a batch commits at once: only a batch that comes after its writer rested
    at least as long as a hold may last hands work over before its commit (a held commit
    keeps the one writer idle, which would cost throughput). The new work still goes to
    the parked worker in the create's transaction, stored started without a take, and the
    lease is answered after that commit."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    hold = 5.0  # a held commit would hold the create this long, its report never coming
    monkeypatch.setattr(database_module, "EARLY_REPORT_SECONDS", hold)
    waiting = asyncio.create_task(s.take(wait_seconds=30, early=True))
    await asyncio.sleep(0)
    assert await s.take() == []  # the writer just committed: it has not rested
    takes = count_calls(monkeypatch, "take")
    began = time.monotonic()
    task = await s.create()
    assert time.monotonic() - began < hold / 2, "the create's batch held its commit"
    [lease] = await asyncio.wait_for(waiting, timeout=10)
    assert lease.subtask.task_id == task.task_id and lease.subtask.status is Status.RUNNING
    assert takes == []
    assert (await s.status(task)).status is Status.RUNNING


async def test_new_work_for_a_parked_remote_worker_is_stored_started_in_its_create(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parked take of any worker (a remote one's is not ``early``) gets new work it can
    run in the create's transaction, stored started, highest priority first; work beyond
    its limit stays queued for the next take, and a taker of one task gets only that."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = asyncio.create_task(s.take(wait_seconds=30, limit=2))
    await asyncio.sleep(0)
    assert await s.take() == []  # the waiting take has parked
    takes = count_calls(monkeypatch, "take")
    low, high, mid = await s.tasks.create_many(
        ACME,
        [TaskSpec(task_type="echo", priority=p) for p in (1, 9, 5)],
    )
    leases = await asyncio.wait_for(waiting, timeout=10)
    assert [lease.subtask.task_id for lease in leases] == [high.task_id, mid.task_id]
    assert all(lease.subtask.worker_id == "worker-1" for lease in leases)
    assert takes == []
    assert (await s.status(high)).status is Status.RUNNING
    assert (await s.status(low)).status is Status.PENDING
    [later] = await s.take()
    assert later.subtask.task_id == low.task_id

    pinned = asyncio.create_task(
        s.take(WorkerIdentity("pinned", ("echo",)), wait_seconds=30, task_id="elsewhere")
    )
    await asyncio.sleep(0)
    assert await s.take() == []  # the pinned take has parked
    other = await s.create()
    await asyncio.sleep(0.05)
    assert not pinned.done()
    [lease] = await s.take()
    assert lease.subtask.task_id == other.task_id
    pinned.cancel()


async def test_new_work_for_an_idle_in_process_worker_is_stored_started_as_a_take_would(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a quiet database the batch that creates work an idle in-process worker waits for
    stores it started, leased to that worker, without a take statement. What is stored is
    what a take would have stored: the events queued, started and completed in sequence,
    the task's start, worker and attempt, the counts."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = await parked_early_worker(s)
    takes = count_calls(monkeypatch, "take")
    task = await s.create()
    [lease] = await asyncio.wait_for(waiting, timeout=10)
    assert takes == []
    assert lease.subtask.task_id == task.task_id and lease.subtask.attempt == 1
    assert lease.subtask.status is Status.RUNNING and lease.subtask.worker_id == "worker-1"
    running = await s.status(task)
    assert running.status is Status.RUNNING and running.worker_id == "worker-1"
    assert running.started_at == s.clock.now and running.attempt == 1
    assert (await s.tasks.counts(ACME)).get(Status.RUNNING) == 1
    await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"echo": "hi"})
    events = await stored_events(s, task)
    assert [(e.sequence, e.status, e.message) for e in events[:2]] == [
        (1, Status.PENDING, "queued"),
        (2, Status.RUNNING, "attempt 1 started on worker-1"),
    ]
    assert events[1].data == {"attempt": 1, "worker_id": "worker-1"}
    assert [(e.sequence, e.status) for e in events[2:]] == [(3, Status.COMPLETED)]
    counts = await s.tasks.counts(ACME)
    assert counts[Status.COMPLETED] == 1
    assert counts.get(Status.RUNNING, 0) == 0 and counts.get(Status.PENDING, 0) == 0


async def test_a_completion_ends_the_task_of_its_only_subtask_in_the_same_transition(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Completing a task's only subtask ends the task in the same transition
    (Queue.complete; on PostgreSQL in one statement), and
    what is stored and told is what ending it apart gave: its result, usage and progress,
    the completed event in sequence, the counts, and a dependent's work made runnable."""
    s = await start()
    first = await s.create()
    dependent = await s.create(depends_on=[first.task_id])
    [lease] = await s.take()
    assert lease.subtask.task_id == first.task_id
    watch = s.engine.hub.subscribe_tenant("acme")
    ends = count_calls(monkeypatch, "complete_tasks")
    usage = ResourceUsage(model_name="echo", inference_time_seconds=0.25)
    done = await s.engine.complete(
        lease.subtask.subtask_id, lease.lease_id, {"echo": "hi"}, resource_usage=usage
    )
    assert ends == [], "the task ended with its subtask, not by a transition of its own"
    assert done.status is Status.COMPLETED and done.result == {"echo": "hi"}
    shown = await s.status(first)
    assert shown.status is Status.COMPLETED and shown.result == {"echo": "hi"}
    assert shown.progress == 100.0 and shown.completed_at == s.clock.now
    assert shown.resource_usage == usage
    events = await stored_events(s, first)
    assert [(e.sequence, e.status, e.message) for e in events[2:]] == [
        (3, Status.COMPLETED, "completed")
    ]
    told = await watch.get(timeout=5)
    assert told is not None
    assert (told.task_id, told.sequence, told.status) == (first.task_id, 3, Status.COMPLETED)
    counts = await s.tasks.counts(ACME)
    assert counts[Status.COMPLETED] == 1 and counts[Status.PENDING] == 1
    assert counts.get(Status.RUNNING, 0) == 0
    [next_lease] = await s.take()
    assert next_lease.subtask.task_id == dependent.task_id
    assert next_lease.dependency_results == {first.task_id: {"echo": "hi"}}


async def test_short_work_reported_in_its_batch_is_stored_completed_in_one_write(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a quiet database, when the worker's report of a task started in a batch joins that
    batch, the task's rows are written once, completed: no completing statement runs.
    Stored and told are what the steps one by one give."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = await parked_early_worker(s)
    completes = count_calls(monkeypatch, "complete")
    watch = s.engine.hub.subscribe_tenant("acme")
    reports: list[Subtask] = []

    async def worker() -> None:
        [lease] = await waiting
        reports.append(
            await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"echo": "hi"})
        )

    running = asyncio.create_task(worker())
    task = await s.create()
    await asyncio.wait_for(running, timeout=10)
    assert completes == []
    [done] = reports
    assert done.status is Status.COMPLETED and done.result == {"echo": "hi"}
    assert done.lease_id is None and done.attempt == 1
    stored = await s.engine.subtask(done.subtask_id, "acme")
    assert stored is not None and stored.status is Status.COMPLETED
    assert stored.result == {"echo": "hi"} and stored.lease_id is None
    shown = await s.status(task)
    assert shown.status is Status.COMPLETED and shown.result == {"echo": "hi"}
    assert shown.progress == 100.0 and shown.attempt == 1 and shown.worker_id == "worker-1"
    assert shown.started_at == shown.completed_at == s.clock.now
    events = await stored_events(s, task)
    expected = [
        (1, Status.PENDING, "queued"),
        (2, Status.RUNNING, "attempt 1 started on worker-1"),
        (3, Status.COMPLETED, "completed"),
    ]
    assert [(e.sequence, e.status, e.message) for e in events] == expected
    told = [await watch.get(timeout=5) for _ in range(3)]
    assert [(e.sequence, e.status, e.message) for e in told if e] == expected
    assert told[2] is not None and told[2].task is not None
    assert told[2].task.status is Status.COMPLETED and told[2].task.result == {"echo": "hi"}
    counts = await s.tasks.counts(ACME)
    assert counts[Status.COMPLETED] == 1
    assert counts.get(Status.RUNNING, 0) == 0 and counts.get(Status.PENDING, 0) == 0


async def test_a_taker_that_has_all_the_work_does_not_look_again_in_the_same_transaction(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next take of a worker whose last one found no more work, in the same
    transaction, finds nothing without a statement unless work it can run became runnable
    since; it then parks and new work reaches it as before."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = await parked_early_worker(s, limit=5)
    takes = count_calls(monkeypatch, "take")
    following: list[asyncio.Task[list[Lease]]] = []

    async def worker() -> None:
        [lease] = await waiting
        # As the worker loop does: the next take goes out with the report.
        following.append(asyncio.create_task(s.take(wait_seconds=30, early=True, limit=5)))
        await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"echo": 1})

    running = asyncio.create_task(worker())
    await s.create()
    await asyncio.wait_for(running, timeout=10)
    assert takes == []
    [parked] = following
    await asyncio.sleep(0.05)
    assert not parked.done()
    task = await s.create()
    [lease] = await asyncio.wait_for(parked, timeout=10)
    assert lease.subtask.task_id == task.task_id


async def test_a_worker_that_took_all_the_work_gets_the_next_batchs_new_work_without_a_take(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a worker's take leased less than it asked for (it took every piece of work it
    could run), its next take skips the queue's statements and the new work created in its
    batch is stored started and leased to it, highest priority first, as to a parked taker:
    under a steady load each task is then written once started and never leased by a
    statement. Work made runnable without a take in its batch ends that: the next take
    reads the queue again, oldest first."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    first = await s.create()
    [lease] = await s.take(limit=5)  # one of five: the worker has all the work
    assert lease.subtask.task_id == first.task_id
    takes = count_calls(monkeypatch, "take")

    async def both() -> tuple[list[Task], list[Lease]]:
        specs = [TaskSpec(task_type="echo", priority=p) for p in (1, 9)]
        return await asyncio.gather(s.tasks.create_many(ACME, specs), s.take(limit=5))

    (low, high), leases = await asyncio.wait_for(both(), timeout=10)
    assert [lease.subtask.task_id for lease in leases] == [high.task_id, low.task_id]
    assert takes == []
    shown = await s.status(low)
    assert shown.status is Status.RUNNING and shown.worker_id == "worker-1"

    older = await s.create()  # no take in its batch: queued
    newer = await s.create()
    leases = await s.take(limit=5)
    assert [lease.subtask.task_id for lease in leases] == [older.task_id, newer.task_id]
    assert len(takes) == 1


async def test_backed_off_work_that_came_due_is_taken_before_new_work_is_handed_over(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that found no work while a failed attempt backed off does not get the new
    work of its batch handed over once the retry came due: its take reads the queue and
    leases the older retry first."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    retried = await s.create(max_attempts=2)
    [lease] = await s.take(limit=5)
    await s.engine.fail(lease.subtask.subtask_id, lease.lease_id, "flaky")
    assert await s.take(limit=5) == []  # backing off 10 s: the worker has all the work
    s.clock.advance(10.1)

    async def both() -> tuple[Task, list[Lease]]:
        return await asyncio.gather(s.create(), s.take(limit=5))

    new, leases = await asyncio.wait_for(both(), timeout=10)
    assert [lease.subtask.task_id for lease in leases] == [retried.task_id, new.task_id]
    assert leases[0].subtask.attempt == 2


async def test_a_failure_reported_in_the_batch_that_started_the_work_fails_the_task(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a completion is written with the new rows: a failure reported in the same batch
    runs on the task stored started, as it would on any task."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = await parked_early_worker(s)

    async def worker() -> None:
        [lease] = await waiting
        await s.engine.fail(
            lease.subtask.subtask_id, lease.lease_id, "no", error_code="BAD", retryable=False
        )

    running = asyncio.create_task(worker())
    task = await s.create()
    await asyncio.wait_for(running, timeout=10)
    shown = await s.status(task)
    assert shown.status is Status.FAILED and shown.error_code == "BAD"
    events = await stored_events(s, task)
    assert [e.status for e in events] == [Status.PENDING, Status.RUNNING, Status.FAILED]
    assert (await s.tasks.counts(ACME))[Status.FAILED] == 1


async def test_new_work_goes_to_an_idle_worker_highest_priority_first(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = await parked_early_worker(s, limit=1)
    low, high = await s.tasks.create_many(
        ACME, [TaskSpec(task_type="echo", priority=1), TaskSpec(task_type="echo", priority=9)]
    )
    [lease] = await asyncio.wait_for(waiting, timeout=10)
    assert lease.subtask.task_id == high.task_id
    assert (await s.status(low)).status is Status.PENDING
    [later] = await s.take()
    assert later.subtask.task_id == low.task_id


async def test_work_stored_started_in_a_commit_that_fails_is_neither_stored_nor_counted(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create and the worker's report fail with the commit (nothing was answered before
    it): no task, no lease, no count; the database then goes on as before."""
    s = await start()
    db = s.engine.db
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = await parked_early_worker(s)
    failed = fail_the_next_commit(monkeypatch, db)
    creating = asyncio.create_task(s.create())
    [first] = await asyncio.wait_for(waiting, timeout=10)
    with pytest.raises(Unavailable):
        await s.engine.complete(first.subtask.subtask_id, first.lease_id, {"run": 1})
    with pytest.raises(Unavailable):
        await creating
    assert failed
    assert not any((await s.tasks.counts(ACME)).values())
    assert await s.take(limit=10) == []
    task = await s.create()
    [lease] = await s.take()
    await s.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"run": 2})
    shown = await s.status(task)
    assert shown.status is Status.COMPLETED and shown.attempt == 1
    assert (await s.tasks.counts(ACME))[Status.COMPLETED] == 1


async def test_work_handed_over_before_a_commit_that_fails_runs_again_and_counts_once(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report of work handed over early fails with its commit: nothing was answered
    before it, the work is back in the queue with its attempt unspent, and its second run
    completes it once (one completed task in the counts)."""
    s = await start()
    db = s.engine.db
    task = await s.create()
    failed = fail_the_next_commit(monkeypatch, db)
    await rest(db)
    [first] = await s.take(early=True)  # a quiet database: handed over before the commit
    with pytest.raises(Unavailable):
        await s.engine.complete(first.subtask.subtask_id, first.lease_id, {"run": 1})
    assert failed
    queued = await s.status(task)
    assert queued.status is Status.PENDING and queued.result is None
    [second] = await s.take()
    assert second.subtask.subtask_id == first.subtask.subtask_id
    assert second.lease_id != first.lease_id
    with pytest.raises(LeaseLost):  # the first run's lease never existed
        await s.engine.complete(first.subtask.subtask_id, first.lease_id, {"run": 1})
    await s.engine.complete(second.subtask.subtask_id, second.lease_id, {"run": 2})
    shown = await s.status(task)
    assert shown.status is Status.COMPLETED and shown.result == {"run": 2}
    assert shown.attempt == 1
    counts = await s.tasks.counts(ACME)
    assert counts[Status.COMPLETED] == 1 and counts.get(Status.PENDING, 0) == 0


@pytest.mark.parametrize("start", ["postgresql"], indirect=True)
async def test_a_batch_that_handed_work_over_and_met_a_conflict_runs_again_without_it(
    start: StartScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL runs a batch again after a conflict with another writer (a serialisation
    failure); the second run hands nothing over early. The create is stored queued and
    answered; the report of the work handed over in the first run is refused (its lease
    was never stored), and the work runs again and completes once."""
    s = await start()
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 60.0)
    waiting = await parked_early_worker(s)
    conflict = asyncpg.exceptions.SerializationError("could not serialize access")
    failed = fail_the_next_commit(monkeypatch, s.engine.db, conflict)
    creating = asyncio.create_task(s.create())
    [first] = await asyncio.wait_for(waiting, timeout=10)
    with pytest.raises(LeaseLost):
        await s.engine.complete(first.subtask.subtask_id, first.lease_id, {"run": 1})
    task = await asyncio.wait_for(creating, timeout=10)
    assert failed and first.subtask.task_id == task.task_id
    assert (await s.status(task)).status is Status.PENDING
    [second] = await s.take()
    assert second.subtask.subtask_id == first.subtask.subtask_id
    await s.engine.complete(second.subtask.subtask_id, second.lease_id, {"run": 2})
    shown = await s.status(task)
    assert shown.status is Status.COMPLETED and shown.result == {"run": 2}
    assert shown.attempt == 1
    events = await stored_events(s, task)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    counts = await s.tasks.counts(ACME)
    assert counts[Status.COMPLETED] == 1 and counts.get(Status.PENDING, 0) == 0
