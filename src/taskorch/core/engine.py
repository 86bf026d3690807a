"""The task engine: every transition of tasks and subtasks on the hot path, run in batches.

Callers hand a transition (create, take, heartbeat, output, complete, fail, release,
cancel, expire) to :class:`TaskEngine` and await its answer. Every transition waiting when
the database starts a batch runs in that batch's one transaction (store/database.py): the
engine groups them by kind and runs each group as a few statements for all of its rows
(store/queue/), in this order, so a batch sees its own work:

    creates → dues → cancels → outputs → heartbeats → completes → fails → releases → expiries
    → takes

After the commit it publishes the batch's events to watchers, tells the workers of ended
subtasks to stop, and wakes the takers that the batch gave work to run.

Takers wait here without polling: a take that found nothing is *parked* until work it
could run is created, re-queued or comes due (or another replica says so). A create hands
its ready work straight to the parked takers that can run it: their takes join the same
batch, where the new work is stored started, leased to them (without the take's
statements), so an idle worker, in process or remote, gets a new task in the transaction
that created it, answered after that commit. An in-process worker whose runs are short
goes further (``take(early=True)``): on a quiet database (its writer rested before the
batch; either backend, on PostgreSQL with one transition writer) its leases are handed over
before the commit, and the batch holds its commit (a couple of milliseconds at most) for
their reports, which join it: a short task then costs one commit from create to completion.
Nothing is answered before that commit; if it fails, the reports fail with it and the work,
never leased as far as the database knows, runs again.

Lease rules: a lease is a worker's exclusive claim on one subtask until its deadline;
heartbeats extend it. Only the current holder may report or complete (a stale worker gets
LEASE_LOST, so a late result never overwrites). An expired lease puts the subtask back with
exponential backoff; past ``max_attempts`` the task fails with the last error. The task's
status follows its subtasks; a task's subtasks run stage by stage, and tasks wait for the
tasks they depend on.

Delayed tasks (``run_at``): their work is created held back and the task is listed in a
small table of delayed tasks; when its time comes the engine promotes it (a *due* step: its
first stage becomes ready, if its dependencies completed). One timer per process waits for
the earliest time it knows of; every replica's periodic rescue also promotes what is due, so
a restart or another replica's task is never missed.

Concurrency keys: a task with a ``concurrency_key`` joins its key's waiting line once nothing
else holds it back (dependencies, its time) and is admitted (its work made ready) while fewer
than the key's limit of tasks are admitted; a task that ends leaves its key and admits the
next in line, in the same batch. Work without a key costs nothing of this.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar

import structlog

from taskorch.core import validation
from taskorch.core.templates import placeholders
from taskorch.domain.artifacts import split_artifacts
from taskorch.domain.errors import (
    AlreadyExists,
    InvalidArgument,
    LeaseLost,
    ResourceExhausted,
    SubtaskNotFound,
    TaskNotCancellable,
    TaskNotFound,
    TaskorchError,
    within,
)
from taskorch.domain.ids import new_id
from taskorch.domain.leases import (
    DEFAULT_LEASE_SECONDS,
    HeartbeatAnswer,
    StopNotice,
    WorkerIdentity,
)
from taskorch.domain.values import (
    JSON,
    TERMINAL_STATUSES,
    Lease,
    ResourceUsage,
    Status,
    Subtask,
    Task,
    changed,
)
from taskorch.events.bus import Subscription, SubscriptionLagged
from taskorch.events.hub import EventHub
from taskorch.store import artifacts as artifact_store
from taskorch.store import subtasks as subtask_store
from taskorch.store.database import Connection, Database, HotOp
from taskorch.store.queue import (
    Changes,
    Progress,
    Queue,
    Retry,
    TakeFilter,
    TaskEnd,
    Turns,
    key_of,
)
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

MAX_LEASE_SECONDS = 3600.0
MAX_WAIT_SECONDS = 60.0
# A parked taker looks again at least this often (work of another process on the same
# SQLite file, a notice missed while reconnecting to PostgreSQL).
RECHECK_SECONDS = 1.0
# How long a take that read the queue and found no more work for its taker is trusted for
# the taker's next takes (see TaskEngine._note_dry).
DRY_SECONDS = 0.1
QUOTA_RETRY_SECONDS = 5.0
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
STEP_OUTPUT_MISSING = "STEP_OUTPUT_MISSING"
EXPIRE_LIMIT = 100
# Keyed leases remembered for the shortcut of _behind_keyed_end, at most.
MAX_KEYED_LEASES_KEPT = 10_000
# Delayed tasks promoted per batch (more come due at once: the next batch goes on).
DUE_LIMIT = 500


@dataclass
class Backoff:
    """Retry delay: ``initial * multiplier**(attempt-1)``, capped at ``maximum`` seconds."""

    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 60.0

    def delay(self, attempt: int) -> float:
        return float(min(self.initial * self.multiplier ** max(attempt - 1, 0), self.maximum))


@dataclass(frozen=True)
class NewTask:
    """A checked and planned task to store, with its subtasks (readiness assuming its
    dependencies completed; the engine holds them back otherwise)."""

    task: Task
    subtasks: tuple[Subtask, ...]
    # The limit given for the task's concurrency key (None: keep the key's).
    concurrency_limit: int | None = None
    # Set by the engine: a dependency has not completed yet.
    waits_for_dependencies: bool = False


# -- the transitions, as values handed to the database's batches ------------------------------


@dataclass(frozen=True)
class _Create:
    tenant_id: str
    tasks: tuple[NewTask, ...]
    batch: bool  # errors name the request (requests[3]) when it came in a batch
    max_active: int
    # A create holds its tenant's quota lock until the commit (PostgreSQL): creates in two
    # concurrent batches would wait on each other's commits, so they gather in one at a time.
    exclusive: ClassVar[bool] = True


@dataclass(eq=False)
class _Take:
    taker: TakeFilter
    worker_id: str
    limit: int
    lease_seconds: float
    deadline: float
    future: asyncio.Future[list[Lease]]
    timer: asyncio.TimerHandle | None = None
    # Woken by a create or a keyed task's end: it runs behind them, in their one batch at a
    # time (see _Create), where it sees the work they make runnable.
    exclusive: bool = False
    # An in-process worker whose runs are short: its leases may be handed over before the
    # commit (Changes.early); ``handed_over`` once they were.
    early: bool = False
    handed_over: bool = False
    # A parked taker's periodic look: it reads the queue, whatever the engine knows.
    look: bool = False


@dataclass(frozen=True)
class _Beat:
    subtask_id: str
    lease_id: str
    lease_seconds: float
    progress: float | None
    message: str | None
    tenant_scope: str | None


@dataclass(frozen=True)
class _Output:
    subtask_id: str
    lease_id: str
    delta: str | None
    data: JSON | None
    tenant_scope: str | None


@dataclass(frozen=True)
class _Complete:
    subtask_id: str
    lease_id: str
    result: JSON | None
    usage: ResourceUsage | None
    tenant_scope: str | None
    # The end of a keyed task's lease: it locks its key's row until the commit, as creates
    # do, so it runs in their one batch at a time (see _Create).
    exclusive: bool = False


@dataclass(frozen=True)
class _Fail:
    subtask_id: str
    lease_id: str
    error: str
    error_code: str
    retryable: bool
    tenant_scope: str | None


@dataclass(frozen=True)
class _Release:
    subtask_id: str
    lease_id: str
    reason: str
    tenant_scope: str | None


@dataclass(frozen=True)
class _Cancel:
    task_id: str
    reason: str
    tenant_scope: str | None


@dataclass(frozen=True)
class _Expire:
    """Returns expired leases to the queue; with ``worker_prefix``, first ends the leases of
    those (dead) workers."""

    worker_prefix: str | None = None


@dataclass(frozen=True)
class _Due:
    """Promotes delayed tasks whose time has come."""


@dataclass
class _Attempt:
    """A failed attempt to settle: retried with backoff, or the end of its task."""

    subtask: Subtask
    error: str
    error_code: str
    retryable: bool
    op: HotOp | None = None


@dataclass
class _Batch:
    """One batch's transaction, queue and changes, with what its steps share."""

    q: Queue
    changes: Changes
    now: datetime
    attempts: list[_Attempt] = field(default_factory=list)
    # The batch's takes (its creates may hand new work straight to them, _start_at_once).
    takes: list[HotOp] = field(default_factory=list)
    # Leases its creates gave takes that are answered after the commit, by take (id).
    handed: dict[int, list[Lease]] = field(default_factory=dict)


class TaskEngine:
    """Runs the hot transitions in batches (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        hub: EventHub,
        *,
        clock: Callable[[], datetime] = utcnow,
        backoff: Backoff | None = None,
        turns: Turns | None = None,
    ) -> None:
        self.db = db
        # How new work gets its turn in the queue (fair sharing between tenants, or not).
        self.turns = turns or Turns()
        self.hub = hub
        self.clock = clock
        self.backoff = backoff or Backoff()
        self._parked: list[_Take] = []
        # Times every parked taker was told to look again (a due timer, another replica).
        self._wakes = 0
        # Takers whose take read the queue and found no more work they could run, with the
        # wake count and the loop's time at that commit, and when backed-off work comes due
        # (a heap): see _note_dry. Kept with one writer of transitions only.
        self._dry: dict[TakeFilter, tuple[int, float]] = {}
        self._coming_due: list[datetime] = []
        self._keeps_dry = db.is_sqlite or db.transition_writers == 1
        # Leases of keyed tasks this replica handed out: (kind, model, tenant) by subtask id.
        self._keyed_leases: dict[str, tuple[str, str, str]] = {}
        # Leases handed over before their commit: the batch awaits their reports.
        self._early_reports: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # The one timer that promotes delayed tasks, and when it fires.
        self._due_timer: asyncio.TimerHandle | None = None
        self._due_at: datetime | None = None
        self._steps: list[tuple[type, Callable[[_Batch, list[HotOp]], Awaitable[None]]]] = [
            (_Create, self._creates),
            (_Due, self._dues),
            (_Cancel, self._cancels),
            (_Output, self._outputs),
            (_Beat, self._beats),
            (_Complete, self._completes),
            (_Fail, self._fails),
            (_Release, self._releases),
            (_Expire, self._expiries),
            (_Take, self._takes),
        ]
        db.hot_runner = self._run
        db.on_commit = self._committed
        # Work made runnable outside the engine (chat replies, seed 000's subtasks) and
        # other replicas' notices wake the parked takers too.
        hub.work.add_listener(self.wake_all)

    # -- the public transitions ---------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        tasks: Sequence[NewTask],
        *,
        batch: bool = False,
        max_active: int = 0,
    ) -> list[Task]:
        """Stores tasks (all or none), answering each in request order; a request whose
        ``request_id`` was used before answers the task made the first time.

        Raises:
            InvalidArgument: a dependency is unknown or can no longer complete.
            AlreadyExists: a request id was used for a different request.
            ResourceExhausted: the tenant would pass ``max_active`` unfinished tasks.
        """
        future = self.db.transition(_Create(tenant_id, tuple(tasks), batch, max_active))
        # Idle takers that can run the new work take it in the same transaction (keyed work
        # is admitted in it first, when its key has room).
        self._wake(
            (
                (s.kind, s.model_name, s.tenant_id)
                for item in tasks
                if not item.task.depends_on and delayed_until(item.task) is None
                for s in item.subtasks
                if s.ready or (item.task.concurrency_key and s.stage == 0)
            ),
            behind=True,
        )
        result: list[Task] = await future
        return result

    async def take(
        self,
        worker: WorkerIdentity,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float = 0.0,
        task_id: str | None = None,
        early: bool = False,
    ) -> list[Lease]:
        """Leases up to ``limit`` runnable subtasks, highest priority first, then oldest.

        With ``wait_seconds`` it waits (without polling) until work arrives or time is up.
        ``early`` (an in-process worker whose runs are short): on a quiet database the
        leases may be handed over before their commit, which then waits for the work's
        reports to join it (Changes.early); should that commit fail, the reports
        fail with it and the work runs again.
        """
        if not 0 < lease_seconds <= MAX_LEASE_SECONDS:
            raise InvalidArgument(
                f"lease_seconds must be between 0 and {MAX_LEASE_SECONDS:g}", field="lease_seconds"
            )
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise InvalidArgument(
                f"wait_seconds must be between 0 and {MAX_WAIT_SECONDS:g}", field="wait_seconds"
            )
        loop = asyncio.get_running_loop()
        request = _Take(
            taker=TakeFilter(worker.kinds, worker.models, worker.tenant_ids, task_id),
            worker_id=worker.worker_id,
            limit=max(1, limit),
            lease_seconds=lease_seconds,
            deadline=loop.time() + wait_seconds,
            future=loop.create_future(),
            early=early,
        )
        self._submit_take(request)
        try:
            return await request.future
        finally:
            self._unpark(request)

    async def heartbeat(
        self,
        subtask_id: str,
        lease_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        progress: float | None = None,
        message: str | None = None,
        tenant_scope: str | None = None,
    ) -> HeartbeatAnswer:
        """Extends the lease and records progress. Tells the worker when to stop.

        Raises:
            LeaseLost: the lease expired and the work moved on (stop, do not report).
        """
        if progress is not None and not 0 <= progress <= 100:
            raise InvalidArgument("progress must be between 0 and 100", field="progress")
        seconds = validation.lease_seconds(lease_seconds, MAX_LEASE_SECONDS)
        beat = _Beat(subtask_id, lease_id, seconds, progress, message, tenant_scope)
        answer: HeartbeatAnswer = await self.db.transition(beat)
        return answer

    async def output(
        self,
        subtask_id: str,
        lease_id: str,
        *,
        delta: str | None = None,
        data: JSON | None = None,
        tenant_scope: str | None = None,
    ) -> bool:
        """Streams partial output (e.g. generated tokens) to the task's watchers.

        Returns:
            False when the task was cancelled (the worker should stop).

        Raises:
            LeaseLost: the lease is not held any more.
        """
        kept: bool = await self.db.transition(
            _Output(subtask_id, lease_id, delta, data, tenant_scope)
        )
        return kept

    async def complete(
        self,
        subtask_id: str,
        lease_id: str,
        result: JSON | None,
        *,
        resource_usage: ResourceUsage | None = None,
        tenant_scope: str | None = None,
    ) -> Subtask:
        """Records the result; the task completes when its last subtask does.

        Raises:
            LeaseLost: the lease is not held any more (the result is discarded).
            InvalidArgument: the result holds a NaN or infinite number or a NUL character,
                which no backend stores, or a malformed artifact (the field is named; the
                lease is kept).
        """
        result, artifacts = split_artifacts(result)
        validation.storable_json(result, "result")
        if artifacts:
            # Stored just before the completion, while the lease is held; a lease lost in
            # between leaves them to be replaced by the next attempt's.
            now = self.clock()
            await self.db.write(
                lambda tx: artifact_store.put_artifacts(
                    tx.conn, subtask_id, lease_id, tenant_scope, artifacts, now
                )
            )
        keyed = subtask_id in self._keyed_leases
        future = self.db.transition(
            _Complete(subtask_id, lease_id, result, resource_usage, tenant_scope, keyed)
        )
        self._reported(subtask_id)
        self._behind_keyed_end(subtask_id)
        done: Subtask = await future
        return done

    async def fail(
        self,
        subtask_id: str,
        lease_id: str,
        error: str,
        *,
        error_code: str = "INTERNAL_ERROR",
        retryable: bool = True,
        tenant_scope: str | None = None,
    ) -> Subtask:
        """Records a failed attempt: retried with backoff, or the task fails.

        Raises:
            LeaseLost: the lease is not held any more.
        """
        future = self.db.transition(
            _Fail(subtask_id, lease_id, error[:4000], error_code, retryable, tenant_scope)
        )
        self._reported(subtask_id)
        self._behind_keyed_end(subtask_id)
        failed: Subtask = await future
        return failed

    async def release(
        self,
        subtask_id: str,
        lease_id: str,
        *,
        reason: str = "released",
        tenant_scope: str | None = None,
    ) -> None:
        """Gives a subtask back without counting the attempt (a worker shutting down)."""
        future = self.db.transition(_Release(subtask_id, lease_id, reason, tenant_scope))
        self._reported(subtask_id)
        self._behind_keyed_end(subtask_id)
        await future

    async def subtask(self, subtask_id: str, tenant_scope: str | None) -> Subtask | None:
        """The subtask as stored (None: no such subtask for this scope)."""
        return await self.db.read(
            lambda conn: subtask_store.get_subtask(conn, tenant_scope, subtask_id)
        )

    async def still_held(self, leases: Mapping[str, str]) -> set[str]:
        """Which of ``leases`` (lease id by subtask id) still hold a RUNNING subtask."""

        def read(conn: Connection) -> set[str]:
            held = set()
            for subtask_id, lease_id in leases.items():
                found = subtask_store.get_subtask(conn, None, subtask_id)
                if found and found.status is Status.RUNNING and found.lease_id == lease_id:
                    held.add(subtask_id)
            return held

        return await self.db.read(read)

    async def cancel(self, tenant_scope: str | None, task_id: str, reason: str = "") -> Task:
        """Cancels a pending or running task and tells its running workers to stop;
        cancelling a cancelled task answers it again.

        Raises:
            TaskNotFound: no such task for this caller.
            TaskNotCancellable: the task already completed or failed.
        """
        cancelled: Task = await self.db.transition(_Cancel(task_id, reason, tenant_scope))
        return cancelled

    async def rescue_expired(self) -> int:
        """Returns the work of expired leases to the queue (or fails it); safe on every replica.

        Each subtask is re-checked under its task's lock (still RUNNING under the same,
        expired lease), so a completion that landed meanwhile is never overwritten.
        """
        count: int = await self.db.transition(_Expire())
        if count:
            log.warning("expired leases returned to the queue", count=count)
        return count

    async def promote_due(self) -> int:
        """Promotes the delayed tasks whose time has come (safe on every replica: each task
        is promoted once) and arms the timer for the next one; returns how many."""
        total = 0
        while True:
            promoted, more = await self._promoted(self.db.transition(_Due()))
            total += promoted
            if not more:
                return total

    async def _promoted(
        self, due: Awaitable[tuple[int, bool, datetime | None]]
    ) -> tuple[int, bool]:
        """A due step's answer (promoted, more to promote); arms the timer for the next."""
        promoted, more, next_at = await due
        if next_at is not None and not more:
            self._expect_due(next_at)
        return promoted, more

    def _expect_due(self, at: datetime) -> None:
        """Promotes delayed tasks at ``at``: one timer, for the earliest time known."""
        if self._due_timer is not None and self._due_at is not None and self._due_at <= at:
            return
        if self._due_timer is not None:
            self._due_timer.cancel()
        # A millisecond late: the wall clock read by the batch has then passed ``at``.
        delay = max((at - self.clock()).total_seconds(), 0.0) + 0.001
        self._due_at = at
        self._due_timer = asyncio.get_running_loop().call_later(delay, self._due_fired)

    def _due_fired(self) -> None:
        self._due_timer = None
        self._due_at = None
        try:
            due = self.db.transition(_Due())
        except TaskorchError:  # closing: the next start promotes it
            return
        # The parked takers look again in the same batch, after its due step: a task that
        # comes due is taken in the transaction that promotes it.
        self.wake_all()
        self._background(self._promote_quietly(due))

    async def _promote_quietly(self, due: Awaitable[tuple[int, bool, datetime | None]]) -> None:
        try:
            _, more = await self._promoted(due)
            if more:
                await self.promote_due()
        except Exception as exc:  # the periodic rescue promotes it instead
            log.warning("promoting delayed tasks failed", error=str(exc))

    async def expire_leases_of(self, worker_prefix: str) -> int:
        """Ends the leases of workers known to be dead (this server's previous run)."""
        count: int = await self.db.transition(_Expire(worker_prefix))
        if count:
            log.warning("found work left running by a previous run", count=count)
        return count

    # -- parked takers ------------------------------------------------------------------------

    def stop_notices(self, worker_id: str) -> StopNotices:
        """What tells one worker to stop subtasks it runs (their tasks ended early), from
        now on, until closed (a context manager)."""
        return StopNotices(self.hub.stops.subscribe(worker_id))

    def wake_all(self) -> None:
        """Work of any kind may have become runnable: every parked taker looks again."""
        self._wakes += 1
        parked, self._parked = self._parked, []
        for request in parked:
            self._resubmit(request)

    def _wake(self, ready: Iterable[tuple[str, str, str]], *, behind: bool = False) -> None:
        """Parked takers that can run the work look again (``behind``: in the batch of the
        create or keyed end that makes it runnable)."""
        work = set(ready)
        if not work or not self._parked:
            return
        still = []
        for request in self._parked:
            if any(request.taker.accepts(*w) for w in work):
                request.exclusive = behind
                self._resubmit(request)
            else:
                still.append(request)
        self._parked = still

    def _reported(self, subtask_id: str) -> None:
        """The report of a lease handed over early is queued: its batch may commit (the
        report's done callback forgets it)."""
        report = self._early_reports.get(subtask_id)
        if report is not None and not report.done():
            report.set_result(None)

    def _behind_keyed_end(self, subtask_id: str) -> None:
        """A keyed task's lease is ending, which may admit the next task of its key's line:
        the takers parked for that kind of work join the batch of the ending, behind it
        (takes run last in a batch), so the admitted task is leased in the same commit
        rather than the one after it (a binding key then costs one commit per task, not
        two)."""
        work = self._keyed_leases.pop(subtask_id, None)
        if work is not None:
            self._wake([work], behind=True)

    def _resubmit(self, request: _Take) -> None:
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        if not request.future.done():
            self._submit_take(request)

    def _submit_take(self, request: _Take) -> None:
        try:
            future = self.db.transition(request)
        except TaskorchError as exc:
            if not request.future.done():
                request.future.set_exception(exc)
            return
        future.add_done_callback(lambda done: self._took(request, done))

    def _took(self, request: _Take, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if request.handed_over:
            return  # answered before the commit; a failed one fails the work's reports
        if error is not None:
            if not request.future.done():
                request.future.set_exception(error)
            return
        leases: list[Lease] = done.result()
        if request.future.done():
            # The taker stopped waiting (a worker shutting down): hand the work back.
            for lease in leases:
                self._background(
                    self._give_back(lease.subtask.subtask_id, lease.lease_id, "taker gone")
                )
            return
        loop = asyncio.get_running_loop()
        remaining = request.deadline - loop.time()
        if leases or remaining <= 0:
            request.future.set_result(leases)
            return
        request.exclusive = False
        self._parked.append(request)
        request.timer = loop.call_later(min(remaining, RECHECK_SECONDS), self._recheck, request)

    def _recheck(self, request: _Take) -> None:
        request.timer = None
        if request in self._parked:
            self._parked.remove(request)
            request.look = True
            self._resubmit(request)

    def _unpark(self, request: _Take) -> None:
        if request in self._parked:
            self._parked.remove(request)
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back(self, subtask_id: str, lease_id: str, reason: str) -> None:
        try:
            await self.release(subtask_id, lease_id, reason=reason)
        except Exception as exc:  # its lease expires instead
            log.warning("could not hand back an unwanted lease", error=str(exc))

    # -- after the commit ---------------------------------------------------------------------

    def _committed(self, changes: Changes) -> None:
        if self._keeps_dry:
            self._note_dry(changes)
        self.hub.publish_all(changes.events)
        for subtask, reason in changes.stopped:
            self.hub.stop_workers([subtask], reason)
        self._wake(changes.ready)
        if changes.delayed:
            self._expect_due(min(changes.delayed))
        if changes.due:
            loop = asyncio.get_running_loop()
            now = self.clock()
            for due in set(changes.due):
                loop.call_later(max((due - now).total_seconds(), 0.0), self.wake_all)

    # -- a batch ------------------------------------------------------------------------------

    async def _run(self, q: Queue, changes: Changes, ops: Sequence[HotOp]) -> None:
        groups: dict[type, list[HotOp]] = defaultdict(list)
        for op in ops:
            groups[type(op.value)].append(op)
        batch = _Batch(q, changes, self.clock(), takes=groups.get(_Take, []))
        if changes.held:
            await self._write_held(batch, groups)
        await self._lock(batch, ops)
        for kind, step in self._steps:
            if groups.get(kind):
                await step(batch, groups[kind])
        if batch.attempts:
            await self._settle_attempts(batch)

    async def _lock(self, batch: _Batch, ops: Sequence[HotOp]) -> None:
        """Takes the task rows the batch will change, all at once in one order (PostgreSQL;
        SQLite has one writer): transitions that change a task and its subtasks never wait
        for each other in opposite orders."""
        task_ids: set[str] = set()
        subtask_ids: set[str] = set()
        for op in ops:
            value = op.value
            if isinstance(value, _Cancel):
                task_ids.add(value.task_id)
            elif isinstance(value, _Complete | _Fail | _Release | _Output) or (
                isinstance(value, _Beat) and (value.progress is not None or value.message)
            ):
                subtask_ids.add(value.subtask_id)
        if task_ids or subtask_ids:
            await batch.q.lock_tasks(task_ids, subtask_ids)

    # creates

    async def _creates(self, batch: _Batch, ops: list[HotOp]) -> None:
        q = batch.q
        active: dict[str, int] = {}
        fresh: list[NewTask] = []
        by_request: dict[tuple[str, str], Task] = {}
        wanted: Counter[str] = Counter()  # the most tasks each tenant's creates add
        for op in ops:
            wanted[op.value.tenant_id] += len(op.value.tasks)
        for op in ops:
            create: _Create = op.value
            try:
                op.result, new = await self._plan_create(
                    batch, create, active, by_request, wanted[create.tenant_id]
                )
            except TaskorchError as exc:
                op.error = exc
                continue
            fresh += new
        if not fresh:
            return
        places = None
        if keyed := [n for n in fresh if n.task.concurrency_key]:
            # Every new key gets its limit; the tasks nothing else holds back are admitted
            # (inserted with their first stage ready) or wait in their key's line.
            places = await q.claim_keys(
                [
                    n.task
                    for n in keyed
                    if not n.waits_for_dependencies and delayed_until(n.task) is None
                ],
                [_key_limit(n) for n in keyed],
            )
            admitted = {t.task_id for t in places.admitted}
            fresh = [_admitted(n) if n.task.task_id in admitted else n for n in fresh]
        elif batch.takes:
            fresh = self._start_at_once(batch, fresh)
        if fresh:
            await q.insert_tasks(
                [(n.task, n.subtasks) for n in fresh], batch.changes, self.turns, places
            )
        if places is not None and places.recount:
            await q.admit_keys(places.recount, batch.now, batch.changes)
        delays = [(n.task.task_id, at) for n in fresh if (at := delayed_until(n.task))]
        if delays:
            await q.delay_tasks(delays)
            batch.changes.delayed += [at for _, at in delays]

    def _start_at_once(self, batch: _Batch, fresh: list[NewTask]) -> list[NewTask]:
        """Hands new work straight to the takers of the batch that its creates woke (they
        were parked: they had found nothing else to run): the task is stored started, its
        ready subtasks leased to them, highest priority first, instead of stored PENDING
        and leased by their takes' statements. A take is answered after the commit, with
        what else it then takes; on a quiet batch (Changes.early) an in-process worker's
        take is answered before it, and a task of one subtask handed over that way waits
        for its report (_write_held). Returns the tasks to store now."""
        early = batch.changes.early
        takers = [
            op.value
            for op in batch.takes
            if (op.value.exclusive or self._was_dry(op.value, batch.now))
            and op.value.taker.task_id is None
            and not op.value.future.done()
        ]
        if not takers:
            return fresh
        room = {id(request): request.limit for request in takers}
        handed: dict[int, list[Lease]] = defaultdict(list)
        started: dict[str, NewTask] = {}
        simple = [
            n
            for n in fresh
            if not n.task.depends_on
            and delayed_until(n.task) is None
            and n.task.status is Status.PENDING
        ]
        for item in sorted(simple, key=lambda n: -n.task.priority):
            begun = _start(item, takers, room, handed, batch.now)
            if begun is not None:
                started[begun.task.task_id] = begun
        changes = batch.changes
        before_commit: set[str] = set()  # lease ids answered before the commit
        for request in takers:
            if leases := handed.get(id(request)):
                if early and request.early:
                    self._hand_over(request, leases, changes)
                    before_commit.update(lease.lease_id for lease in leases)
                else:
                    batch.handed[id(request)] = leases
            if room[id(request)] and not any(request.taker.accepts(*w) for w in changes.ready):
                self._found_dry(changes, request)  # it has all the new work it could run
        # A task of one subtask handed over before the commit waits for its worker's report,
        # which joins the batch: its rows are then written once, in their final state.
        stored = []
        for item in fresh:
            begun = started.get(item.task.task_id)
            if (
                begun is not None
                and len(begun.subtasks) == 1
                and begun.subtasks[0].lease_id in before_commit
            ):
                changes.held.append(begun)
            else:
                stored.append(begun or item)
        return stored

    async def _write_held(self, batch: _Batch, groups: dict[type, list[HotOp]]) -> None:
        """Writes the tasks started in this batch's creates that waited for their reports
        (the transitions that joined the batch): one whose worker completed it is stored
        completed, its report answered here; any other is stored started, and the joined
        transitions then run on it as on any task."""
        held: list[NewTask] = batch.changes.held
        batch.changes.held = []
        completes = groups.get(_Complete, [])
        by_subtask = {op.value.subtask_id: op for op in completes}
        now = batch.now
        rows: list[tuple[Task, Sequence[Subtask]]] = []
        for item in held:
            [subtask] = item.subtasks
            op = by_subtask.get(subtask.subtask_id)
            report: _Complete | None = op.value if op is not None else None
            if (
                op is None
                or report is None
                or report.lease_id != subtask.lease_id
                or _visible(subtask, report.tenant_scope) is None
            ):
                rows.append((item.task, item.subtasks))
                continue
            done = changed(
                subtask,
                status=Status.COMPLETED,
                result=report.result,
                progress=100.0,
                lease_id=None,
                lease_expires_at=None,
                updated_at=now,
                completed_at=now,
            )
            task = changed(
                item.task,
                status=Status.COMPLETED,
                result=report.result,
                progress=100.0,
                resource_usage=report.usage or item.task.resource_usage,
                updated_at=now,
                completed_at=now,
                sequence=item.task.sequence + 1,
            )
            rows.append((task, (done,)))
            op.result = done
            completes.remove(op)
        await batch.q.insert_tasks(rows, batch.changes, self.turns)

    async def _plan_create(
        self,
        batch: _Batch,
        create: _Create,
        active: dict[str, int],
        by_request: dict[tuple[str, str], Task],
        wanted: int,
    ) -> tuple[list[Task], list[NewTask]]:
        """Checks one create against the database; its answers and the tasks to insert.
        ``wanted``: the most tasks the batch's creates of the tenant add (its active tasks
        need not be counted exactly when the quota has room for them all)."""
        q = batch.q
        tenant = create.tenant_id
        keys = [n.task.request_id for n in create.tasks if n.task.request_id]
        earlier = await q.find_requests(tenant, keys) if keys else {}
        answers: list[Task] = []
        new: list[NewTask] = []
        for index, item in enumerate(create.tasks):
            request_id = item.task.request_id
            before = None
            if request_id:
                before = earlier.get(request_id) or by_request.get((tenant, request_id))
            try:
                if before is not None:
                    answers.append(_same_request(before, item.task))
                    continue
                item = await self._check_dependencies(q, tenant, item)
            except TaskorchError as exc:
                raise _within_batch(exc, index, create.batch) from None
            answers.append(item.task)
            new.append(item)
        if new and create.max_active > 0:
            if tenant not in active:
                active[tenant] = await q.active_tasks(tenant, create.max_active - wanted)
            if active[tenant] + len(new) > create.max_active:
                more = "another" if len(new) == 1 else f"{len(new)} more"
                raise ResourceExhausted(
                    f"The tenant has {active[tenant]} unfinished tasks, and may have at most "
                    f"{create.max_active} at once: {more} would pass that; "
                    "retry when some have finished",
                    reason="QUOTA_EXCEEDED",
                    retry_after_seconds=QUOTA_RETRY_SECONDS,
                )
            active[tenant] += len(new)
        for item in new:
            if item.task.request_id:
                by_request[(tenant, item.task.request_id)] = item.task
        return answers, new

    async def _check_dependencies(self, q: Queue, tenant: str, item: NewTask) -> NewTask:
        """Raises on unknown or failed dependencies; holds the work back until they complete."""
        depends_on = item.task.depends_on
        if not depends_on:
            return item
        states = await q.dependency_states(tenant, depends_on)
        missing = sorted(set(depends_on) - set(states))
        if missing:
            raise InvalidArgument(
                f"depends_on names unknown tasks: {', '.join(missing)}", field="depends_on"
            )
        for task_id in depends_on:
            if states[task_id] in (Status.FAILED, Status.CANCELLED):
                raise InvalidArgument(
                    f"depends_on task {task_id} is {states[task_id].name}; "
                    "this task could never run",
                    field="depends_on",
                )
        if all(states[t] is Status.COMPLETED for t in depends_on):
            return item
        held = tuple(changed(s, ready=False) for s in item.subtasks)
        return changed(item, subtasks=held, waits_for_dependencies=True)

    # what holds a task back: dependencies, its time, then its concurrency key

    async def _make_runnable(self, batch: _Batch, tasks: Sequence[Task]) -> None:
        """Tasks nothing else holds back: their first stage becomes ready, or, for keyed
        tasks, they line up for their key."""
        q = batch.q
        for task in tasks:
            if not task.concurrency_key:
                await q.mark_ready(
                    first_stage(await q.subtasks_of(task.task_id)), batch.now, batch.changes
                )
        if keyed := [t for t in tasks if t.concurrency_key]:
            await q.line_up(keyed, batch.now, batch.changes)

    async def _leave_keys(self, batch: _Batch, ended: Sequence[Task]) -> None:
        """Ended tasks free their key's place: the next in line is admitted."""
        if keyed := [t.task_id for t in ended if t.concurrency_key]:
            await batch.q.leave_keys(keyed, batch.now, batch.changes)

    # delayed tasks that came due

    async def _dues(self, batch: _Batch, ops: list[HotOp]) -> None:
        q, now = batch.q, batch.now
        due = await q.due_tasks(now, DUE_LIMIT)
        promoted = 0
        progress = []
        tasks = await q.tasks(due, lock=True)
        for task_id in due:
            task = tasks.get(task_id)
            if task is None or task.status is not Status.PENDING:
                continue  # cancelled (or failed with a dependency) while it waited
            if task.depends_on:
                waits_for = await q.tasks(task.depends_on)
                if any(t.status is not Status.COMPLETED for t in waits_for.values()):
                    continue  # the last dependency to complete makes it ready
            await self._make_runnable(batch, [task])
            message = "its run_at time came; queued"
            progress.append(Progress(task_id, message, only_if=(Status.PENDING,)))
            promoted += 1
        if progress:
            await q.progress_tasks(progress, now, batch.changes)
        next_at = await q.next_delayed()
        for op in ops:
            op.result = (promoted, len(due) == DUE_LIMIT, next_at)

    # takes

    async def _takes(self, batch: _Batch, ops: list[HotOp]) -> None:
        taken_all = []
        for op in ops:
            request: _Take = op.value
            handed = batch.handed.pop(id(request), [])
            if (
                request.future.done()
                or len(handed) >= request.limit
                or self._still_dry(batch.changes, request)
                or (handed and self._was_dry(request, batch.now, batch.changes))
            ):
                op.result = handed
                continue
            expires = batch.now + timedelta(seconds=request.lease_seconds)
            taken = await batch.q.take(
                request.taker,
                request.limit - len(handed),
                worker_id=request.worker_id,
                expires_at=expires,
                now=batch.now,
                changes=batch.changes,
            )
            taken_all.append((op, expires, handed, taken))
            if len(handed) + len(taken) < request.limit:
                self._found_dry(batch.changes, request)
                batch.changes.read_dry.add(request.taker)
            keyed = self._keyed_leases
            if len(keyed) > MAX_KEYED_LEASES_KEPT:
                keyed.clear()  # leases lost or ended elsewhere: only a shortcut is forgotten
            for t in taken:
                if t.keyed:
                    s = t.subtask
                    keyed[s.subtask_id] = (s.kind, s.model_name, s.tenant_id)
        wanted = {dep for *_, taken in taken_all for t in taken for dep in t.depends_on}
        results = await batch.q.results_of(sorted(wanted)) if wanted else {}
        for op, expires, handed, taken in taken_all:
            op.result = handed + [
                Lease(
                    subtask=t.subtask,
                    lease_id=t.subtask.lease_id or "",
                    expires_at=expires,
                    dependency_results={dep: results.get(dep) for dep in t.depends_on},
                )
                for t in taken
            ]
            if op.result and op.value.early and batch.changes.early:
                self._hand_over(op.value, op.result, batch.changes)

    def _found_dry(self, changes: Changes, request: _Take) -> None:
        """The taker has every runnable piece of work it could run, as of now in this
        transaction."""
        changes.dry[request.taker] = (len(changes.ready), self._wakes)

    def _still_dry(self, changes: Changes, request: _Take) -> bool:
        """Whether a take would find nothing without looking: its kind of taker found the
        queue dry earlier in this transaction, nothing it could run was made runnable since
        (every transition says so in ``changes.ready``) and no timer or notice woke the
        takers meanwhile (another replica's new work wakes them with its notice)."""
        seen = changes.dry.get(request.taker)
        if seen is None or seen[1] != self._wakes:
            return False
        return not any(request.taker.accepts(*w) for w in changes.ready[seen[0] :])

    def _was_dry(self, request: _Take, now: datetime, changes: Changes | None = None) -> bool:
        """Whether the take may go without reading the queue, as a parked taker's does (its
        new work handed to it in the batch of its create): a take of its taker read the
        queue less than DRY_SECONDS ago and found no more work, and since then no work it
        could run was made runnable (nor, given ``changes``, in this batch so far), no
        backed-off work came due and nothing woke the takers. A parked taker's periodic
        look reads the queue."""
        mark = self._dry.get(request.taker)
        if mark is None or request.look:
            return False
        wakes, at = mark
        if wakes != self._wakes or asyncio.get_running_loop().time() - at >= DRY_SECONDS:
            return False
        if self._coming_due and self._coming_due[0] <= now:
            return False
        return changes is None or not any(request.taker.accepts(*w) for w in changes.ready)

    def _note_dry(self, changes: Changes) -> None:
        """After a commit, which takers had every piece of work they could run. Under a
        steady load a worker's take rides in nearly every batch: when its last take found
        no more work, its new work is stored started in its create's batch and leased to
        the take there, without the take's statements (a task is then written once started
        and never leased by a statement). What this trusts, it checks: the finding was a
        take's statement in a committed batch (takes run last in a batch), less than
        DRY_SECONDS old (a take reads the queue at least that often, so nothing waits
        longer behind new work); work made runnable and not handed over (``changes.ready``)
        ends it for the takers that could run it, as does a wake (a due timer, another
        replica's notice) or backed-off work coming due. One writer of transitions only:
        another's commit could make work runnable between a take's statement and the
        commit that notes it."""
        dry, dues = self._dry, self._coming_due
        for due in changes.due:
            heapq.heappush(dues, due)
        now = self.clock()
        if dues and dues[0] <= now:
            # Backed-off work came due (perhaps in this very batch, after its takes).
            while dues and dues[0] <= now:
                heapq.heappop(dues)
            dry.clear()
            return
        if dry and changes.ready:
            for taker in [t for t in dry if any(t.accepts(*w) for w in changes.ready)]:
                del dry[taker]
        at = asyncio.get_running_loop().time()
        for taker in changes.read_dry:
            seen, wakes = changes.dry[taker]
            if wakes == self._wakes and not any(taker.accepts(*w) for w in changes.ready[seen:]):
                dry[taker] = (wakes, at)

    def _hand_over(self, request: _Take, leases: list[Lease], changes: Changes) -> None:
        """Answers a take before its commit; the batch awaits the leases' reports."""
        request.handed_over = True
        loop = asyncio.get_running_loop()
        for lease in leases:
            report: asyncio.Future[None] = loop.create_future()
            self._early_reports[lease.subtask.subtask_id] = report
            report.add_done_callback(partial(self._forget_report, lease.subtask.subtask_id))
            changes.reports.append(report)
        request.future.set_result(leases)

    def _forget_report(self, subtask_id: str, report: asyncio.Future[None]) -> None:
        # Reported, or the batch stopped waiting (a late report goes in the next batch).
        if self._early_reports.get(subtask_id) is report:
            del self._early_reports[subtask_id]

    # while running

    async def _outputs(self, batch: _Batch, ops: list[HotOp]) -> None:
        found = await batch.q.subtasks([op.value.subtask_id for op in ops])
        valid: list[tuple[HotOp, Subtask]] = []
        for op in ops:
            out: _Output = op.value
            subtask = _visible(found.get(out.subtask_id), out.tenant_scope)
            if subtask is None:
                op.error = SubtaskNotFound(out.subtask_id)
            elif subtask.status is Status.CANCELLED:
                op.result = False
            elif subtask.status is not Status.RUNNING or subtask.lease_id != out.lease_id:
                op.error = LeaseLost(out.subtask_id, _why_lost(subtask, out.lease_id))
            else:
                valid.append((op, subtask))
        if not valid:
            return
        had = await batch.q.output_events(
            [(s.task_id, op.value.delta, op.value.data) for op, s in valid],
            batch.now,
            batch.changes,
        )
        for op, subtask in valid:
            op.result = subtask.task_id in had

    async def _beats(self, batch: _Batch, ops: list[HotOp]) -> None:
        q, now = batch.q, batch.now
        extended = await q.extend_leases(
            [
                (
                    b.subtask_id,
                    b.lease_id,
                    now + timedelta(seconds=b.lease_seconds),
                    b.progress,
                    b.tenant_scope,
                )
                for b in (op.value for op in ops)
            ],
            now,
        )
        held = {s.subtask_id: s for s in extended}
        lost = [op for op in ops if op.value.subtask_id not in held]
        current = await q.subtasks([op.value.subtask_id for op in lost]) if lost else {}
        progress: list[Progress] = []
        for op in ops:
            beat: _Beat = op.value
            subtask = held.get(beat.subtask_id)
            if subtask is None:
                op.result, op.error = self._stop_answer(
                    current, beat.subtask_id, beat.lease_id, beat.tenant_scope
                )
                continue
            if _timed_out(subtask, now):
                error = f"attempt timed out after {subtask.timeout_seconds:g} s"
                batch.attempts.append(_Attempt(subtask, error, "TIMEOUT", retryable=True))
                op.result = HeartbeatAnswer(None, cancelled=True, reason="timed out")
                continue
            if beat.progress is not None or beat.message:
                progress.append(Progress(subtask.task_id, beat.message, from_subtasks=True))
            op.result = HeartbeatAnswer(subtask.lease_expires_at)
        if progress:
            await q.progress_tasks(progress, now, batch.changes)

    @staticmethod
    def _stop_answer(
        current: dict[str, Subtask], subtask_id: str, lease_id: str, tenant_scope: str | None
    ) -> tuple[HeartbeatAnswer | None, TaskorchError | None]:
        subtask = _visible(current.get(subtask_id), tenant_scope)
        if subtask is None:
            return None, SubtaskNotFound(subtask_id)
        if subtask.status is Status.CANCELLED:
            return HeartbeatAnswer(None, cancelled=True, reason="cancelled"), None
        return None, LeaseLost(subtask_id, _why_lost(subtask, lease_id))

    # finish

    async def _completes(self, batch: _Batch, ops: list[HotOp]) -> None:
        q, now = batch.q, batch.now
        items = [
            (
                c.subtask_id,
                c.lease_id,
                c.result,
                c.tenant_scope,
                c.usage.to_json() if c.usage is not None else None,
            )
            for c in (op.value for op in ops)
        ]
        done, finished = await q.complete(items, now, batch.changes)
        by_id = {d.subtask.subtask_id: d for d in done}
        lost = [op for op in ops if op.value.subtask_id not in by_id]
        if lost:
            current = await q.subtasks([op.value.subtask_id for op in lost])
            for op in lost:
                c: _Complete = op.value
                subtask = _visible(current.get(c.subtask_id), c.tenant_scope)
                op.error = (
                    SubtaskNotFound(c.subtask_id)
                    if subtask is None
                    else LeaseLost(c.subtask_id, _why_lost(subtask, c.lease_id))
                )
        ends: list[TaskEnd] = []
        steps: dict[str, tuple[Subtask, JSON | None]] = {}
        for op, (subtask_id, *_, usage) in zip(ops, items, strict=True):
            d = by_id.get(subtask_id)
            if d is None:
                continue
            op.result = d.subtask
            if d.siblings:  # one of several: the task goes on or ends below
                steps.setdefault(d.subtask.task_id, (d.subtask, usage))
        for subtask, usage in steps.values():
            end = await self._after_step(batch, subtask, usage)
            if end is not None:
                ends.append(end)
        if ends:
            finished += await q.complete_tasks(ends, now, batch.changes)
        if finished:
            await self._leave_keys(batch, finished)
            await self._release_dependents(batch, [t.task_id for t in finished])

    async def _after_step(
        self, batch: _Batch, subtask: Subtask, usage: JSON | None
    ) -> TaskEnd | None:
        """A subtask of a task with several completed (once per task and batch): the task
        goes on with the rest of its stage, or its next stage, or ends."""
        q, now = batch.q, batch.now
        siblings = await q.subtasks_of(subtask.task_id)
        if any(s.stage == subtask.stage and s.status is not Status.COMPLETED for s in siblings):
            # its stage is still running
            await q.progress_tasks(
                [Progress(subtask.task_id, from_subtasks=True)], now, batch.changes
            )
            return None
        following = first_stage(siblings)
        if following:
            # Templates: a step may use earlier steps' outputs ({{steps.NAME.output.FIELD}});
            # they are known now, so fill them into the inputs of the stage about to run.
            outputs = {s.name: s.result for s in siblings if s.status is Status.COMPLETED}
            inputs: dict[str, JSON] = {}
            for step in following:
                if step.input is not None and placeholders.has_step_outputs(step.input):
                    try:
                        inputs[step.subtask_id] = placeholders.resolve_step_outputs(
                            step.input, outputs
                        )
                    except placeholders.StepOutputMissing as exc:
                        await self._end_task(
                            batch,
                            subtask.task_id,
                            f"step '{step.name}': {exc}",
                            STEP_OUTPUT_MISSING,
                            "another subtask of the task failed",
                        )
                        return None
            await q.mark_ready(following, now, batch.changes, inputs)
            stages = len({s.stage for s in siblings})
            message = f"stage {subtask.stage + 1} of {stages} done"
            await q.progress_tasks(
                [Progress(subtask.task_id, message, from_subtasks=True)], now, batch.changes
            )
            return None
        if any(s.status is not Status.COMPLETED for s in siblings):
            return None
        return TaskEnd(subtask.task_id, _task_result(siblings), usage)

    async def _release_dependents(self, batch: _Batch, task_ids: Sequence[str]) -> None:
        """After tasks completed: make ready the work of dependents now free to run."""
        q = batch.q
        dependents = await q.dependents_of(task_ids)
        waiting = sorted({d for ids in dependents.values() for d in ids})
        if not waiting:
            return
        tasks = await q.tasks(waiting, lock=True)
        progress = []
        for dependent in (tasks[t] for t in waiting if t in tasks):
            if dependent.status is not Status.PENDING:
                continue
            if dependent.run_at is not None and dependent.run_at > batch.now:
                # Still waiting for its time: listed (again) for the due step to promote.
                await q.delay_tasks([(dependent.task_id, dependent.run_at)])
                batch.changes.delayed.append(dependent.run_at)
                continue
            waits_for = await q.tasks(dependent.depends_on)
            if any(t.status is not Status.COMPLETED for t in waits_for.values()):
                continue
            await self._make_runnable(batch, [dependent])
            message = "dependencies completed; queued"
            progress.append(Progress(dependent.task_id, message, only_if=(Status.PENDING,)))
        if progress:
            await q.progress_tasks(progress, batch.now, batch.changes)

    async def _fails(self, batch: _Batch, ops: list[HotOp]) -> None:
        current = await batch.q.subtasks([op.value.subtask_id for op in ops])
        for op in ops:
            f: _Fail = op.value
            subtask = _visible(current.get(f.subtask_id), f.tenant_scope)
            if subtask is None:
                op.error = SubtaskNotFound(f.subtask_id)
            elif subtask.status is not Status.RUNNING or subtask.lease_id != f.lease_id:
                op.error = LeaseLost(f.subtask_id, _why_lost(subtask, f.lease_id))
            else:
                batch.attempts.append(_Attempt(subtask, f.error, f.error_code, f.retryable, op))

    async def _settle_attempts(self, batch: _Batch) -> None:
        """Failed attempts (reported, timed out or expired): retried with backoff, or their
        task fails with the last error."""
        q, now = batch.q, batch.now
        attempts, batch.attempts = batch.attempts, []
        retries: list[Retry] = []
        progress: list[Progress] = []
        finals: list[_Attempt] = []
        for a in attempts:
            s = a.subtask
            if a.retryable and s.attempt < s.max_attempts:
                delay = self.backoff.delay(s.attempt)
                due = now + timedelta(seconds=delay)
                retries.append(Retry(s.subtask_id, s.lease_id or "", a.error, a.error_code, due))
                batch.changes.due.append(due)
                message = (
                    f"attempt {s.attempt} of {s.max_attempts} failed: {a.error}; "
                    f"retrying in {delay:g} s"
                )
                progress.append(
                    Progress(s.task_id, message, error=a.error, error_code=a.error_code)
                )
            else:
                finals.append(a)
        updated: dict[str, Subtask] = {}
        if retries:
            updated |= {s.subtask_id: s for s in await q.retry_subtasks(retries, now)}
            await q.progress_tasks(progress, now, batch.changes)
        if finals:
            failures = [
                (a.subtask.subtask_id, a.subtask.lease_id or "", a.error, a.error_code)
                for a in finals
            ]
            updated |= {s.subtask_id: s for s in await q.fail_subtasks(failures, now)}
            for a in finals:
                s = a.subtask
                attempts_made = f" after {s.attempt} attempts" if s.attempt > 1 else ""
                await self._end_task(
                    batch,
                    s.task_id,
                    a.error,
                    a.error_code,
                    "another subtask of the task failed",
                    message=f"failed{attempts_made}: {a.error}",
                )
        for a in attempts:
            if a.op is not None:
                a.op.result = updated.get(a.subtask.subtask_id, a.subtask)

    async def _end_task(
        self,
        batch: _Batch,
        task_id: str,
        error: str,
        error_code: str,
        stop_reason: str,
        *,
        message: str | None = None,
    ) -> None:
        """Fails a task: its other work is cancelled (workers told to stop), its dependents
        fail too."""
        q = batch.q
        await q.end_subtasks(task_id, batch.now, batch.changes, stop_reason)
        end = TaskEnd(
            task_id, error=error, error_code=error_code, message=message or f"failed: {error}"
        )
        if failed := await q.fail_tasks([end], batch.now, batch.changes):
            await self._leave_keys(batch, failed)
            await self._fail_dependents(batch, task_id, Status.FAILED)

    async def _fail_dependents(self, batch: _Batch, task_id: str, status: Status) -> None:
        """After ``task_id`` failed or was cancelled: fail every task that waits for it, and
        theirs, transitively."""
        q = batch.q
        queue = [(task_id, status)]
        while queue:
            failed_id, failed_status = queue.pop(0)
            dependents = (await q.dependents_of([failed_id])).get(failed_id, [])
            if not dependents:
                continue
            await q.tasks(dependents, lock=True)
            for dependent_id in sorted(dependents):
                error = f"dependency {failed_id} {failed_status.name}; this task cannot run"
                await q.end_subtasks(dependent_id, batch.now, batch.changes, error)
                end = TaskEnd(
                    dependent_id, error=error, error_code=DEPENDENCY_FAILED, message=error
                )
                if failed := await q.fail_tasks([end], batch.now, batch.changes):
                    await self._leave_keys(batch, failed)
                    queue.append((dependent_id, Status.FAILED))

    async def _releases(self, batch: _Batch, ops: list[HotOp]) -> None:
        q = batch.q
        current = await q.subtasks([op.value.subtask_id for op in ops])
        mine = []
        for op in ops:
            r: _Release = op.value
            found = current.get(r.subtask_id)
            if found is not None and _visible(found, r.tenant_scope) is None:
                op.error = SubtaskNotFound(r.subtask_id)
            else:
                mine.append(op)
        released = await q.release_subtasks(
            [(op.value.subtask_id, op.value.lease_id) for op in mine], batch.now, batch.changes
        )
        reasons = {op.value.subtask_id: op.value.reason for op in mine}
        progress = [Progress(s.task_id, f"re-queued: {reasons[s.subtask_id]}") for s in released]
        if progress:
            await q.progress_tasks(progress, batch.now, batch.changes)

    async def _cancels(self, batch: _Batch, ops: list[HotOp]) -> None:
        q, now = batch.q, batch.now
        for op in ops:
            c: _Cancel = op.value
            task = (await q.tasks([c.task_id], lock=True)).get(c.task_id)
            if task is None or (c.tenant_scope is not None and task.tenant_id != c.tenant_scope):
                op.error = TaskNotFound(c.task_id)
                continue
            if task.status is Status.CANCELLED:
                op.result = task
                continue
            if task.status in TERMINAL_STATUSES:
                op.error = TaskNotCancellable(task.task_id, task.status.name)
                continue
            await q.end_subtasks(c.task_id, now, batch.changes, "task cancelled")
            await self._fail_dependents(batch, c.task_id, Status.CANCELLED)
            op.result = await q.cancel_task(c.task_id, c.reason, now, batch.changes)
            if op.result is not None:
                await self._leave_keys(batch, [op.result])

    async def _expiries(self, batch: _Batch, ops: list[HotOp]) -> None:
        q, now = batch.q, batch.now
        prefixes = {op.value.worker_prefix for op in ops if op.value.worker_prefix}
        dead = await q.leases_of_workers(sorted(prefixes)) if prefixes else []
        expired = await q.expired_leases(now, EXPIRE_LIMIT)
        candidates = {s.subtask_id: s for s in [*dead, *expired]}
        if not candidates:
            for op in ops:
                op.result = 0
            return
        await q.lock_tasks({s.task_id for s in candidates.values()}, set())
        current = await q.subtasks(list(candidates))
        count = 0
        for subtask_id, seen in candidates.items():
            s = current.get(subtask_id)
            if s is None or s.status is not Status.RUNNING or s.lease_id != seen.lease_id:
                continue
            if subtask_id not in {d.subtask_id for d in dead} and (
                s.lease_expires_at is None or s.lease_expires_at >= now
            ):
                continue
            error = f"lease expired: worker {s.worker_id} stopped heartbeating"
            batch.attempts.append(_Attempt(s, error, "LEASE_EXPIRED", retryable=True))
            count += 1
        for op in ops:
            op.result = count


# -- helpers ------------------------------------------------------------------------------------


def _start(
    item: NewTask,
    takers: Sequence[_Take],
    room: dict[int, int],
    handed: dict[int, list[Lease]],
    now: datetime,
) -> NewTask | None:
    """The new task started: its ready subtasks leased to the first takers with room that
    can run them (their leases added to ``handed``); None when none could take any."""
    subtasks = list(item.subtasks)
    first: Subtask | None = None
    for i, s in enumerate(subtasks):
        if not s.ready:
            continue
        request = next(
            (
                r
                for r in takers
                if room[id(r)] and r.taker.accepts(s.kind, s.model_name, s.tenant_id)
            ),
            None,
        )
        if request is None:
            continue
        room[id(request)] -= 1
        expires = now + timedelta(seconds=request.lease_seconds)
        subtasks[i] = leased = changed(
            s,
            status=Status.RUNNING,
            attempt=s.attempt + 1,
            lease_id=new_id(),
            lease_expires_at=expires,
            worker_id=request.worker_id,
            started_at=now,
            updated_at=now,
        )
        handed[id(request)].append(
            Lease(leased, leased.lease_id or "", expires, dependency_results={})
        )
        first = first or leased
    if first is None:
        return None
    task = changed(
        item.task,
        status=Status.RUNNING,
        started_at=now,
        updated_at=now,
        worker_id=first.worker_id,
        attempt=first.attempt,
        sequence=item.task.sequence + 1,
        progress_message=None,
    )
    return changed(item, task=task, subtasks=tuple(subtasks))


def _key_limit(item: NewTask) -> tuple[str, str, int | None]:
    """(scope, key, limit) of a new keyed task: the limit it gives its key (None: keep)."""
    return (*key_of(item.task), item.concurrency_limit)


def _admitted(item: NewTask) -> NewTask:
    """A new keyed task its key admits at once: its first stage is inserted ready."""
    first = {s.subtask_id for s in first_stage(list(item.subtasks))}
    return changed(
        item, subtasks=tuple(changed(s, ready=s.subtask_id in first) for s in item.subtasks)
    )


def delayed_until(task: Task) -> datetime | None:
    """A new task's run_at when it was created to wait for it (its work held back)."""
    if task.run_at is not None and task.run_at > task.created_at:
        return task.run_at
    return None


def first_stage(subtasks: list[Subtask]) -> list[Subtask]:
    """The pending subtasks of the lowest stage that has not completed."""
    pending = [s for s in subtasks if s.status is Status.PENDING]
    if not pending:
        return []
    stage = min(s.stage for s in pending)
    if any(s.stage < stage and s.status is not Status.COMPLETED for s in subtasks):
        return []
    return [s for s in pending if s.stage == stage]


def _visible(subtask: Subtask | None, tenant_scope: str | None) -> Subtask | None:
    """A lease id is a secret of its holder; should one reach a credential of another
    tenant, its subtask still does not exist for that tenant."""
    if subtask is None or (tenant_scope is not None and subtask.tenant_id != tenant_scope):
        return None
    return subtask


def _timed_out(subtask: Subtask, now: datetime) -> bool:
    if not subtask.timeout_seconds or subtask.started_at is None:
        return False
    return now - subtask.started_at > timedelta(seconds=subtask.timeout_seconds)


def _why_lost(current: Subtask, lease_id: str) -> str:
    if current.status is Status.RUNNING and current.lease_id != lease_id:
        return f"it was leased again (attempt {current.attempt}, worker {current.worker_id})"
    if current.status is Status.PENDING:
        return "the lease expired and the subtask went back to the queue"
    return f"the subtask is {current.status.name}"


def _task_result(subtasks: Iterable[Subtask]) -> JSON | None:
    """A one-subtask task's result is its subtask's. With several: the last stage's result
    when that stage has one subtask, with every subtask's result under ``steps`` (by name,
    else id)."""
    ordered = sorted(subtasks, key=lambda s: (s.stage, s.created_at))
    if len(ordered) == 1:
        return ordered[0].result
    last_stage = [s for s in ordered if s.stage == ordered[-1].stage]
    result = dict(last_stage[0].result or {}) if len(last_stage) == 1 else {}
    result["steps"] = {s.name or s.subtask_id: s.result for s in ordered}
    return result


def _same_request(earlier: Task, task: Task) -> Task:
    """The earlier task of an idempotent retry; a different request with the key is refused."""
    fields = ("task_type", "model_name", "template", "text", "input_data", "parameters")
    if any(getattr(earlier, f) != getattr(task, f) for f in fields):
        raise AlreadyExists(
            f"request_id {task.request_id!r} was already used for a different request "
            f"(task {earlier.task_id})",
            reason="REQUEST_ID_REUSED",
        )
    return earlier


def _within_batch(exc: TaskorchError, index: int, batch: bool) -> TaskorchError:
    """The error of one request, naming the request when it came in a batch."""
    return within(exc, f"requests[{index}]") if batch else exc


class StopNotices:
    """One worker's stop notices as they come (see :meth:`TaskEngine.stop_notices`)."""

    def __init__(self, subscription: Subscription[StopNotice]) -> None:
        self._subscription = subscription

    def __enter__(self) -> StopNotices:
        return self

    def __exit__(self, *exc: object) -> None:
        self._subscription.close()

    async def wait(self, timeout: float | None = None) -> bool:
        """Waits, consuming nothing, until a notice is pending; False on timeout."""
        return await self._subscription.wait(timeout)

    async def next(self, timeout: float | None = None) -> StopNotice | None:
        """The next notice (None at ``timeout``). Notices lost to a full buffer are not
        told: the worker's heartbeats answer that its task ended, as a backstop."""
        while True:
            try:
                return await self._subscription.get(timeout)
            except SubscriptionLagged:
                continue

    async def pending(self) -> AsyncIterator[StopNotice]:
        """The notices that came, without waiting."""
        while (notice := await self.next(0)) is not None:
            yield notice
