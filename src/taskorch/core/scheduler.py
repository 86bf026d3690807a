"""Work distribution: workers take subtasks under leases, report on them and complete them.

A lease is a worker's exclusive claim on one subtask until its deadline; heartbeats extend
it. Only the current holder may report or complete (a stale worker is refused with
LEASE_LOST, so a late result never overwrites). An expired lease puts the subtask back with
exponential backoff; past ``max_attempts`` the task fails with the last error. The task's
status follows its subtasks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from taskorch.core import templates
from taskorch.core.dependencies import fail_dependents, first_stage, release_dependents
from taskorch.core.errors import InvalidArgument, LeaseLost, SubtaskNotFound
from taskorch.core.hub import EventHub
from taskorch.core.lifecycle import record
from taskorch.core.model import JSON, EventType, Lease, ResourceUsage, Status, Subtask, Task
from taskorch.store import subtasks as subtask_store
from taskorch.store import tasks as task_store
from taskorch.store.database import Database, Transaction
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

DEFAULT_LEASE_SECONDS = 30.0
MAX_LEASE_SECONDS = 3600.0
MAX_WAIT_SECONDS = 60.0
# A take that found only work whose task another writer was changing tries again this often.
BUSY_RETRIES = 5
BUSY_PAUSE_SECONDS = 0.005


@dataclass(frozen=True)
class WorkerIdentity:
    """Who takes work, and which work it can run."""

    worker_id: str
    kinds: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tenant_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class HeartbeatAnswer:
    lease_expires_at: datetime | None
    cancelled: bool = False
    reason: str = ""


@dataclass
class Backoff:
    """Retry delay: ``initial * multiplier**(attempt-1)``, capped at ``maximum`` seconds."""

    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 60.0

    def delay(self, attempt: int) -> float:
        return float(min(self.initial * self.multiplier ** max(attempt - 1, 0), self.maximum))


@dataclass
class Scheduler:
    db: Database
    hub: EventHub
    clock: Callable[[], datetime] = utcnow
    backoff: Backoff = field(default_factory=Backoff)

    # -- take ----------------------------------------------------------------------------------

    async def take(
        self,
        worker: WorkerIdentity,
        *,
        limit: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float = 0.0,
        task_id: str | None = None,
    ) -> list[Lease]:
        """Leases up to ``limit`` runnable subtasks, highest priority first, then oldest.

        With ``wait_seconds`` it waits (without polling) until work arrives or time is up.
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
        deadline = loop.time() + wait_seconds
        busy_rounds = 0
        while True:
            ticket = self.hub.work.ticket()
            leases, busy = await self.db.write(
                lambda tx: self._take(tx, worker, limit, lease_seconds, task_id)
            )
            if leases:
                return leases
            if busy and busy_rounds < BUSY_RETRIES:
                # Work was there but its task was being changed: that takes milliseconds.
                busy_rounds += 1
                await asyncio.sleep(BUSY_PAUSE_SECONDS * busy_rounds)
                continue
            busy_rounds = 0
            remaining = deadline - loop.time()
            if remaining <= 0:
                return leases
            # Woken by new work; re-checked at least every second for retries coming due.
            await self.hub.work.wait(min(remaining, 1.0), ticket)

    def _take(
        self,
        tx: Transaction,
        worker: WorkerIdentity,
        limit: int,
        lease_seconds: float,
        task_id: str | None,
    ) -> tuple[list[Lease], bool]:
        """The leases granted, and whether runnable work was skipped because its task's
        row was locked by another writer."""
        now = self.clock()
        candidates = subtask_store.runnable_candidates(
            tx.conn,
            kinds=worker.kinds,
            models=worker.models,
            tenant_ids=worker.tenant_ids,
            task_id=task_id,
            now=now,
            limit=limit,
            skip_locked=not self.db.is_sqlite,
        )
        leases = []
        busy = False
        expires = now + timedelta(seconds=lease_seconds)
        for subtask_id, task_id in candidates:
            if not self.db.is_sqlite and not task_store.try_lock_task(tx.conn, task_id):
                busy = True  # being changed (cancelled, say): the next round sees the outcome
                continue
            lease_id = str(uuid.uuid4())
            subtask = subtask_store.lease(
                tx.conn, subtask_id, lease_id, expires, worker.worker_id, now
            )
            if subtask is None:
                continue
            task = self._task_started(tx, subtask, worker.worker_id, now)
            results = {
                t.task_id: t.result for t in task_store.get_tasks(tx.conn, None, task.depends_on)
            }
            leases.append(
                Lease(
                    subtask=subtask,
                    task=task,
                    lease_id=lease_id,
                    expires_at=expires,
                    dependency_results=results,
                )
            )
        return leases, busy

    def _task_started(
        self, tx: Transaction, subtask: Subtask, worker_id: str, now: datetime
    ) -> Task:
        values: dict[str, Any] = {"worker_id": worker_id, "attempt": subtask.attempt}
        message = f"attempt {subtask.attempt} started on {worker_id}"
        # Marks where a run of the work starts (chat replies start their streamed text over).
        data = {"attempt": subtask.attempt, "worker_id": worker_id}
        started = record(
            tx,
            self.hub,
            subtask.task_id,
            {**values, "status": int(Status.RUNNING), "started_at": now, "progress_message": None},
            EventType.STATUS_CHANGED,
            now=now,
            only_if_status=(Status.PENDING,),
            message=message,
            data=data,
        )
        if started is not None:
            return started[0]
        # Already running (a retry or a later step): note the attempt without a status event.
        progressed = record(
            tx,
            self.hub,
            subtask.task_id,
            {**values, "progress_message": message},
            EventType.PROGRESS,
            now=now,
            message=message,
            data=data,
        )
        assert progressed is not None
        return progressed[0]

    # -- while running -------------------------------------------------------------------------

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

        def beat(tx: Transaction) -> HeartbeatAnswer:
            now = self.clock()
            expires = now + timedelta(seconds=min(lease_seconds, MAX_LEASE_SECONDS))
            values: dict[str, Any] = {"lease_expires_at": expires, "updated_at": now}
            if progress is not None:
                values["progress"] = progress
            self._lock_task_of(tx, subtask_id)
            subtask = subtask_store.update_subtask(
                tx.conn, subtask_id, values, only_if_status=(Status.RUNNING,), lease_id=lease_id
            )
            if subtask is None:
                return self._stop_answer(tx, subtask_id, lease_id, tenant_scope)
            _check_tenant(subtask, tenant_scope)
            if _timed_out(subtask, now):
                self._fail(
                    tx,
                    subtask,
                    f"attempt timed out after {subtask.timeout_seconds:g} s",
                    "TIMEOUT",
                    retryable=True,
                    now=now,
                )
                return HeartbeatAnswer(None, cancelled=True, reason="timed out")
            if progress is not None or message:
                self._task_progress(tx, subtask, message, now)
            return HeartbeatAnswer(expires)

        return await self.db.write(beat)

    def _stop_answer(
        self, tx: Transaction, subtask_id: str, lease_id: str, tenant_scope: str | None
    ) -> HeartbeatAnswer:
        current = subtask_store.get_subtask(tx.conn, tenant_scope, subtask_id)
        if current is None:
            raise SubtaskNotFound(subtask_id)
        if current.status is Status.CANCELLED:
            return HeartbeatAnswer(None, cancelled=True, reason="cancelled")
        raise LeaseLost(subtask_id, _why_lost(current, lease_id))

    def _task_progress(
        self, tx: Transaction, subtask: Subtask, message: str | None, now: datetime
    ) -> None:
        siblings = subtask_store.subtasks_of(tx.conn, subtask.task_id)
        progress = sum(100.0 if s.status is Status.COMPLETED else s.progress for s in siblings)
        progress /= max(len(siblings), 1)
        values: dict[str, Any] = {"progress": progress}
        if message:
            values["progress_message"] = message
        record(
            tx,
            self.hub,
            subtask.task_id,
            values,
            EventType.PROGRESS,
            now=now,
            only_if_status=(Status.RUNNING,),
            progress=progress,
            message=message,
        )

    async def report_output(
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

        def output(tx: Transaction) -> bool:
            now = self.clock()
            subtask = subtask_store.get_subtask(tx.conn, tenant_scope, subtask_id)
            if subtask is None:
                raise SubtaskNotFound(subtask_id)
            if subtask.status is Status.CANCELLED:
                return False
            if subtask.status is not Status.RUNNING or subtask.lease_id != lease_id:
                raise LeaseLost(subtask_id, _why_lost(subtask, lease_id))
            recorded = record(
                tx,
                self.hub,
                subtask.task_id,
                {},
                EventType.OUTPUT,
                now=now,
                only_if_status=(Status.RUNNING,),
                output_delta=delta,
                data=data,
            )
            return recorded is not None

        return await self.db.write(output)

    # -- finish --------------------------------------------------------------------------------

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
        """

        def finish(tx: Transaction) -> Subtask:
            now = self.clock()
            self._lock_task_of(tx, subtask_id)
            subtask = subtask_store.update_subtask(
                tx.conn,
                subtask_id,
                {
                    "status": int(Status.COMPLETED),
                    "result": result,
                    "progress": 100.0,
                    "lease_id": None,
                    "lease_expires_at": None,
                    "updated_at": now,
                    "completed_at": now,
                },
                only_if_status=(Status.RUNNING,),
                lease_id=lease_id,
            )
            if subtask is None:
                current = subtask_store.get_subtask(tx.conn, tenant_scope, subtask_id)
                if current is None:
                    raise SubtaskNotFound(subtask_id)
                raise LeaseLost(subtask_id, _why_lost(current, lease_id))
            _check_tenant(subtask, tenant_scope)
            self._after_step(tx, subtask, resource_usage, now)
            return subtask

        return await self.db.write(finish)

    def _after_step(
        self, tx: Transaction, subtask: Subtask, usage: ResourceUsage | None, now: datetime
    ) -> None:
        siblings = subtask_store.subtasks_of(tx.conn, subtask.task_id)
        if any(s.stage == subtask.stage and s.status is not Status.COMPLETED for s in siblings):
            self._task_progress(tx, subtask, None, now)  # its stage is still running
            return
        following = first_stage(siblings)
        if following:
            # Templates: a step may use earlier steps' outputs ({{steps.NAME.output.FIELD}});
            # they are known now, so fill them into the inputs of the stage about to run.
            outputs = {s.name: s.result for s in siblings if s.status is Status.COMPLETED}
            for step in following:
                if step.input is not None and templates.has_step_outputs(step.input):
                    try:
                        resolved = templates.resolve_step_outputs(step.input, outputs)
                    except templates.StepOutputMissing as exc:
                        self._fail_unstartable_step(tx, step, f"step '{step.name}': {exc}", now)
                        return
                    subtask_store.update_subtask(tx.conn, step.subtask_id, {"input": resolved})
            subtask_store.mark_ready(tx.conn, (s.subtask_id for s in following), now)
            tx.after_commit(self.hub.work.notify)
            stages = len({s.stage for s in siblings})
            done = f"stage {subtask.stage + 1} of {stages} done"
            self._task_progress(tx, subtask, done, now)
            return
        if any(s.status is not Status.COMPLETED for s in siblings):
            return
        values: dict[str, Any] = {
            "status": int(Status.COMPLETED),
            "result": _task_result(siblings),
            "progress": 100.0,
            "progress_message": None,
            "completed_at": now,
        }
        if usage is not None:
            values["resource_usage"] = usage.to_json()
        completed = record(
            tx,
            self.hub,
            subtask.task_id,
            values,
            EventType.STATUS_CHANGED,
            now=now,
            only_if_status=(Status.PENDING, Status.RUNNING),
            progress=100.0,
            message="completed",
        )
        if completed is not None:
            release_dependents(tx, self.hub, subtask.task_id, now)

    def _fail_unstartable_step(
        self, tx: Transaction, subtask: Subtask, error: str, now: datetime
    ) -> None:
        """Fails the task when its next step cannot start (a template step refers to an
        output the earlier step did not produce): retrying would not help."""
        code = "STEP_OUTPUT_MISSING"
        subtask_store.update_subtask(
            tx.conn,
            subtask.subtask_id,
            {
                "status": int(Status.FAILED),
                "error": error,
                "error_code": code,
                "updated_at": now,
                "completed_at": now,
            },
            only_if_status=(Status.PENDING,),
        )
        ended = subtask_store.end_active_subtasks(tx.conn, subtask.task_id, Status.CANCELLED, now)
        tx.after_commit(lambda: self.hub.stop_workers(ended, "another subtask of the task failed"))
        failed = record(
            tx,
            self.hub,
            subtask.task_id,
            {
                "status": int(Status.FAILED),
                "error": error,
                "error_code": code,
                "progress_message": None,
                "completed_at": now,
            },
            EventType.STATUS_CHANGED,
            now=now,
            only_if_status=(Status.PENDING, Status.RUNNING),
            message=f"failed: {error}",
        )
        if failed is not None:
            fail_dependents(tx, self.hub, subtask.task_id, Status.FAILED, now)

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

        def failed(tx: Transaction) -> Subtask:
            now = self.clock()
            self._lock_task_of(tx, subtask_id)
            subtask = subtask_store.get_subtask(tx.conn, tenant_scope, subtask_id)
            if subtask is None:
                raise SubtaskNotFound(subtask_id)
            if subtask.status is not Status.RUNNING or subtask.lease_id != lease_id:
                raise LeaseLost(subtask_id, _why_lost(subtask, lease_id))
            return self._fail(tx, subtask, error, error_code, retryable=retryable, now=now)

        return await self.db.write(failed)

    def _fail(
        self,
        tx: Transaction,
        subtask: Subtask,
        error: str,
        error_code: str,
        *,
        retryable: bool,
        now: datetime,
    ) -> Subtask:
        error = error[:4000]
        if retryable and subtask.attempt < subtask.max_attempts:
            delay = self.backoff.delay(subtask.attempt)
            updated = subtask_store.update_subtask(
                tx.conn,
                subtask.subtask_id,
                {
                    "status": int(Status.PENDING),
                    "lease_id": None,
                    "lease_expires_at": None,
                    "worker_id": None,
                    "error": error,
                    "error_code": error_code,
                    "available_at": now + timedelta(seconds=delay),
                    "updated_at": now,
                },
                only_if_status=(Status.RUNNING,),
                lease_id=subtask.lease_id,
            )
            assert updated is not None
            message = (
                f"attempt {subtask.attempt} of {subtask.max_attempts} failed: {error}; "
                f"retrying in {delay:g} s"
            )
            record(
                tx,
                self.hub,
                subtask.task_id,
                {"progress_message": message, "error": error, "error_code": error_code},
                EventType.PROGRESS,
                now=now,
                only_if_status=(Status.RUNNING,),
                message=message,
            )
            tx.after_commit(lambda: self._wake_later(delay))
            return updated
        updated = subtask_store.update_subtask(
            tx.conn,
            subtask.subtask_id,
            {
                "status": int(Status.FAILED),
                "lease_id": None,
                "lease_expires_at": None,
                "error": error,
                "error_code": error_code,
                "updated_at": now,
                "completed_at": now,
            },
            only_if_status=(Status.RUNNING,),
            lease_id=subtask.lease_id,
        )
        assert updated is not None
        ended = subtask_store.end_active_subtasks(tx.conn, subtask.task_id, Status.CANCELLED, now)
        tx.after_commit(lambda: self.hub.stop_workers(ended, "another subtask of the task failed"))
        attempts = f" after {subtask.attempt} attempts" if subtask.attempt > 1 else ""
        failed = record(
            tx,
            self.hub,
            subtask.task_id,
            {
                "status": int(Status.FAILED),
                "error": error,
                "error_code": error_code,
                "progress_message": None,
                "completed_at": now,
            },
            EventType.STATUS_CHANGED,
            now=now,
            only_if_status=(Status.PENDING, Status.RUNNING),
            message=f"failed{attempts}: {error}",
        )
        if failed is not None:
            fail_dependents(tx, self.hub, subtask.task_id, Status.FAILED, now)
        return updated

    def _lock_task_of(self, tx: Transaction, subtask_id: str) -> None:
        """Serialises the state changes of one task across writers (PostgreSQL): sibling
        subtasks finishing at once must see each other to decide the next stage or the end."""
        if not self.db.is_sqlite:
            task_store.lock_task_of_subtask(tx.conn, subtask_id)

    async def release(
        self,
        subtask_id: str,
        lease_id: str,
        *,
        reason: str = "released",
        tenant_scope: str | None = None,
    ) -> None:
        """Gives a subtask back without counting the attempt (a worker shutting down)."""

        def give_back(tx: Transaction) -> None:
            now = self.clock()
            self._lock_task_of(tx, subtask_id)
            subtask = subtask_store.unlease(tx.conn, subtask_id, lease_id, now)
            if subtask is None:
                return
            _check_tenant(subtask, tenant_scope)
            message = f"re-queued: {reason}"
            record(
                tx,
                self.hub,
                subtask.task_id,
                {"progress_message": message},
                EventType.PROGRESS,
                now=now,
                only_if_status=(Status.RUNNING,),
                message=message,
            )
            tx.after_commit(self.hub.work.notify)

        await self.db.write(give_back)

    # -- lease rescue --------------------------------------------------------------------------

    async def rescue_expired(self) -> int:
        """Returns the work of expired leases to the queue (or fails it); safe on every replica.

        Each subtask is re-checked in the update itself (still RUNNING under the same, expired
        lease), so a completion that landed meanwhile is never overwritten.
        """

        def rescue(tx: Transaction) -> int:
            now = self.clock()
            rescued = 0
            expired = subtask_store.expired_leases(tx.conn, now)
            if not self.db.is_sqlite:  # the lock order: tasks (by id) before their subtasks
                for task_id in sorted({s.task_id for s in expired}):
                    task_store.get_task(tx.conn, None, task_id, lock=True)
            for subtask in expired:
                current = subtask_store.get_subtask(tx.conn, None, subtask.subtask_id)
                if (
                    current is None
                    or current.status is not Status.RUNNING
                    or current.lease_id != subtask.lease_id
                    or current.lease_expires_at is None
                    or current.lease_expires_at >= now
                ):
                    continue
                self._fail(
                    tx,
                    current,
                    f"lease expired: worker {current.worker_id} stopped heartbeating",
                    "LEASE_EXPIRED",
                    retryable=True,
                    now=now,
                )
                rescued += 1
            return rescued

        count = await self.db.write(rescue)
        if count:
            log.warning("expired leases returned to the queue", count=count)
        return count

    async def expire_leases_of(self, worker_prefix: str) -> int:
        """Ends the leases of workers that are known dead (this server's previous run)."""

        def expire(tx: Transaction) -> int:
            now = self.clock()
            dead = subtask_store.running_leases_of_workers(tx.conn, worker_prefix)
            for subtask in dead:
                subtask_store.update_subtask(
                    tx.conn,
                    subtask.subtask_id,
                    {"lease_expires_at": now - timedelta(seconds=1)},
                    only_if_status=(Status.RUNNING,),
                    lease_id=subtask.lease_id,
                )
            return len(dead)

        count = await self.db.write(expire)
        if count:
            log.warning("found work left running by a previous run", count=count)
            await self.rescue_expired()
        return count

    def _wake_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.hub.work.notify)


def _timed_out(subtask: Subtask, now: datetime) -> bool:
    if not subtask.timeout_seconds or subtask.started_at is None:
        return False
    return now - subtask.started_at > timedelta(seconds=subtask.timeout_seconds)


def _check_tenant(subtask: Subtask, tenant_scope: str | None) -> None:
    """A lease id is a secret of its holder; should one reach a credential of another tenant,
    its subtask still does not exist for that tenant (raising undoes the change)."""
    if tenant_scope is not None and subtask.tenant_id != tenant_scope:
        raise SubtaskNotFound(subtask.subtask_id)


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
