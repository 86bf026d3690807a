"""The task lifecycle as clients see it: create, get, list, cancel and watch."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import structlog

from taskorch.core import validation
from taskorch.core.directory import WorkerDirectory
from taskorch.core.engine import NewTask, TaskEngine
from taskorch.core.lifecycle import record
from taskorch.core.planning import Catalog, Plan, TaskSpec
from taskorch.domain.artifacts import NAME as ARTIFACT_NAME
from taskorch.domain.artifacts import Artifact
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    ArtifactNotFound,
    Conflict,
    InvalidArgument,
    TaskNotFound,
    TaskorchError,
    within,
)
from taskorch.domain.ids import new_id
from taskorch.domain.values import (
    DEFAULT_MAX_ATTEMPTS,
    EventType,
    Page,
    Status,
    Subtask,
    Task,
    TaskEvent,
)
from taskorch.events import watch
from taskorch.events.bus import SubscriptionLagged
from taskorch.events.hub import EventHub
from taskorch.store import artifacts as artifact_store
from taskorch.store import subtasks as subtask_store
from taskorch.store import tasks as task_store
from taskorch.store.database import Connection, Database, Transaction
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_BATCH = 1000  # tasks of one create_many
MAX_DEPENDENCIES = 100
MAX_WATCHED_TASKS = 1000  # task ids of one watch_many


@dataclass(frozen=True)
class ListRequest:
    """A list call as clients make it; see :meth:`TaskService.list`."""

    status: str = ""
    task_type: str = ""
    model_name: str = ""
    template: str = ""
    limit: int = 0
    offset: int = 0
    page: int = 0
    sort_by: str = ""
    sort_order: str = ""
    page_token: str = ""


class TaskService:
    """Creates, reads, lists, cancels and streams tasks of the caller's tenant."""

    def __init__(
        self,
        db: Database,
        hub: EventHub,
        engine: TaskEngine,
        catalog: Catalog,
        *,
        directory: WorkerDirectory | None = None,
        max_active_tasks: int = 0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.hub = hub
        self.engine = engine
        self.catalog = catalog
        self.directory = directory or WorkerDirectory()
        self.max_active_tasks = max_active_tasks
        self.clock = clock
        self.estimator = DurationEstimator()
        hub.add_listener(self.estimator.observe)

    # -- create --------------------------------------------------------------------------------

    async def create(self, caller: Caller, spec: TaskSpec) -> Task:
        """Validates, plans and durably queues a task; idempotent on ``spec.request_id``.

        Raises:
            InvalidArgument: a field is invalid (named in the error).
            UnsupportedTaskType, ModelNotFound, TemplateNotFound: nothing can run it.
            AlreadyExists: ``request_id`` was used before for a different request.
            ResourceExhausted: the tenant has its quota of unfinished tasks.
        """
        prepared = await self._prepare(caller, spec)
        return (await self._store(caller, [prepared], batch=False))[0]

    async def create_many(self, caller: Caller, specs: Sequence[TaskSpec]) -> list[Task]:
        """Creates up to ``MAX_BATCH`` tasks in one transaction: all of them or none.

        Each request is checked as :meth:`create` checks it; an error names the request
        (``requests[3].text``). Requests with a ``request_id`` used before answer the earlier
        task, so a retried batch creates nothing twice.
        """
        if not specs:
            raise InvalidArgument("requests must not be empty", field="requests")
        if len(specs) > MAX_BATCH:
            raise InvalidArgument(
                f"{len(specs)} requests; a batch holds at most {MAX_BATCH}", field="requests"
            )
        prepared: list[NewTask] = []
        for index, spec in enumerate(specs):
            try:
                prepared.append(await self._prepare(caller, spec))
            except TaskorchError as exc:
                raise within(exc, f"requests[{index}]") from None
        keys = [p.task.request_id for p in prepared if p.task.request_id]
        if len(set(keys)) != len(keys):
            raise InvalidArgument(
                "two requests of the batch have the same request_id", field="requests"
            )
        return await self._store(caller, prepared, batch=True)

    async def check(self, caller: Caller, spec: TaskSpec) -> None:
        """Checks and plans a create request as :meth:`create` would, storing nothing (a
        schedule's task body is checked this way when the schedule is created).

        Raises:
            InvalidArgument, UnsupportedTaskType, ModelNotFound, TemplateNotFound: as create.
        """
        await self._prepare(caller, spec)

    async def _store(self, caller: Caller, tasks: list[NewTask], *, batch: bool) -> list[Task]:
        """Queues checked tasks (all or none) in the engine's next batch."""
        return await self.engine.create(
            caller.tenant_id, tasks, batch=batch, max_active=self.max_active_tasks
        )

    async def _prepare(self, caller: Caller, spec: TaskSpec) -> NewTask:
        """Checks and plans one request; the task it would create (not stored yet)."""
        priority = validation.priority(spec.priority)
        max_attempts = validation.bounded_int(
            spec.max_attempts, "max_attempts", low=1, high=100, default=DEFAULT_MAX_ATTEMPTS
        )
        timeout = validation.seconds(spec.timeout_seconds, "timeout_seconds")
        request_id = validation.short_text(spec.request_id, "request_id")
        depends_on = _dependencies(spec.depends_on)
        plan = await self.catalog.plan_for(caller, spec)
        now = self.clock()
        run_at = validation.run_at(spec.run_at, spec.run_after_seconds, now)
        delayed = run_at is not None and run_at > now
        key, limit = validation.concurrency(spec.concurrency_key, spec.concurrency_limit)
        if key is None and plan.concurrency_key:
            key, limit = plan.concurrency_key, plan.concurrency_limit
        task = Task(
            task_id=new_id(),
            tenant_id=caller.tenant_id,
            status=Status.PENDING,
            task_type=plan.task_type,
            model_name=plan.model_name or spec.model_name,
            template=spec.template,
            text=spec.text,
            input_data=plan.input_data if plan.input_data is not None else spec.input_data,
            parameters=spec.parameters,
            priority=priority,
            depends_on=depends_on,
            request_id=request_id or None,
            max_attempts=max_attempts,
            timeout_seconds=timeout,
            progress_message=(
                f"scheduled: runs at {run_at:%Y-%m-%dT%H:%M:%S.%f}Z"
                if delayed and run_at is not None
                else self.directory.waiting_message(step.kind for step in plan.steps)
                if plan.steps
                else "waiting for subtasks"
            ),
            sequence=1,
            created_at=now,
            updated_at=now,
            run_at=run_at,
            concurrency_key=key,
        )
        subtasks = _subtasks(task, plan, now=now)
        if delayed or key:  # held back until the engine promotes or admits it (core/engine.py)
            subtasks = [replace(s, ready=False) for s in subtasks]
        return NewTask(task, tuple(subtasks), concurrency_limit=limit)

    # -- read ----------------------------------------------------------------------------------

    async def get(self, caller: Caller, task_id: str) -> Task:
        """Raises TaskNotFound, also for another tenant's task."""
        key = validation.resource_id(task_id, TaskNotFound)
        task = await self.db.read(lambda conn: task_store.get_task(conn, caller.tenant_scope, key))
        if task is None:
            raise TaskNotFound(task_id)
        return task

    async def artifact(self, caller: Caller, task_id: str, name: str) -> Artifact:
        """One binary result of a task.

        Raises:
            TaskNotFound: no such task (also another tenant's).
            ArtifactNotFound: the task has no artifact of that name.
        """
        key = validation.resource_id(task_id, TaskNotFound)
        # A name no artifact can have (a NUL, 10 kB) is looked up as one that does not exist,
        # never handed to the database.
        lookup = name if ARTIFACT_NAME.fullmatch(name) else ""
        visible, found = await self.db.read(
            lambda conn: artifact_store.get_artifact(conn, caller.tenant_scope, key, lookup)
        )
        if not visible:
            raise TaskNotFound(task_id)
        if found is None:
            raise ArtifactNotFound(name, message=f"Task '{task_id}' has no artifact named '{name}'")
        return found

    async def list(self, caller: Caller, request: ListRequest) -> Page:
        """One page of the caller's tasks, with offset, page or keyset (token) paging."""
        query, page_number = _query(caller, request)
        items, total = await self.db.read(lambda conn: task_store.list_tasks(conn, query))
        token = ""
        if len(items) == query.limit and (
            query.after is not None or query.offset + len(items) < total
        ):
            token = _encode_token(query, items[-1])
        return Page(
            items=tuple(items),
            total=total,
            limit=query.limit,
            offset=query.offset,
            next_page_token=token,
            extra={"page": page_number},
        )

    def token_after(self, caller: Caller, request: ListRequest, last: Task) -> str:
        """The next_page_token of a page of ``request`` cut short after ``last``."""
        query, _ = _query(caller, request)
        return _encode_token(query, last)

    async def by_status(self, caller: Caller, limit: int = 0) -> dict[Status, Sequence[Task]]:
        """The newest ``limit`` tasks of each status (seed 002's grouped view)."""
        if limit < 0:
            raise InvalidArgument("limit must not be negative", field="limit")
        per_status = min(limit or 100, MAX_LIMIT)
        scope = caller.tenant_scope

        def read(conn: Connection) -> dict[Status, Sequence[Task]]:
            return {
                status: task_store.list_tasks(
                    conn,
                    task_store.TaskQuery(tenant_id=scope, status=status, limit=per_status),
                    count=False,
                )[0]
                for status in Status
            }

        return await self.db.read(read)

    async def update_priority(self, caller: Caller, task_id: str, priority: int) -> Task:
        """Changes the priority of a task that has not finished (and of its queued work).

        Raises:
            TaskNotFound, InvalidArgument, Conflict (the task already finished).
        """
        key = validation.resource_id(task_id, TaskNotFound)
        value = validation.priority(priority, default=None)

        def change(tx: Transaction) -> Task:
            task = task_store.get_task(tx.conn, caller.tenant_scope, key, lock=True)
            if task is None:
                raise TaskNotFound(task_id)
            if task.status.is_terminal:
                raise Conflict(
                    f"Task '{key}' is already {task.status.name}; its priority cannot change",
                    reason="TASK_FINISHED",
                )
            if task.priority == value:
                return task
            subtask_store.set_priority(tx.conn, key, value, self.clock())
            recorded = record(
                tx,
                self.hub,
                key,
                {"priority": value},
                EventType.PROGRESS,
                now=self.clock(),
                only_if_status=(Status.PENDING, Status.RUNNING),
                message=f"priority changed from {task.priority} to {value}",
            )
            assert recorded is not None
            return recorded[0]

        return await self.db.write(change)

    async def counts(self, caller: Caller) -> dict[Status, int]:
        return await self.db.read(
            lambda conn: task_store.count_by_status(conn, caller.tenant_scope)
        )

    def estimate_completion(self, task: Task) -> datetime | None:
        return self.estimator.estimate(task, self.clock())

    # -- many tasks over one stream ------------------------------------------------------------

    async def watch_many(
        self,
        caller: Caller,
        task_ids: Sequence[str] = (),
        *,
        terminal_only: bool = False,
        live: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[TaskEvent]:
        """The caller's tasks as they change, over one subscription to their tenant.

        It subscribes first and then awaits ``live`` (the server sends the stream's headers
        there), so every event after that is seen. With ``task_ids`` it then reads those
        tasks and yields a SNAPSHOT of each, then only their later events, and ends once all
        of them have ended; without, it follows every task of the caller's without end. One
        task's events come in sequence order (those a snapshot already covers are dropped).

        Raises:
            InvalidArgument: more than MAX_WATCHED_TASKS ids.
            TaskNotFound: a listed task does not exist for the caller.
            Conflict: (WATCH_LAGGED) the stream fell more than its buffer behind.
        """
        if len(task_ids) > MAX_WATCHED_TASKS:
            raise InvalidArgument(
                f"task_ids lists {len(task_ids)} tasks; the limit is {MAX_WATCHED_TASKS}",
                field="task_ids",
            )
        keys = list(dict.fromkeys(validation.resource_id(t, TaskNotFound) for t in task_ids))
        with self.hub.subscribe_tenant(caller.tenant_scope) as subscription:
            if live is not None:
                await live()
            # The last sequence seen of each listed task (None: every task, unlisted).
            seen: dict[str, int] | None = None
            pending: set[str] = set()
            if keys:
                found = await self.db.read(
                    lambda conn: task_store.get_tasks(conn, caller.tenant_scope, keys)
                )
                by_id = {task.task_id: task for task in found}
                for key in keys:
                    if key not in by_id:
                        raise TaskNotFound(key)
                seen = {}
                for key in keys:
                    task = by_id[key]
                    seen[key] = task.sequence
                    if not task.status.is_terminal:
                        pending.add(key)
                    if task.status.is_terminal or not terminal_only:
                        yield _snapshot(task)
                if not pending:
                    return
            while True:
                try:
                    event = await subscription.get()
                except SubscriptionLagged:
                    raise Conflict(
                        f"this stream fell more than {self.hub.watch_buffer} events behind: "
                        "read the tasks' state (GetTask, ListTasks) and watch again",
                        reason="WATCH_LAGGED",
                    ) from None
                if event is None:
                    continue
                if seen is not None:
                    last = seen.get(event.task_id)
                    if last is None or event.sequence <= last:
                        continue  # not listed, or covered by its snapshot
                    seen[event.task_id] = event.sequence
                if terminal_only and not event.status.is_terminal:
                    continue
                yield event
                if seen is not None and event.status.is_terminal:
                    pending.discard(event.task_id)
                    if not pending:
                        return

    # -- cancel --------------------------------------------------------------------------------

    async def cancel(self, caller: Caller, task_id: str, reason: str = "") -> Task:
        """Cancels a pending or running task and tells its running worker to stop.

        Cancelling a cancelled task answers it again.

        Raises:
            TaskNotFound: no such task for this caller.
            TaskNotCancellable: the task already completed or failed.
        """
        key = validation.resource_id(task_id, TaskNotFound)
        reason = validation.short_text(reason, "reason", limit=1000)

        return await self.engine.cancel(caller.tenant_scope, key, reason)

    # -- watch ---------------------------------------------------------------------------------

    async def watch(
        self, caller: Caller, task_id: str, after_sequence: int = 0
    ) -> AsyncIterator[TaskEvent]:
        """Yields the task's state, then every change, ending after the terminal event.

        It subscribes before reading, so no event between the read and the subscription is
        lost; with ``after_sequence`` it replays the stored events after that number first.
        Events are deduplicated and ordered by sequence number (events/watch.py).
        """
        key = validation.resource_id(task_id, TaskNotFound)
        if after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative", field="after_sequence")

        async def snapshot() -> TaskEvent | None:
            task, streamed = await self.db.read(
                partial(_task_so_far, caller.tenant_scope, key, with_output=after_sequence == 0)
            )
            if task is None:
                raise TaskNotFound(task_id)
            return _snapshot(task, streamed) if after_sequence == 0 else None

        events = watch.follow(
            self.hub.subscribe(key),
            snapshot,
            partial(self._replay, caller, key),
            after_sequence=after_sequence,
            is_terminal=_ends_watch,
        )
        async with aclosing(events):
            async for event in events:
                yield event

    async def _replay(
        self, caller: Caller, task_id: str, after: int
    ) -> AsyncGenerator[TaskEvent, None]:
        """The stored events after ``after``; the terminal one carries the task as it ended."""
        while True:
            read_events = partial(task_store.events_after, task_id=task_id, after_sequence=after)
            events = await self.db.read(read_events)
            for event in events:
                if event.is_terminal:
                    task = await self.db.read(
                        lambda conn: task_store.get_task(conn, caller.tenant_scope, task_id)
                    )
                    event = replace(event, task=task)
                yield event
                after = event.sequence
                if event.is_terminal:
                    return
            if len(events) < 1000:
                return


# -- helpers -----------------------------------------------------------------------------------


def _dependencies(ids: tuple[str, ...]) -> tuple[str, ...]:
    if len(ids) > MAX_DEPENDENCIES:
        raise InvalidArgument(
            f"depends_on lists {len(ids)} tasks; the limit is {MAX_DEPENDENCIES}",
            field="depends_on",
        )
    parsed = [validation.parse_id(value, f"depends_on[{i}]") for i, value in enumerate(ids)]
    return tuple(dict.fromkeys(parsed))


def _subtasks(task: Task, plan: Plan, *, now: datetime) -> list[Subtask]:
    return [
        Subtask(
            subtask_id=new_id(),
            task_id=task.task_id,
            tenant_id=task.tenant_id,
            kind=step.kind,
            name=step.name,
            model_name=step.model_name,
            stage=stage,
            input=step.input,
            status=Status.PENDING,
            max_attempts=task.max_attempts,
            priority=task.priority,
            # Steps run one after another: only the first is ready (when dependencies are).
            ready=stage == 0,
            available_at=now,
            timeout_seconds=task.timeout_seconds,
            created_at=now,
            updated_at=now,
        )
        for stage, step in enumerate(plan.steps)
    ]


def _task_so_far(
    tenant_scope: str | None, task_id: str, conn: Connection, *, with_output: bool
) -> tuple[Task | None, str]:
    """The task, and (``with_output``, while it runs) the output it streamed so far: one
    read for a watch's snapshot."""
    task = task_store.get_task(conn, tenant_scope, task_id)
    if task is None or not with_output or task.status is not Status.RUNNING:
        return task, ""
    return task, task_store.output_so_far(conn, task_id=task_id, up_to_sequence=task.sequence)


def _ends_watch(event: TaskEvent) -> bool:
    """The terminal status change, or the snapshot of a task that has ended."""
    return event.is_terminal or (event.type is EventType.SNAPSHOT and event.status.is_terminal)


def _snapshot(task: Task, partial_output: str = "") -> TaskEvent:
    """The task as it is; a running task's snapshot carries the output streamed so far."""
    return TaskEvent(
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        sequence=task.sequence,
        type=EventType.SNAPSHOT,
        status=task.status,
        created_at=task.updated_at,
        progress=task.progress,
        message=task.progress_message,
        output_delta=partial_output or None,
        task=task,
    )


def _query(caller: Caller, request: ListRequest) -> tuple[task_store.TaskQuery, int]:
    status: Status | None = None
    if request.status.strip():
        try:
            status = Status.parse(request.status)
        except KeyError:
            words = ", ".join(s.name for s in Status)
            raise InvalidArgument(
                f"status {request.status!r} is not one of {words} (any case; queued and "
                "processing are accepted too)",
                field="status",
            ) from None
    limit, offset = validation.paging(
        request.limit,
        request.offset,
        request.page,
        default_limit=DEFAULT_LIMIT,
        max_limit=MAX_LIMIT,
    )
    sort_by = (request.sort_by or "created_at").strip().lower()
    if sort_by not in task_store.SORTABLE:
        raise InvalidArgument(
            f"sort_by {request.sort_by!r} is not one of {', '.join(task_store.SORTABLE)}",
            field="sort_by",
        )
    order = (request.sort_order or "desc").strip().lower()
    if order not in ("asc", "desc"):
        raise InvalidArgument(f"sort order {order!r} must be asc or desc", field="sort_order")
    query = task_store.TaskQuery(
        tenant_id=caller.tenant_scope,
        status=status,
        task_type=request.task_type.strip() or None,
        model_name=request.model_name.strip() or None,
        template=request.template.strip() or None,
        sort_by=sort_by,
        descending=order == "desc",
        limit=limit,
        offset=offset,
    )
    if request.page_token:
        query = replace(query, offset=0, after=_decode_token(request.page_token, query))
    return query, offset // limit + 1


def _fingerprint(query: task_store.TaskQuery) -> str:
    key: list[object] = [
        query.tenant_id,
        query.status,
        query.task_type,
        query.model_name,
        query.template,
    ]
    key += [query.sort_by, query.descending]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]


def _encode_token(query: task_store.TaskQuery, last: Task) -> str:
    value: Any = getattr(last, query.sort_by)
    if isinstance(value, datetime):
        value = {"t": value.isoformat()}
    elif isinstance(value, Status):
        value = int(value)
    body = {"v": 1, "f": _fingerprint(query), "k": value, "id": last.task_id}
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


def _decode_token(token: str, query: task_store.TaskQuery) -> tuple[Any, str]:
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
        if body.get("v") != 1:
            raise ValueError
        value = body["k"]
        if isinstance(value, dict):
            value = datetime.fromisoformat(value["t"])
        task_id = str(uuid.UUID(body["id"]))
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise InvalidArgument(
            "page_token is not a token this server issued", field="page_token"
        ) from None
    if body.get("f") != _fingerprint(query):
        raise InvalidArgument(
            "page_token belongs to a list with other filters or sort; repeat them unchanged",
            field="page_token",
        )
    return value, task_id


class DurationEstimator:
    """Estimates when a task will finish from recent run times of its task type (EWMA)."""

    ALPHA = 0.2

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._started: dict[str, tuple[str, datetime]] = {}

    def observe(self, event: TaskEvent) -> None:
        task = event.task
        if task is None or event.status is not Status.COMPLETED or task.started_at is None:
            return
        assert task.completed_at is not None
        took = (task.completed_at - task.started_at).total_seconds()
        if not math.isfinite(took) or took < 0:
            return
        previous = self._seconds.get(task.task_type)
        self._seconds[task.task_type] = (
            took if previous is None else previous + self.ALPHA * (took - previous)
        )

    def estimate(self, task: Task, now: datetime) -> datetime | None:
        if task.status.is_terminal:
            return None
        seconds = self._seconds.get(task.task_type)
        if seconds is None:
            return None
        start = task.started_at or now
        return max(start + timedelta(seconds=seconds), now)
