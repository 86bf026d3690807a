"""Subtasks as clients see them (seed 000): add work to a task, read it, annotate it, take it
within one task, and report on it with the lease."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from taskorch.core import validation
from taskorch.core.directory import WorkerDirectory
from taskorch.core.engine import TaskEngine, first_stage
from taskorch.core.lifecycle import record
from taskorch.core.planning import check_step_input
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    SubtaskNotFound,
    TaskNotFound,
)
from taskorch.domain.ids import new_id
from taskorch.domain.leases import DEFAULT_LEASE_SECONDS, HeartbeatAnswer, WorkerIdentity
from taskorch.domain.values import JSON, EventType, Lease, Status, Subtask, Task
from taskorch.events.hub import EventHub
from taskorch.store import subtasks as subtask_store
from taskorch.store import tasks as task_store
from taskorch.store.database import Connection, Database, Transaction
from taskorch.store.schema import utcnow

MAX_KIND = 100


@dataclass(frozen=True)
class NewSubtask:
    kind: str
    name: str = ""
    input: JSON | None = None
    info: JSON | None = None
    stage: int = 0
    model_name: str = ""
    max_attempts: int = 0
    timeout_seconds: float = 0.0


@dataclass(frozen=True)
class StatusReport:
    """A worker's report through seed 000's ``PUT …/subtask/{id}/status``."""

    lease_id: str
    status: Status
    progress: float | None = None
    message: str = ""
    result: JSON | None = None
    error: str = ""
    error_code: str = ""
    permanent: bool = False
    lease_seconds: float = 0.0
    output_delta: str = ""


class SubtaskService:
    def __init__(
        self,
        db: Database,
        hub: EventHub,
        engine: TaskEngine,
        directory: WorkerDirectory,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.hub = hub
        self.engine = engine
        self.directory = directory
        self.clock = clock

    async def create(self, caller: Caller, task_id: str, spec: NewSubtask) -> Subtask:
        """Adds a subtask to a task that has not finished.

        Raises:
            TaskNotFound, InvalidArgument, FailedPrecondition (the task finished).
        """
        key = validation.resource_id(task_id, TaskNotFound)
        kind = validation.short_text(spec.kind, "kind", limit=MAX_KIND)
        if not kind:
            raise InvalidArgument("kind is required: the kind of worker that runs it", field="kind")
        if spec.stage < 0 or spec.stage > 1000:
            raise InvalidArgument("stage must be between 0 and 1000", field="stage")
        max_attempts = validation.bounded_int(
            spec.max_attempts, "max_attempts", low=1, high=100, default=0
        )
        timeout = validation.seconds(spec.timeout_seconds, "timeout_seconds")
        check_step_input(kind, spec.input)

        def add(tx: Transaction) -> Subtask:
            found = task_store.get_task(tx.conn, caller.tenant_scope, key)
            if found is None:
                raise TaskNotFound(task_id)
            # Lock order everywhere: a task's dependencies before the task itself.
            task_store.get_tasks(tx.conn, None, found.depends_on, share_lock=True)
            task = task_store.get_task(tx.conn, None, key, lock=True)
            assert task is not None
            if task.status.is_terminal:
                raise FailedPrecondition(
                    f"Task '{key}' is already {task.status.name}; no work can be added",
                    reason="TASK_FINISHED",
                )
            now = self.clock()
            siblings = subtask_store.subtasks_of(tx.conn, key)
            subtask = Subtask(
                subtask_id=new_id(),
                task_id=key,
                tenant_id=task.tenant_id,
                kind=kind,
                name=validation.short_text(spec.name, "name"),
                model_name=validation.short_text(spec.model_name, "model_name"),
                stage=spec.stage,
                input=spec.input,
                info=spec.info,
                status=Status.PENDING,
                max_attempts=max_attempts or task.max_attempts,
                priority=task.priority,
                ready=False,
                available_at=now,
                timeout_seconds=timeout or task.timeout_seconds,
                created_at=now,
                updated_at=now,
            )
            subtask_store.insert_subtasks(tx.conn, [subtask])
            ready = _dependencies_met(tx, task) and subtask in first_stage([*siblings, subtask])
            if ready:
                subtask_store.mark_ready(tx.conn, [subtask.subtask_id], now)
                tx.after_commit(self.hub.work.notify)
            waiting = self.directory.waiting_message([kind])
            message = f"subtask {subtask.name or subtask.subtask_id} ({kind}) added"
            record(
                tx,
                self.hub,
                key,
                {"progress_message": waiting or message},
                EventType.PROGRESS,
                now=now,
                only_if_status=(Status.PENDING, Status.RUNNING),
                message=message,
            )
            stored = subtask_store.get_subtask(tx.conn, None, subtask.subtask_id)
            assert stored is not None
            return stored

        return await self.db.write(add)

    async def list(self, caller: Caller, task_id: str, status: str = "") -> list[Subtask]:
        key = validation.resource_id(task_id, TaskNotFound)
        wanted: Status | None = None
        if status.strip():
            try:
                wanted = Status.parse(status)
            except KeyError:
                raise InvalidArgument(
                    f"status {status!r} is not a status word", field="status"
                ) from None
        scope = caller.tenant_scope

        def read(conn: Connection) -> list[Subtask] | None:
            if task_store.get_task(conn, scope, key) is None:
                return None
            return subtask_store.subtasks_of(conn, key)

        found = await self.db.read(read)
        if found is None:
            raise TaskNotFound(task_id)
        return [s for s in found if wanted is None or s.status is wanted]

    async def get(self, caller: Caller, task_id: str, subtask_id: str) -> Subtask:
        task_key = validation.resource_id(task_id, TaskNotFound)
        key = validation.resource_id(subtask_id, SubtaskNotFound)
        scope = caller.tenant_scope
        found = await self.db.read(lambda conn: subtask_store.get_subtask(conn, scope, key))
        if found is None or found.task_id != task_key:
            raise SubtaskNotFound(subtask_id)
        return found

    async def update(
        self,
        caller: Caller,
        task_id: str,
        subtask_id: str,
        *,
        info: JSON | None = None,
        name: str = "",
        input: JSON | None = None,
    ) -> Subtask:
        """Sets info and name; replaces the input of a subtask that has not started."""
        current = await self.get(caller, task_id, subtask_id)
        values: dict[str, object] = {"updated_at": self.clock()}
        if info is not None:
            values["info"] = info
        if name:
            values["name"] = validation.short_text(name, "name")
        if input is not None:
            if current.status is not Status.PENDING or current.attempt > 0:
                raise Conflict(
                    f"Subtask '{current.subtask_id}' has started; its input cannot change",
                    reason="SUBTASK_STARTED",
                )
            check_step_input(current.kind, input)
            values["input"] = input

        def change(tx: Transaction) -> Subtask:
            updated = subtask_store.update_subtask(tx.conn, current.subtask_id, values)
            assert updated is not None
            return updated

        return await self.db.write(change)

    async def take(
        self,
        caller: Caller,
        task_id: str,
        worker: WorkerIdentity,
        *,
        lease_seconds: float = 0.0,
        wait_seconds: float = 0.0,
    ) -> Lease | None:
        """Leases the next runnable subtask of one task (None when there is none)."""
        key = validation.resource_id(task_id, TaskNotFound)
        scope = caller.tenant_scope
        task = await self.db.read(lambda conn: task_store.get_task(conn, scope, key))
        if task is None:
            raise TaskNotFound(task_id)
        self.directory.seen(worker.worker_id, worker.kinds, worker.models)
        leases = await self.engine.take(
            worker,
            lease_seconds=lease_seconds or DEFAULT_LEASE_SECONDS,
            wait_seconds=wait_seconds,
            task_id=key,
        )
        return leases[0] if leases else None

    async def report(
        self, caller: Caller, task_id: str, subtask_id: str, report: StatusReport
    ) -> tuple[Subtask, HeartbeatAnswer]:
        """Applies a worker's status report; answers the subtask and whether to stop."""
        current = await self.get(caller, task_id, subtask_id)
        if not report.lease_id:
            raise InvalidArgument(
                "lease_id is required: report with the lease you hold", field="lease_id"
            )
        lease_seconds = report.lease_seconds or DEFAULT_LEASE_SECONDS
        key, lease = current.subtask_id, report.lease_id
        if report.output_delta:
            await self.engine.output(key, lease, delta=report.output_delta)
        if report.status is Status.COMPLETED:
            done = await self.engine.complete(key, lease, report.result)
            return done, HeartbeatAnswer(None)
        if report.status is Status.FAILED:
            failed = await self.engine.fail(
                key,
                lease,
                report.error or "failed",
                error_code=report.error_code or "INTERNAL_ERROR",
                retryable=not report.permanent,
            )
            return failed, HeartbeatAnswer(None)
        if report.status is not Status.RUNNING:
            raise InvalidArgument(
                "status must be RUNNING (a heartbeat), COMPLETED or FAILED", field="status"
            )
        answer = await self.engine.heartbeat(
            key,
            lease,
            lease_seconds=lease_seconds,
            progress=report.progress,
            message=report.message or None,
        )
        return await self.get(caller, task_id, subtask_id), answer


def _dependencies_met(tx: Transaction, task: Task) -> bool:
    """Nothing holds the task back: its dependencies completed, its time came (if delayed),
    its concurrency key admitted it (if keyed)."""
    if (task.run_at or task.concurrency_key) and task_store.held_back(tx.conn, task.task_id):
        return False
    if not task.depends_on:
        return True
    found = task_store.get_tasks(tx.conn, None, task.depends_on)
    return all(t.status is Status.COMPLETED for t in found)
