"""The database handle: engines per backend, migrations at start, and group commit.

Two kinds of writes share one group commit:

- Transitions of the work queue (create, take, complete, ...) are values handed to
  :meth:`Database.transition`. Every transition waiting when a batch starts runs in it, in
  one call of the engine's runner per batch, which works on all of them at once with raw
  driver statements (store/queue/): a batch of fifty completions costs the statements of
  one. Its :class:`~taskorch.store.queue.Changes` (events, count deltas, work made ready) are
  settled before the commit and handed to ``on_commit`` after it.
- Everything else is synchronous SQLAlchemy Core (functions of a ``Connection``) handed to
  :meth:`Database.write`.

Where they run:

- SQLite (one writer): one batch at a time holds the writer connection. The SQLAlchemy
  operations and COMMIT (its fsync) run on a writer thread of our own; BEGIN and the
  transitions run on the event loop, with the sqlite3 driver (each statement takes tens of
  microseconds, less than a thread hop would). A quiet batch with nothing behind it commits
  on the event loop too (the hop to the thread and back costs an idle machine a quarter of
  a millisecond); SQLite's checkpoint of its log, which runs inside a COMMIT, runs only on
  the writer thread (see _commit_on_writer_thread). Reads run on a few reader
  threads (WAL lets them read while the writer writes). URLs naming ``sqlite+aiosqlite``
  are accepted and run this way: that adaptor hops threads for every DBAPI call.
- PostgreSQL: transitions run on asyncpg connections of their own (prepared statements,
  one round trip each, no SQLAlchemy), several batches at once; SQLAlchemy operations run on
  asyncpg through ``AsyncConnection.run_sync`` in batches of their own. The database's row
  locks keep them apart (see the lock order in store/queue/postgres.py).

Under load one commit (and its fsync) serves many operations; when idle a write waits for
nothing, and a batch that comes after its writer rested may hold its commit a couple of
milliseconds for the reports of work it handed to an in-process worker (see _run_early), so
that a short task is one transaction from create to completion. Nothing is acknowledged
before its transaction has committed. An operation that raises is rolled back alone: the
batch is rolled back and the others run again without it (transitions, which fail as a
group, run again each in a savepoint of their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeGuard, TypeVar, cast

import structlog
from sqlalchemy import Connection as Connection  # re-exported: core/ names it through store/
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskorch.domain.errors import AlreadyStored, Unavailable
from taskorch.store.queue import Changes, Queue
from taskorch.store.queue.sqlite import SqliteQueue

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_URL = "sqlite:///var/taskorch.db"
MAX_BATCH = 256
# How long a batch holds its commit for the reports of work it handed over early.
EARLY_REPORT_SECONDS = 0.002
# At most so many quiet SQLite commits on the event loop, or rows changed, before one on
# the writer thread (where the log is checkpointed).
COMMITS_ON_LOOP = 64
ROWS_ON_LOOP = 400
# Turns of the event loop a writer lets pass after a batch, while more work waits, before
# it gathers the next one: what the batch's answers set off joins that next batch instead
# of the one after (an in-process worker's next take is queued five turns after its answer:
# the engine's callback, the take's task, asyncio.wait's callback, the worker loop, the new
# take's task), and so do the calls that arrive meanwhile. Measured with
# bench/task_batches.py (SQLite, 10 in-process slots, 5,000 tasks from 32 clients): batches
# of 12-14 transitions grow to 20-28 and the loop's CPU a task falls by a sixth.
TURNS_BETWEEN_BATCHES = 6
CONFLICT_RETRIES = 5
CONFLICT_PAUSE_SECONDS = 0.01  # the upper bound of a random pause, times the attempt
# serialization_failure, deadlock_detected
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
UNIQUE_VIOLATION = "23505"
# SQLSTATE classes of a database (or the way to it) failing rather than a statement:
# connection exceptions, insufficient resources, operator intervention, system errors.
OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
# SQLSTATE classes of a statement's own fault: cardinality, data, integrity, routine, syntax
# or access rule, feature not supported, PL/pgSQL.
STATEMENT_SQLSTATE_CLASSES = frozenset({"21", "22", "23", "2F", "42", "0A", "P0"})
DATABASE_UNAVAILABLE = "The database is unavailable; retry later"
_MIGRATION_LOCK_KEY = 0x7461736B  # serialises the migrations of replicas on PostgreSQL


class Transaction:
    """What a write operation sees: the connection, and hooks that run after the commit."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.hooks: list[Callable[[], None]] = []

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Runs ``hook`` on the event loop once the transaction has committed."""
        self.hooks.append(hook)


WriteOp = Callable[[Transaction], T]
ReadOp = Callable[[Connection], T]


@dataclass(eq=False)
class _Pending:
    op: WriteOp[Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    hooks: list[Callable[[], None]] = field(default_factory=list)


@dataclass(eq=False)
class HotOp:
    """One transition waiting for a batch: ``value`` says what to do; the runner sets
    ``result`` or ``error``.

    A value whose class sets ``exclusive = True`` runs in one in-flight batch at a time (the
    writers gather such values that arrive meanwhile into the next one): for transitions
    that take a lock held until the commit, which concurrent batches would only wait on."""

    value: Any
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None

    def reset(self) -> None:
        self.result, self.error = None, None

    @property
    def exclusive(self) -> bool:
        return bool(getattr(self.value, "exclusive", False))


# Runs a batch's transitions inside its transaction (the task engine's, core/engine.py).
HotRunner = Callable[[Queue, Changes, Sequence[HotOp]], Awaitable[None]]
_Item = _Pending | HotOp


class _ColdOpFailed(Exception):
    """A SQLAlchemy operation raised: the batch is rolled back and run again without it."""

    def __init__(self, item: _Pending) -> None:
        self.item = item


class Database:
    """A SQLite or PostgreSQL database with group-committed writes.

    Args:
        url: ``sqlite:///path.db`` (``sqlite+aiosqlite`` is accepted) or
            ``postgresql+asyncpg://user@host/db``.
        pool_size: reader connections (threads on SQLite).
        writers: concurrent writer transactions on PostgreSQL for writes other than the task
            engine's transitions (SQLite has one writer).
        transition_writers: concurrent writer transactions on PostgreSQL for the task
            engine's transitions. One by default: measured on a 2-core machine, one writer
            whose batches gather everything that arrived meanwhile beat two, three and four
            concurrent ones on every workload of bench/peers.py (every batch that sends
            NOTIFY holds a lock through its commit, so the commits of concurrent batches do
            not overlap anyway, and each batch pays its fixed statements).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        pool_size: int = 4,
        writers: int = 4,
        transition_writers: int = 1,
    ) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database {self.dialect!r}: use sqlite:///FILE or "
                "postgresql+asyncpg://USER@HOST/DB"
            )
        self.pool_size = pool_size
        self.writers = 1 if self.is_sqlite else max(1, writers)
        self.transition_writers = 0 if self.is_sqlite else max(1, transition_writers)
        # The task engine's: runs the transitions of a batch; told what a batch changed.
        self.hot_runner: HotRunner | None = None
        self.on_commit: Callable[[Changes], None] | None = None
        self._sync_engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_threads: ThreadPoolExecutor | None = None
        self._writer_conn: Connection | None = None
        # SQLite's checkpoint interval (pages), and the SQLite writer's commits on the event
        # loop and its total_changes since its last commit on the writer thread.
        self._autocheckpoint = 1000
        self._commits_on_loop = 0
        self._rows_at_thread_commit = 0
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        # PostgreSQL: transitions have writers of their own (raw asyncpg connections).
        self._hot_queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._writer_tasks: list[asyncio.Task[None]] = []
        # Exclusive transitions (see HotOp) wait here while another writer's batch holds some.
        self._exclusive_in_flight = False
        self._exclusive_backlog: list[_Item] = []
        # What arrived on a queue while a batch held its commit for early reports and did
        # not join it (see _run_early); that queue's next batch starts with it.
        self._carried: dict[asyncio.Queue[_Item | None], deque[_Item | None]] = {
            self._queue: deque(),
            self._hot_queue: deque(),
        }
        # Whether a queue's current batch came after its writer rested (had nothing to do)
        # for at least EARLY_REPORT_SECONDS: only then may it hold its commit (_quiet).
        self._rested: dict[asyncio.Queue[_Item | None], bool] = {
            self._queue: False,
            self._hot_queue: False,
        }
        self._one_by_one = False
        self._open = False
        # Transactions committed and operations in them (the group commit's effect).
        self.batches = 0
        self.operations = 0

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database's file (None on PostgreSQL or without a file)."""
        database = self.url.database if self.is_sqlite else None
        if not database or database == ":memory:":
            return None
        return Path(database).resolve()

    def describe(self) -> str:
        """The URL with any password hidden, for logs."""
        return self.url.render_as_string(hide_password=True)

    @property
    def dsn(self) -> str:
        """The URL for a raw PostgreSQL driver (``postgresql://...``)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    # -- life cycle ---------------------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        """Connects, upgrades the schema to the newest migration and starts the writers."""
        if self.is_sqlite:
            self._sync_engine = _sqlite_engine(self.url, self.pool_size)
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
            self._read_threads = ThreadPoolExecutor(self.pool_size, thread_name_prefix="db-reader")
        else:
            self._async_engine = create_async_engine(
                self.url.set(drivername="postgresql+asyncpg"),
                pool_size=self.pool_size + self.writers,
                max_overflow=self.pool_size,
                pool_pre_ping=True,
            )
        if migrate:
            await self.migrate()
        self._open = True
        self._writer_tasks = [
            asyncio.create_task(self._write_loop(self._queue), name=f"db-writer-{i}")
            for i in range(self.writers)
        ]
        if not self.is_sqlite:
            from taskorch.store.queue.postgres import PostgresWriter

            self._writer_tasks += [
                asyncio.create_task(
                    self._write_loop(self._hot_queue, PostgresWriter(self.dsn)),
                    name=f"db-hot-writer-{i}",
                )
                for i in range(self.transition_writers)
            ]

    async def close(self) -> None:
        """Finishes queued writes, then closes every connection."""
        if not self._open:
            return
        self._open = False
        for _ in range(self.writers):
            self._queue.put_nowait(None)
        for _ in range(self.transition_writers):
            self._hot_queue.put_nowait(None)
        await asyncio.gather(*self._writer_tasks, return_exceptions=True)
        self._writer_tasks = []
        if self._write_thread is not None:
            await self._in_writer_thread(self._close_writer_conn)
            self._write_thread.shutdown(wait=True)
        if self._read_threads is not None:
            self._read_threads.shutdown(wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()

    async def migrate(self) -> None:
        """Upgrades the schema to the newest Alembic revision (safe with many replicas)."""
        from taskorch.store.migrate import upgrade

        if self.is_sqlite:
            await self._in_writer_thread(lambda: self._on_writer_conn(_waiting_in_tx, upgrade))
            return

        def run_locked(conn: Connection) -> None:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            upgrade(conn)

        assert self._async_engine is not None
        async with self._async_engine.begin() as aconn:
            await aconn.run_sync(run_locked)

    # -- operations ---------------------------------------------------------------------------

    async def write(self, op: WriteOp[T]) -> T:
        """Runs ``op`` in a committed transaction and returns its result.

        Raises:
            Unavailable: the database could not commit, or is closed.
            AlreadyStored: a row ``op`` inserted has the unique key of a row another writer
                stored first (a race its own look-up could not see).
            Exception: whatever ``op`` raised; its changes were rolled back.
        """
        if not self._open:
            raise Unavailable("database is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(op, future))
        try:
            return await future
        except IntegrityError as exc:
            # Translated here so that core/ sees domain errors only, never SQLAlchemy's.
            if _is_unique_violation(exc):
                raise AlreadyStored(_short(exc)) from exc
            raise

    def transition(self, value: Any) -> asyncio.Future[Any]:
        """Queues a transition for the next batch; the future answers once it committed.

        Raises:
            Unavailable: the database is closed.
        """
        if not self._open:
            raise Unavailable("database is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue = self._queue if self.is_sqlite else self._hot_queue
        queue.put_nowait(HotOp(value, future))
        return future

    async def read(self, fn: ReadOp[T]) -> T:
        """Runs ``fn`` on a pooled connection inside one read transaction (a snapshot)."""
        try:
            if self._read_threads is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._read_threads, self._read_sync, fn)
            assert self._async_engine is not None
            async with self._async_engine.connect() as aconn:
                return await aconn.run_sync(fn)
        except DBAPIError as exc:
            if not _is_outage(exc):
                raise  # a programming error, not an outage
            raise unavailable(exc) from exc
        except OSError as exc:
            raise unavailable(exc) from exc

    async def ping(self) -> None:
        """Raises Unavailable unless the database answers a trivial query."""
        await self.read(lambda conn: conn.execute(text("SELECT 1")).scalar())

    def _read_sync(self, fn: ReadOp[T]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as conn:
            return fn(conn)

    # -- the writers ---------------------------------------------------------------------------

    async def _write_loop(
        self, queue: asyncio.Queue[_Item | None], hot_writer: PostgresWriterLike | None = None
    ) -> None:
        carried = self._carried[queue]
        try:
            while True:
                batch = self._backlog_batch()
                self._rested[queue] = False
                if not batch:
                    first = carried.popleft() if carried else await self._next(queue)
                    if first is None:
                        break
                    batch = [first]
                stop = False
                while len(batch) < MAX_BATCH and (carried or not queue.empty()):
                    item = carried.popleft() if carried else queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                await self._settle_claimed(batch, hot_writer)
                if stop:
                    break
                if carried or not queue.empty():
                    for _ in range(TURNS_BETWEEN_BATCHES):
                        await asyncio.sleep(0)
            # Exclusive transitions deferred by this writer's batches, when no other batch
            # holds some (that one's writer runs them once it is done).
            while batch := self._backlog_batch():
                await self._settle_claimed(batch, hot_writer)
        finally:
            if hot_writer is not None:
                await hot_writer.close()

    async def _next(self, queue: asyncio.Queue[_Item | None]) -> _Item | None:
        """The next item of ``queue``, noting whether its writer rested long enough before
        it for the batch to hold its commit (see _quiet)."""
        if not queue.empty():
            return queue.get_nowait()
        loop = asyncio.get_running_loop()
        since = loop.time()
        item = await queue.get()
        self._rested[queue] = loop.time() - since >= EARLY_REPORT_SECONDS
        return item

    def _backlog_batch(self) -> list[_Item]:
        """The deferred exclusive transitions, when no batch holds some."""
        if self._exclusive_in_flight or not self._exclusive_backlog:
            return []
        batch = self._exclusive_backlog[:MAX_BATCH]
        del self._exclusive_backlog[:MAX_BATCH]
        return batch

    async def _settle_claimed(
        self, batch: list[_Item], hot_writer: PostgresWriterLike | None
    ) -> None:
        """Commits a batch, its exclusive transitions deferred while another batch holds
        some: they join the next batch after that one."""
        exclusive = [item for item in batch if isinstance(item, HotOp) and item.exclusive]
        holds = bool(exclusive) and not self._exclusive_in_flight
        if exclusive and not holds:
            self._exclusive_backlog += exclusive
            batch = [item for item in batch if not (isinstance(item, HotOp) and item.exclusive)]
            if not batch:
                return
        self._exclusive_in_flight |= holds
        try:
            await self._settle(batch, hot_writer)
        finally:
            if holds:
                self._exclusive_in_flight = False

    async def _settle(self, batch: list[_Item], hot_writer: PostgresWriterLike | None) -> None:
        """Commits one batch, then runs its after-commit work and answers its callers."""
        self.batches += 1
        self.operations += len(batch)
        changes: Changes | None = None
        try:
            if hot_writer is not None:
                changes = await hot_writer.commit(self._hot_run(batch), batch)
            else:
                changes = await self._commit_retrying(batch)
        except Exception as exc:  # the connection broke or the commit failed
            log.warning("database write failed", error=_short(exc), batch=len(batch))
            # A statement's own failure (bad data that passed every check: a bug) is
            # INTERNAL; anything else is the database's, told plainly (logged, not sent).
            error: Exception = exc if _is_statement_error(exc) else unavailable(exc)
            for item in batch:
                item.error = error
                if isinstance(item, _Pending):
                    item.hooks = []
        if changes is not None and self.on_commit is not None:
            try:
                self.on_commit(changes)
            except Exception:
                log.exception("after-commit work failed")
        for item in batch:
            if _is_driver_error(item.error) and not _is_statement_error(item.error):
                item.error = unavailable(item.error)
            if isinstance(item, _Pending):
                for hook in item.hooks:
                    try:
                        hook()
                    except Exception:
                        log.exception("after-commit hook failed")
            if item.future.done():
                continue
            if item.error is not None:
                item.future.set_exception(item.error)
            else:
                item.future.set_result(item.result)

    async def _run_hot(self, q: Queue, changes: Changes, ops: Sequence[HotOp]) -> None:
        assert self.hot_runner is not None, "no task engine attached to the database"
        for op in ops:
            op.reset()
        await self.hot_runner(q, changes, ops)

    def _quiet(self, queue: asyncio.Queue[_Item | None]) -> bool:
        """The writer of ``queue`` rested before this batch at least as long as the batch
        may hold its commit, nothing waits for the next batch, nor do failed transitions
        run one by one: the batch may hand work over early (see _run_early). Under load the
        writer never rests that long, so holds (the writer idle on an open transaction)
        cannot take more than about half of its time; at 50/s it rests 20 ms a task."""
        return self._rested[queue] and not (
            self._one_by_one or self._carried[queue] or not queue.empty()
        )

    async def _run_early(
        self,
        q: Queue,
        changes: Changes,
        ops: list[HotOp],
        queue: asyncio.Queue[_Item | None],
        *also: list[_Item],
    ) -> None:
        """Runs a quiet batch's transitions with ``Changes.early`` set: work they lease to
        an in-process worker may be handed over before the commit, the batch holding its
        commit (up to ``EARLY_REPORT_SECONDS``) for the reports of that work (futures in
        ``Changes.reports``), which then join it (appended to ``ops`` and ``also``: run
        again with the batch after a failure, answered with it after the commit). A short
        task then costs one commit from create to completion, not two or three: nothing
        is answered before the commit, and if it fails the early work's reports fail with
        it (the work runs again)."""
        changes.early = True
        try:
            await self._run_hot(q, changes, ops)
        finally:
            changes.early = False
        if changes.reports:
            joined = await self._join_reports(changes.reports, queue)
            ops += joined
            for items in also:
                items += joined
            # Even with nothing joined: what the engine held back for the reports is
            # written then (TaskEngine._write_held).
            await self._run_hot(q, changes, joined)

    def _hot_run(self, batch: list[_Item]) -> HotRunner:
        """What a PostgreSQL transition writer runs in its transactions for ``batch``: on
        a quiet database with this one writer, its first transaction hands work over early
        (see _run_early); a transaction run again after a conflict, or one transition
        alone, runs what it is given."""
        early = self.transition_writers == 1 and self._quiet(self._hot_queue)

        async def run(q: Queue, changes: Changes, ops: Sequence[HotOp]) -> None:
            nonlocal early
            if early and ops is batch:
                early = False
                # A PostgreSQL transition writer's batch holds transitions only.
                await self._run_early(q, changes, cast(list[HotOp], batch), self._hot_queue)
            else:
                await self._run_hot(q, changes, ops)

        return run

    async def _run_isolated(
        self,
        q: Queue,
        changes: Changes,
        ops: Sequence[HotOp],
        savepoint: Callable[[], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        """Each transition alone in a savepoint: one that fails takes only itself down."""
        for op in ops:
            own = Changes()
            try:
                async with savepoint():
                    await self._run_hot(q, own, [op])
            except Exception as exc:
                if _is_raw_outage(exc):
                    raise
                log.info("a transition failed in its batch", error=_short(exc))
                op.error = exc
                continue
            changes.merge(own)

    async def _commit_retrying(self, batch: list[_Item]) -> Changes:
        """Commits; a batch PostgreSQL aborted as a deadlock or serialisation conflict with
        another writer is run again (its operations are functions of the database).

        Each operation takes its rows in the one lock order (a task's row before its
        subtasks'), but a batch of several operations takes the rows of several tasks in
        the order the operations came, and another writer's batch may meet them in another
        order. So after a conflict the operations run again one transaction each, which
        cannot deadlock each other; only a single operation is retried as it is.
        """
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                return await self._commit(batch)
            except (DBAPIError, sqlite3.Error) as exc:
                if len(batch) > 1 and _is_statement_error(exc):
                    # Every statement passed alone yet the batch failed (its settlement, say,
                    # met a value it cannot store): each operation commits alone, so the one
                    # at fault fails alone and never its batch-mates.
                    return await self._commit_one_by_one(batch)
                if not isinstance(exc, DBAPIError):
                    raise
                if _sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt == CONFLICT_RETRIES:
                    raise
                log.info(
                    "write conflict; retrying",
                    sqlstate=_sqlstate(exc),
                    attempt=attempt,
                    batch=len(batch),
                )
            if len(batch) > 1:
                return await self._commit_one_by_one(batch)
            await asyncio.sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * attempt))
        raise AssertionError("unreachable")

    async def _commit_one_by_one(self, batch: list[_Item]) -> Changes:
        changes = Changes()
        self._one_by_one = True  # nothing joins these transactions (see _run_early)
        try:
            for item in list(batch):
                try:
                    changes.merge(await self._commit_retrying([item]))
                except Exception as exc:  # this operation alone failed to commit
                    log.warning("database write failed", error=_short(exc), batch=1)
                    item.error = exc if _is_statement_error(exc) else unavailable(exc)
                    if isinstance(item, _Pending):
                        item.hooks = []
        finally:
            self._one_by_one = False
        return changes

    async def _commit(self, batch: list[_Item]) -> Changes:
        if self._write_thread is not None:
            return await self._commit_sqlite(batch)
        cold = [item for item in batch if isinstance(item, _Pending)]
        assert self._async_engine is not None
        async with self._async_engine.connect() as aconn:
            await aconn.run_sync(_run_batch_in_tx, cold)
        return Changes()

    async def _commit_sqlite(self, batch: list[_Item]) -> Changes:
        """One transaction on the writer connection: BEGIN and the transitions on the event
        loop, the SQLAlchemy operations and COMMIT (its fsync) on the writer thread."""
        hot = [item for item in batch if isinstance(item, HotOp)]
        cold = [item for item in batch if isinstance(item, _Pending)]
        isolate = False
        cold_rounds = itertools.chain((False, False), itertools.repeat(True))
        cold_savepoints = next(cold_rounds)
        # Work is handed over early only in a batch's first transaction on a quiet database:
        # the transactions that follow a failure run what joined it, never more.
        early = self._quiet(self._queue)
        while True:
            conn = await self._begin()
            try:
                return await self._sqlite_batch(
                    conn, batch, hot, cold, isolate, cold_savepoints, early
                )
            except _ColdOpFailed as failed:
                early = False
                await self._in_writer_thread(partial(self._end, conn, commit=False))
                cold = [item for item in cold if item is not failed.item]
                cold_savepoints = next(cold_rounds)
            except (DBAPIError, sqlite3.Error) as exc:
                await self._in_writer_thread(partial(self._end, conn, commit=False))
                if isolate or not hot or _is_raw_outage(exc):
                    raise
                early = False
                isolate = True  # a transition's statement failed: find which one
            except BaseException:
                await self._in_writer_thread(partial(self._end, conn, commit=False))
                raise

    async def _sqlite_batch(
        self,
        conn: Connection,
        batch: list[_Item],
        hot: list[HotOp],
        cold: list[_Pending],
        isolate: bool,
        cold_savepoints: bool,
        early: bool,
    ) -> Changes:
        changes = Changes()
        raw = _sqlite_raw(conn)
        queue = SqliteQueue(raw)
        if hot and isolate:
            await self._run_isolated(queue, changes, hot, partial(_sqlite_savepoint, raw, queue))
        elif hot and early:
            await self._run_early(queue, changes, hot, self._queue, batch)
        elif hot:
            await self._run_hot(queue, changes, hot)
        if cold:
            await self._in_writer_thread(partial(_run_cold, conn, cold, cold_savepoints))
        await queue.settle(changes)
        if early and not cold and self._may_commit_on_loop(raw):
            # A quiet batch with nothing behind it commits on the loop, where it began: the fsync
            # (half a millisecond) holds the loop, but the hop to the writer thread and back
            # costs a quarter of one on an idle machine, on the path of every task's end.
            self._end(conn, commit=True)
            self._commits_on_loop += 1
        else:
            await self._in_writer_thread(partial(self._commit_on_writer_thread, conn))
        return changes

    def _may_commit_on_loop(self, raw: sqlite3.Connection) -> bool:
        """Nothing waits for the next batch, and few commits and rows came since the last
        one on the writer thread (SQLite checkpoints the log there, see below)."""
        return (
            not self._carried[self._queue]
            and self._queue.empty()
            and self._commits_on_loop < COMMITS_ON_LOOP
            and raw.total_changes - self._rows_at_thread_commit < ROWS_ON_LOOP
        )

    def _commit_on_writer_thread(self, conn: Connection) -> None:
        """COMMIT, SQLite's automatic checkpoint on for it: the writer connection has it off
        (it runs inside a COMMIT, a few milliseconds of copying and fsync when the log has
        grown past its thousand pages, which must not hold the loop); every so many commits
        on the loop, a batch commits here, so the log is checkpointed as SQLite would."""
        raw = _sqlite_raw(conn)
        raw.execute(f"PRAGMA wal_autocheckpoint = {self._autocheckpoint}").close()
        self._end(conn, commit=True)
        raw.execute("PRAGMA wal_autocheckpoint = 0").close()
        self._commits_on_loop = 0
        self._rows_at_thread_commit = raw.total_changes

    async def _join_reports(
        self, reports: list[asyncio.Future[None]], queue: asyncio.Queue[_Item | None]
    ) -> list[HotOp]:
        """Waits (bounded) for the reports of work handed over early; the transitions
        queued on ``queue`` meanwhile join the batch (anything else waits for the next)."""
        try:
            await asyncio.wait(reports, timeout=EARLY_REPORT_SECONDS)
        finally:
            for report in reports:
                report.cancel()  # a late report goes in the next batch
        joined: list[HotOp] = []
        carried = self._carried[queue]
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, HotOp) and len(joined) < MAX_BATCH:
                joined.append(item)
            else:
                carried.append(item)
        self.operations += len(joined)
        return joined

    async def _begin(self) -> Connection:
        """BEGIN IMMEDIATE (the write lock) on the writer connection, on the event loop when
        the lock is free at once (a few microseconds); when another process holds it (a CLI
        writing), the writer thread waits for it instead."""
        conn = self._writer_conn
        if conn is None or conn.closed:
            conn = await self._in_writer_thread(partial(self._on_writer_conn, _same_connection))
        raw = _sqlite_raw(conn)
        try:
            raw.execute("BEGIN IMMEDIATE").close()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            await self._in_writer_thread(partial(_begin_waiting, raw))
        return conn

    def _end(self, conn: Connection, *, commit: bool) -> None:
        """COMMIT or ROLLBACK: through SQLAlchemy when its operations ran in the transaction
        (it then knows of it), else on the driver."""
        transaction = conn.get_transaction()
        try:
            if transaction is not None:
                if commit:
                    transaction.commit()
                else:
                    transaction.rollback()
                return
            raw = _sqlite_raw(conn)
            if raw.in_transaction:
                raw.execute("COMMIT" if commit else "ROLLBACK").close()
        except (DBAPIError, sqlite3.Error):
            self._close_writer_conn()
            raise

    async def _in_writer_thread(self, fn: Callable[[], T]) -> T:
        assert self._write_thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, fn)

    def _on_writer_conn(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn(conn, *args)`` on the writer thread's connection, reconnecting if needed."""
        if self._writer_conn is None or self._writer_conn.closed:
            assert self._sync_engine is not None
            self._writer_conn = self._sync_engine.connect()
            # Take the write lock at BEGIN, so a second process (a CLI) waits on busy_timeout
            # instead of failing when it upgrades a read lock.
            self._writer_conn.info["taskorch_begin"] = "BEGIN IMMEDIATE"
            # Batches begin on the event loop, which must never wait: a busy lock answers at
            # once there and is waited for on the writer thread (_begin_waiting).
            raw = _sqlite_raw(self._writer_conn)
            raw.execute("PRAGMA busy_timeout = 0").close()
            # Its checkpoints run on the writer thread only (_commit_on_writer_thread).
            self._autocheckpoint = raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            raw.execute("PRAGMA wal_autocheckpoint = 0").close()
            self._rows_at_thread_commit = raw.total_changes
        try:
            return fn(self._writer_conn, *args)
        except DBAPIError:
            self._close_writer_conn()
            raise

    def _close_writer_conn(self) -> None:
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):
                self._writer_conn.close()
            self._writer_conn = None


class PostgresWriterLike(Protocol):
    """What a PostgreSQL transition writer offers the write loop (store/queue/postgres.py)."""

    async def commit(self, run: Any, batch: list[Any]) -> Changes: ...

    async def close(self) -> None: ...


def _sqlite_raw(conn: Connection) -> sqlite3.Connection:
    raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    return raw


@contextlib.asynccontextmanager
async def _sqlite_savepoint(raw: sqlite3.Connection, queue: SqliteQueue) -> Any:
    raw.execute("SAVEPOINT transition").close()
    try:
        yield
    except BaseException:
        raw.execute("ROLLBACK TO transition").close()
        raw.execute("RELEASE transition").close()
        queue.forget()  # what it read in the savepoint may be undone
        raise
    raw.execute("RELEASE transition").close()


def _begin_waiting(raw: sqlite3.Connection, seconds: float = 30.0) -> None:
    """BEGIN IMMEDIATE, waiting up to ``seconds`` for another process's write lock."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE").close()
            return
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def _waiting_in_tx(conn: Connection, fn: Callable[[Connection], T]) -> T:
    """``fn`` in a transaction that waits for another process's write lock (up to 30 s)."""
    raw = _sqlite_raw(conn)
    raw.execute("PRAGMA busy_timeout = 30000").close()
    try:
        with conn.begin():
            return fn(conn)
    finally:
        raw.execute("PRAGMA busy_timeout = 0").close()


def _run_cold(conn: Connection, batch: list[_Pending], use_savepoints: bool) -> None:
    """Runs SQLAlchemy operations inside the open transaction; raises _ColdOpFailed for the
    first that fails when not using savepoints (the caller rolls back and retries it out)."""
    for item in batch:
        item.hooks, item.result, item.error = [], None, None
        write_tx = Transaction(conn)
        savepoint = conn.begin_nested() if use_savepoints else None
        try:
            item.result = item.op(write_tx)
        except DBAPIError as exc:
            if not _is_own_conflict(exc):
                raise  # connection or transaction broken: the caller fails the batch
            item.error = exc
        except Exception as exc:
            item.error = exc
        if item.error is None:
            item.hooks = write_tx.hooks
            if savepoint is not None:
                savepoint.commit()
            continue
        if savepoint is not None:
            savepoint.rollback()
            continue
        raise _ColdOpFailed(item)


def _run_batch_in_tx(conn: Connection, batch: list[_Pending]) -> None:
    """Runs the batch's operations in one transaction; a failing one is retried out.

    The first pass runs every operation without savepoints (they cost as much as a write).
    When one raises, the transaction is rolled back and the rest run again in a new one;
    after a second failure the remaining operations each get a savepoint.
    """
    pending = list(batch)
    for use_savepoints in itertools.chain((False, False), itertools.repeat(True)):
        if not pending:
            return
        try:
            with conn.begin():
                _run_cold(conn, pending, use_savepoints)
            return
        except _ColdOpFailed as failed:
            pending = [item for item in pending if item is not failed.item]


def _is_unique_violation(exc: IntegrityError) -> bool:
    """Whether a statement broke a unique constraint (rather than a foreign key or a check)."""
    if _sqlstate(exc) == UNIQUE_VIOLATION:
        return True
    return isinstance(exc.orig, sqlite3.IntegrityError) and "UNIQUE constraint" in str(exc.orig)


def _is_own_conflict(exc: DBAPIError) -> bool:
    """Integrity errors belong to the operation that caused them; other errors to the batch."""
    return isinstance(exc, IntegrityError)


def _is_outage(exc: DBAPIError) -> bool:
    """Whether the database (or the way to it) failed, rather than the statement: refused or
    lost connections, shutdowns, exhausted resources. Bugs in SQL and bad data are not (the
    asyncpg adaptor wraps most server errors in a generic DBAPIError: its SQLSTATE decides)."""
    return not _is_statement_error(exc)


def _is_statement_error(exc: BaseException | None) -> bool:
    """Whether a driver's error is the statement's own fault (bad data, a constraint, a bug
    in SQL), which retrying cannot cure, rather than the database's."""
    if isinstance(exc, ProgrammingError | IntegrityError | DataError | NotSupportedError):
        return True
    if isinstance(exc, sqlite3.Error):
        return not isinstance(exc, sqlite3.OperationalError)
    sqlstate = _sqlstate(exc) if isinstance(exc, DBAPIError) else getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in STATEMENT_SQLSTATE_CLASSES


def _is_raw_outage(exc: BaseException) -> bool:
    """The same question for an error of a raw driver (sqlite3, asyncpg)."""
    if isinstance(exc, DBAPIError):
        return _is_outage(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return True  # locked, disk I/O, full disk: the database, not the statement
    if isinstance(exc, sqlite3.Error):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in OUTAGE_SQLSTATE_CLASSES
    return True  # lost connections, timeouts, OS errors


def _is_driver_error(exc: BaseException | None) -> TypeGuard[BaseException]:
    """Whether ``exc`` came from a database driver (rather than the domain's own checks)."""
    return isinstance(exc, DBAPIError | sqlite3.Error | OSError | TimeoutError) or (
        exc is not None and type(exc).__module__.startswith("asyncpg")
    )


def unavailable(cause: BaseException) -> Unavailable:
    """The error a caller gets when the database fails: a plain message, with the driver's
    error (which may name the database, its host or its internal state) kept as the cause,
    for the server's log only."""
    error = Unavailable(DATABASE_UNAVAILABLE)
    error.__cause__ = cause
    return error


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _short(exc: BaseException) -> str:
    return (
        str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        if str(exc)
        else type(exc).__name__
    )


def _sqlite_engine(url: URL, pool_size: int) -> Engine:
    database = url.database
    if not database or database == ":memory:":
        raise ValueError("SQLite needs a file: sqlite:///path/to/taskorch.db")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url.set(drivername="sqlite"),
        pool_size=pool_size + 1,
        max_overflow=pool_size,
        connect_args={"timeout": 30, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (the
        # documented recipe that makes SAVEPOINT and transactional DDL work with sqlite3).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",  # a commit survives power loss, not only a crash
            "busy_timeout=30000",
            "foreign_keys=ON",
            "cache_size=-65536",
            "temp_store=MEMORY",
            "mmap_size=268435456",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # The writer's batches may have begun the transaction on the driver already.
        if not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
            conn.exec_driver_sql(conn.info.get("taskorch_begin", "BEGIN"))

    return engine


def _same_connection(conn: Connection) -> Connection:
    return conn
