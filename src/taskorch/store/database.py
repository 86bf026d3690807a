"""The database handle: engines per backend, migrations at start, and group commit.

Repository code is synchronous SQLAlchemy Core (functions of a ``Connection``); this module
runs it without blocking the event loop:

- SQLite: on threads of our own, with the sqlite3 driver: one writer thread (SQLite allows one
  writer) and a few reader threads (WAL lets them read while it writes). Measured on our
  2-core machines, a statement costs ~40 µs this way against ~350-450 µs through the aiosqlite
  adaptor, which hops threads for every DBAPI call; so URLs naming ``sqlite+aiosqlite`` are
  accepted and run this way.
- PostgreSQL: on asyncpg connections through ``AsyncConnection.run_sync``.

Every write goes through :meth:`Database.write`. Writers run all the operations waiting at
that moment in ONE transaction, commit once, then run their after-commit hooks in commit
order and answer the callers. Under load this spreads the commit (and its fsync) over many
operations; when idle a write waits for nothing. Nothing is acknowledged before its
transaction has committed. An operation that raises is rolled back alone: the batch is
rolled back and the others run again without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskorch.core.errors import Unavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_URL = "sqlite:///var/taskorch.db"
MAX_BATCH = 256
CONFLICT_RETRIES = 5
CONFLICT_PAUSE_SECONDS = 0.01  # the upper bound of a random pause, times the attempt
# serialization_failure, deadlock_detected
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
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


@dataclass
class _Pending:
    op: WriteOp[Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None
    hooks: list[Callable[[], None]] = field(default_factory=list)


class Database:
    """A SQLite or PostgreSQL database with group-committed writes.

    Args:
        url: ``sqlite:///path.db`` (``sqlite+aiosqlite`` is accepted) or
            ``postgresql+asyncpg://user@host/db``.
        pool_size: reader connections (threads on SQLite).
        writers: concurrent writer transactions on PostgreSQL (SQLite always has one).
    """

    def __init__(self, url: str = DEFAULT_URL, *, pool_size: int = 4, writers: int = 4) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database {self.dialect!r}: use sqlite:///FILE or "
                "postgresql+asyncpg://USER@HOST/DB"
            )
        self.pool_size = pool_size
        self.writers = 1 if self.is_sqlite else max(1, writers)
        self._sync_engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_threads: ThreadPoolExecutor | None = None
        self._writer_conn: Connection | None = None
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer_tasks: list[asyncio.Task[None]] = []
        self._open = False

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def describe(self) -> str:
        """The URL with any password hidden, for logs."""
        return self.url.render_as_string(hide_password=True)

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
            asyncio.create_task(self._write_loop(), name=f"db-writer-{i}")
            for i in range(self.writers)
        ]

    async def close(self) -> None:
        """Finishes queued writes, then closes every connection."""
        if not self._open:
            return
        self._open = False
        for _ in self._writer_tasks:
            self._queue.put_nowait(None)
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
            await self._in_writer_thread(lambda: self._on_writer_conn(_in_tx, upgrade))
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
            Exception: whatever ``op`` raised; its changes were rolled back.
        """
        if not self._open:
            raise Unavailable("database is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(op, future))
        return await future

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
            raise Unavailable(f"database unavailable: {_short(exc)}") from exc
        except OSError as exc:
            raise Unavailable(f"database unavailable: {exc}") from exc

    async def ping(self) -> None:
        """Raises Unavailable unless the database answers a trivial query."""
        await self.read(lambda conn: conn.execute(text("SELECT 1")).scalar())

    def _read_sync(self, fn: ReadOp[T]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as conn:
            return fn(conn)

    # -- the writers ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                await self._commit_retrying(batch)
            except Exception as exc:  # the connection broke or the commit failed
                log.warning("database write failed", error=_short(exc), batch=len(batch))
                error = Unavailable(f"database unavailable: {_short(exc)}")
                for item in batch:
                    item.error, item.hooks = error, []
            for item in batch:
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
            if stop:
                return

    async def _commit_retrying(self, batch: list[_Pending]) -> None:
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
                await self._commit(batch)
                return
            except DBAPIError as exc:
                if _sqlstate(exc) not in RETRYABLE_SQLSTATES or attempt == CONFLICT_RETRIES:
                    raise
                log.info(
                    "write conflict; retrying",
                    sqlstate=_sqlstate(exc),
                    attempt=attempt,
                    batch=len(batch),
                )
            if len(batch) > 1:
                await self._commit_one_by_one(batch)
                return
            await asyncio.sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * attempt))

    async def _commit_one_by_one(self, batch: list[_Pending]) -> None:
        for item in batch:
            try:
                await self._commit_retrying([item])
            except Exception as exc:  # this operation alone failed to commit
                log.warning("database write failed", error=_short(exc), batch=1)
                item.error = Unavailable(f"database unavailable: {_short(exc)}")
                item.hooks = []

    async def _commit(self, batch: list[_Pending]) -> None:
        if self._write_thread is not None:
            await self._in_writer_thread(lambda: self._on_writer_conn(_run_batch_in_tx, batch))
            return
        assert self._async_engine is not None
        async with self._async_engine.connect() as aconn:
            await aconn.run_sync(_run_batch_in_tx, batch)

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


def _in_tx(conn: Connection, fn: Callable[[Connection], T]) -> T:
    with conn.begin():
        return fn(conn)


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
        failed = _attempt(conn, pending, use_savepoints)
        if failed is None:
            return
        pending = [item for item in pending if item is not failed]


def _attempt(conn: Connection, batch: list[_Pending], use_savepoints: bool) -> _Pending | None:
    with conn.begin() as tx:
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
            tx.rollback()
            return item
    return None


def _is_own_conflict(exc: DBAPIError) -> bool:
    """Integrity errors belong to the operation that caused them; other errors to the batch."""
    return isinstance(exc, IntegrityError)


def _is_outage(exc: DBAPIError) -> bool:
    """Whether the database (or the way to it) failed, rather than the statement: refused or
    lost connections, shutdowns, exhausted resources. Bugs in SQL and bad data are not."""
    return not isinstance(exc, ProgrammingError | IntegrityError | DataError | NotSupportedError)


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]


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
        conn.exec_driver_sql(conn.info.get("taskorch_begin", "BEGIN"))

    return engine
