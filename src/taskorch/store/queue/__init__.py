"""The work queue's statements: every transition of a task and its subtasks, per backend.

Each transition is one named method of a backend's queue (``sqlite.py``, ``postgres.py``),
stating which states it may leave, which it enters and which event it appends; the task
engine (core/engine.py) composes them. A method runs inside the caller's transaction and
works on many rows at once: a batch of ten completions costs the statements of one.

What a batch changed is gathered in :class:`Changes` and settled once, before the commit:
count deltas folded into a few rows, one notice to other replicas (PostgreSQL). After the
commit the engine publishes its events and wakes the takers it names.

    transition        leaves              enters                     task event
    insert_tasks      -                   PENDING                    STATUS_CHANGED (seq 1)
    take              PENDING (ready)     RUNNING, leased            STATUS_CHANGED or PROGRESS
    extend_leases     RUNNING (lease)     RUNNING, later deadline    -
    progress_tasks    RUNNING task        RUNNING                    PROGRESS
    output_events     RUNNING task        RUNNING                    OUTPUT
    complete          RUNNING (lease)     COMPLETED (and a task      - (the task's: terminal
                                          whose only subtask it is)  STATUS_CHANGED)
    complete_tasks    PENDING, RUNNING    COMPLETED                  STATUS_CHANGED (terminal)
    retry_subtasks    RUNNING (lease)     PENDING, backed off        (progress_tasks)
    fail_subtasks     RUNNING (lease)     FAILED                     -
    fail_tasks        PENDING, RUNNING    FAILED                     STATUS_CHANGED (terminal)
    end_subtasks      PENDING, RUNNING    CANCELLED                  - (stop notices)
    cancel_task       PENDING, RUNNING    CANCELLED                  STATUS_CHANGED (terminal)
    release_subtasks  RUNNING (lease)     PENDING, attempt undone    (progress_tasks)
    mark_ready        PENDING, not ready  PENDING, ready             -
    delay_tasks       PENDING, not ready  (listed as delayed)        -
    due_tasks         (listed as delayed) (unlisted: the engine readies them)
    claim_keys        (new keyed tasks)   admitted or waiting (written by insert_tasks)
    line_up           PENDING, not ready  (in its key's waiting line) -
    admit_keys        (waiting line)      admitted, first stage ready -
    leave_keys        (waiting or admitted, task ended) (neither)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from taskorch.domain.values import (
    JSON,
    EventType,
    Status,
    Subtask,
    Task,
    TaskEvent,
    changed,
    key_scope,
)

# (tenant_id, task_type, model_name, template): the counters a task adds to.
CountKey = tuple[str, str, str, str]


# How far apart one tenant's turns are (seconds of the queue's clock, divided by its weight):
# small, so that with short queues turns stay close to creation times.
TURN_STEP = 0.001


@dataclass(frozen=True, slots=True)
class Turns:
    """How a new subtask's place in the queue (its turn) is set: fair sharing between tenants
    (start-time fair queuing, each tenant's steps divided by its weight) or, with ``fair``
    off, first come, first served.

    Fair: within a kind and priority, a subtask's turn is one step after its tenant's last
    queued turn, or after the queue's head when its tenant has nothing queued there, so a
    tenant with a burst queued and one submitting a few take turns (by weight) instead of
    the few waiting behind the burst. Priority still orders first."""

    fair: bool = True
    # Tenant id -> weight (default 1): a tenant of weight 2 gets two turns to another's one.
    weights: Mapping[str, float] = field(default_factory=dict)

    def step(self, tenant_id: str) -> float:
        """The distance between two turns of this tenant (0: first come, first served)."""
        if not self.fair:
            return 0.0
        return TURN_STEP / self.weights.get(tenant_id, 1.0)


@dataclass(frozen=True, slots=True)
class TakeFilter:
    """Which work a taker may run (empty means any)."""

    kinds: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tenant_ids: tuple[str, ...] | None = None
    task_id: str | None = None

    def accepts(self, kind: str, model_name: str, tenant_id: str) -> bool:
        """Whether work of this kind, model and tenant could be taken."""
        if self.kinds and kind not in self.kinds:
            return False
        if self.models and model_name and model_name not in self.models:
            return False
        return self.tenant_ids is None or tenant_id in self.tenant_ids


# (scope, key): a concurrency key (domain.values.key_scope says whose).
Key = tuple[str, str]


def key_of(task: Task) -> Key:
    return key_scope(task.tenant_id, task.concurrency_key or ""), task.concurrency_key or ""


@dataclass(frozen=True, slots=True)
class KeyPlaces:
    """New keyed tasks' places, decided before they are inserted: ``insert_tasks`` writes
    them with the tasks (the admitted ones' first stage inserted ready)."""

    admitted: tuple[Task, ...] = ()
    waiting: tuple[Task, ...] = ()
    # Keys whose line may have room now (a limit raised while tasks wait): admit_keys them
    # after the insert.
    recount: tuple[Key, ...] = ()

    @staticmethod
    def granted(
        tasks: Sequence[Task], grants: Mapping[Key, int], recount: Iterable[Key]
    ) -> KeyPlaces:
        """Each key admits its ``grants[key]`` first new tasks (priority, then oldest, as
        its line orders them); the others wait."""
        admitted: list[Task] = []
        waiting: list[Task] = []
        taken: dict[Key, int] = {}
        for task in sorted(tasks, key=lambda t: (-t.priority, t.created_at, t.task_id)):
            key = key_of(task)
            if taken.get(key, 0) < grants.get(key, 0):
                taken[key] = taken.get(key, 0) + 1
                admitted.append(task)
            else:
                waiting.append(task)
        return KeyPlaces(tuple(admitted), tuple(waiting), tuple(sorted(set(recount))))


@dataclass(frozen=True, slots=True)
class Taken:
    """One subtask leased by :meth:`Queue.take`, and what the engine needs of its task."""

    subtask: Subtask
    depends_on: tuple[str, ...]
    # Its task has a concurrency key: its end may admit the next task of the key's line.
    keyed: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    """A subtask :meth:`Queue.complete` completed."""

    subtask: Subtask
    # How many other subtasks its task has (none: the task is done with it).
    siblings: int


# A report of completed work: (subtask id, lease id, result, tenant or None, resource usage).
Completion = tuple[str, str, JSON | None, str | None, JSON | None]


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """How one task ends: its result or its error."""

    task_id: str
    result: JSON | None = None
    resource_usage: JSON | None = None
    error: str | None = None
    error_code: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Progress:
    """A PROGRESS event for a running task; ``progress`` None keeps the task's figure,
    ``from_subtasks`` recomputes it as the mean of its subtasks (completed ones count 100)."""

    task_id: str
    message: str | None = None
    progress: float | None = None
    from_subtasks: bool = False
    error: str | None = None
    error_code: str | None = None
    data: JSON | None = None
    # The states the task may be in; others are left alone (no event).
    only_if: tuple[Status, ...] = (Status.RUNNING,)


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt that goes back to the queue after ``available_at``."""

    subtask_id: str
    lease_id: str
    error: str
    error_code: str
    available_at: datetime


@dataclass
class Changes:
    """What one batch changed: its events (published after the commit), count deltas
    (folded into one statement), the kinds of work made runnable (takers to wake), running
    subtasks that ended early (workers to stop) and when backed-off work becomes due."""

    events: list[TaskEvent] = field(default_factory=list)
    deltas: dict[tuple[str, int, str, str, str], int] = field(default_factory=dict)
    ready: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, model, tenant)
    stopped: list[tuple[Subtask, str]] = field(default_factory=list)  # (subtask, why)
    due: list[datetime] = field(default_factory=list)
    # When delayed tasks of this batch come due (the engine promotes them then).
    delayed: list[datetime] = field(default_factory=list)
    # PostgreSQL: the event ids this batch stored, for the notice to other replicas.
    first_event_id: int | None = None
    last_event_id: int | None = None
    # Set while a quiet batch's transitions run (store/database.py's _run_early): work
    # leased to an in-process worker may be handed over before the commit.
    early: bool = False
    # Reports awaited of work handed over before the commit: resolved when the report is
    # queued.
    reports: list[asyncio.Future[None]] = field(default_factory=list)
    # New tasks the engine started in this batch whose rows wait for their reports to join
    # it (TaskEngine._write_held): written once, in their final state.
    held: list[Any] = field(default_factory=list)
    # Takers (by what they may run) that found no more work in this batch's transaction:
    # how much ``ready`` held then, and the engine's wake count (TaskEngine._still_dry).
    dry: dict[TakeFilter, tuple[int, int]] = field(default_factory=dict)
    # Those of them whose take read the queue to find that (TaskEngine._note_dry).
    read_dry: set[TakeFilter] = field(default_factory=set)

    def count(self, key: CountKey, old: Status | None, new: Status) -> None:
        """A task moved from ``old`` (None: new task) to ``new``."""
        if old is new:
            return
        tenant, task_type, model_name, template = key
        if old is not None:
            k = (tenant, int(old), task_type, model_name, template)
            self.deltas[k] = self.deltas.get(k, 0) - 1
        k = (tenant, int(new), task_type, model_name, template)
        self.deltas[k] = self.deltas.get(k, 0) + 1

    def stored(self, event_ids: Iterable[int]) -> None:
        for event_id in event_ids:
            if self.first_event_id is None or event_id < self.first_event_id:
                self.first_event_id = event_id
            if self.last_event_id is None or event_id > self.last_event_id:
                self.last_event_id = event_id

    def merge(self, other: Changes) -> None:
        self.events += other.events
        for key, delta in other.deltas.items():
            self.deltas[key] = self.deltas.get(key, 0) + delta
        self.ready += other.ready
        self.stopped += other.stopped
        self.due += other.due
        self.delayed += other.delayed
        self.stored(i for i in (other.first_event_id, other.last_event_id) if i is not None)
        self.reports += other.reports


class Queue(Protocol):
    """The transitions of one backend, inside one transaction (see the module docstring)."""

    # -- create -------------------------------------------------------------------------------

    async def find_requests(self, tenant_id: str, request_ids: Sequence[str]) -> dict[str, Task]:
        """The tenant's tasks created with these request ids, by request id."""
        ...

    async def dependency_states(self, tenant_id: str, task_ids: Sequence[str]) -> dict[str, Status]:
        """The states of the tenant's tasks with these ids; they keep them until the commit."""
        ...

    async def active_tasks(self, tenant_id: str, enough: int = -1) -> int:
        """The tenant's PENDING and RUNNING tasks; creates of the tenant wait for the commit.
        When there are at most ``enough``, a backend may answer ``enough`` without counting
        them (PostgreSQL checks it in the message that takes the tenant's lock)."""
        ...

    async def insert_tasks(
        self,
        tasks: Sequence[tuple[Task, Sequence[Subtask]]],
        changes: Changes,
        turns: Turns,
        places: KeyPlaces | None = None,
    ) -> None:
        """Stores new PENDING tasks with their subtasks (each given its turn by ``turns``),
        dependency edges, first event and keyed tasks' places (from :meth:`claim_keys`).

        A task may come already started (RUNNING, its ready subtasks leased: work handed
        to an idle in-process worker as it is created, TaskEngine._creates), or even
        completed (its worker's report joined the batch first); it then gets the events
        of every step it passed (new_task_events): queued, started, completed."""
        ...

    # -- take ---------------------------------------------------------------------------------

    async def take(
        self,
        taker: TakeFilter,
        limit: int,
        *,
        worker_id: str,
        expires_at: datetime,
        now: datetime,
        changes: Changes,
    ) -> list[Taken]:
        """Leases up to ``limit`` runnable subtasks, highest priority first, then oldest, and
        starts their tasks (never waits for rows other writers hold: it skips them)."""
        ...

    async def results_of(self, task_ids: Sequence[str]) -> dict[str, JSON | None]: ...

    # -- while running ------------------------------------------------------------------------

    async def lock_tasks(self, task_ids: Iterable[str], subtask_ids: Iterable[str]) -> None:
        """Holds the rows of these tasks and of the subtasks' tasks until the commit, taken
        in one order so that writers never deadlock (PostgreSQL; SQLite has one writer)."""
        ...

    async def subtasks(self, subtask_ids: Sequence[str]) -> dict[str, Subtask]: ...

    async def subtasks_of(self, task_id: str) -> list[Subtask]: ...

    async def extend_leases(
        self, leases: Sequence[tuple[str, str, datetime, float | None, str | None]], now: datetime
    ) -> list[Subtask]:
        """(subtask id, lease id, new deadline, progress or None, tenant or None): the leases
        still held (by a subtask of that tenant) are extended and returned."""
        ...

    async def progress_tasks(
        self, items: Sequence[Progress], now: datetime, changes: Changes
    ) -> None: ...

    async def output_events(
        self, items: Sequence[tuple[str, str | None, JSON | None]], now: datetime, changes: Changes
    ) -> set[str]:
        """(task id, text delta, data): OUTPUT events of RUNNING tasks; the tasks that had one."""
        ...

    # -- finish -------------------------------------------------------------------------------

    async def complete_tasks(
        self, ends: Sequence[TaskEnd], now: datetime, changes: Changes
    ) -> list[Task]:
        """Tasks still PENDING or RUNNING become COMPLETED; the tasks that did."""
        ...

    async def complete(
        self, items: Sequence[Completion], now: datetime, changes: Changes
    ) -> tuple[list[Done], list[Task]]:
        """Leases still held (see :data:`Completion`) complete their subtasks, and a task
        whose only subtask that was completes with it (as :meth:`complete_tasks` does, its
        result the subtask's): the subtasks done and the tasks ended."""
        ...

    async def retry_subtasks(self, retries: Sequence[Retry], now: datetime) -> list[Subtask]: ...

    async def fail_subtasks(
        self, failures: Sequence[tuple[str, str, str, str]], now: datetime
    ) -> list[Subtask]:
        """(subtask id, lease id, error, code) of leases still held: marked FAILED."""
        ...

    async def fail_tasks(
        self, ends: Sequence[TaskEnd], now: datetime, changes: Changes
    ) -> list[Task]: ...

    async def end_subtasks(
        self, task_id: str, now: datetime, changes: Changes, reason: str
    ) -> list[Subtask]:
        """The task's PENDING and RUNNING subtasks become CANCELLED; returns them as they were
        (the running ones' workers are told to stop, with ``reason``)."""
        ...

    async def cancel_task(
        self, task_id: str, reason: str, now: datetime, changes: Changes
    ) -> Task | None: ...

    async def release_subtasks(
        self, leases: Sequence[tuple[str, str]], now: datetime, changes: Changes
    ) -> list[Subtask]:
        """Leases handed back unfinished: PENDING again, the attempt not counted."""
        ...

    async def expired_leases(self, now: datetime, limit: int) -> list[Subtask]: ...

    async def leases_of_workers(self, prefixes: Sequence[str]) -> list[Subtask]:
        """Running subtasks held by workers whose ids start with one of ``prefixes``."""
        ...

    # -- stages and dependencies --------------------------------------------------------------

    async def mark_ready(
        self,
        subtasks: Sequence[Subtask],
        now: datetime,
        changes: Changes,
        inputs: dict[str, JSON] | None = None,
    ) -> None:
        """Makes PENDING subtasks runnable (with new inputs where given)."""
        ...

    async def dependents_of(self, task_ids: Sequence[str]) -> dict[str, list[str]]:
        """The tasks waiting for each of ``task_ids``."""
        ...

    # -- delayed tasks ------------------------------------------------------------------------

    async def delay_tasks(self, delays: Sequence[tuple[str, datetime]]) -> None:
        """Lists tasks (id, run_at) as delayed: their work is held until the engine
        promotes them (listing one again moves its time)."""
        ...

    async def due_tasks(self, now: datetime, limit: int) -> list[str]:
        """Unlists up to ``limit`` delayed tasks whose time has come (earliest first; on
        PostgreSQL, ones another replica is promoting are skipped) and returns their ids."""
        ...

    async def next_delayed(self) -> datetime | None:
        """When the earliest delayed task comes due (None: none waits)."""
        ...

    # -- concurrency keys ---------------------------------------------------------------------

    async def claim_keys(
        self, tasks: Sequence[Task], limits: Sequence[tuple[str, str, int | None]]
    ) -> KeyPlaces:
        """Before new tasks are inserted: sets their keys' limits and locks the keys (until
        the commit, on PostgreSQL); the new keyed ``tasks`` nothing else holds back are
        admitted while their key has room and nobody waits in its line, the others wait.

        ``limits`` are (scope, key, limit) of new tasks' keys: a given limit replaces the
        key's, None keeps it (a new key gets 1).
        """
        ...

    async def line_up(self, tasks: Sequence[Task], now: datetime, changes: Changes) -> None:
        """Keyed tasks that were held back (dependencies, their time) join their key's line
        (priority, then oldest first) and the heads of those lines are admitted while each
        key has room (the keys locked until the commit on PostgreSQL)."""
        ...

    async def admit_keys(self, keys: Sequence[Key], now: datetime, changes: Changes) -> None:
        """The heads of the (locked) keys' lines are admitted while each key has room; the
        admitted tasks' lowest pending stage becomes ready (they have run nothing yet)."""
        ...

    async def leave_keys(self, task_ids: Sequence[str], now: datetime, changes: Changes) -> None:
        """Ended tasks leave their key (admitted or waiting); the keys that gained room admit
        the heads of their lines, as :meth:`admit_keys` does."""
        ...

    async def tasks(self, task_ids: Sequence[str], *, lock: bool = False) -> dict[str, Task]: ...

    # -- the end of a batch -------------------------------------------------------------------

    async def settle(self, changes: Changes) -> None:
        """Writes the batch's folded count deltas (and, on PostgreSQL, its notice)."""
        ...


def stop_candidates(subtasks: Iterable[Subtask]) -> list[Subtask]:
    """The running ones among subtasks that were ended: their workers must stop."""
    return [s for s in subtasks if s.status is Status.RUNNING and s.worker_id and s.lease_id]


def started_event(
    task_id: str,
    tenant_id: str,
    sequence: int,
    progress: float,
    *,
    attempt: int,
    worker_id: str,
    now: datetime,
    first: bool,
) -> TaskEvent:
    """The event of a task's attempt starting on a worker (``first``: it was PENDING; a
    later subtask of a running task starting is progress)."""
    return TaskEvent(
        task_id=task_id,
        tenant_id=tenant_id,
        sequence=sequence,
        type=EventType.STATUS_CHANGED if first else EventType.PROGRESS,
        status=Status.RUNNING,
        created_at=now,
        progress=progress,
        message=f"attempt {attempt} started on {worker_id}",
        # Marks where a run starts (chat replies start their streamed text over).
        data={"attempt": attempt, "worker_id": worker_id},
    )


def event(
    task: Task | Any,
    event_type: EventType,
    *,
    now: datetime,
    message: str | None = None,
    progress: float | None = None,
    output_delta: str | None = None,
    data: JSON | None = None,
    with_task: bool = False,
) -> TaskEvent:
    """The event a transition appends, numbered with the task's (already bumped) sequence."""
    return TaskEvent(
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        sequence=task.sequence,
        type=event_type,
        status=task.status,
        created_at=now,
        progress=progress if progress is not None else task.progress,
        message=message,
        output_delta=output_delta,
        data=data,
        task=task if with_task else None,
    )


def new_task_events(task: Task) -> list[TaskEvent]:
    """The events a new task is stored with: queued, and when the engine stores it started
    (or completed; see Queue.insert_tasks), those of the steps it passed, in sequence."""
    if task.status is Status.PENDING:
        return [event(task, EventType.STATUS_CHANGED, now=task.created_at, message="queued")]
    completed = task.status is Status.COMPLETED
    first = task.sequence - (2 if completed else 1)
    queued = changed(task, status=Status.PENDING, sequence=first, progress=0.0)
    events = [
        event(queued, EventType.STATUS_CHANGED, now=task.created_at, message="queued"),
        started_event(
            task.task_id,
            task.tenant_id,
            first + 1,
            0.0,
            attempt=task.attempt,
            worker_id=task.worker_id or "",
            now=task.started_at or task.created_at,
            first=True,
        ),
    ]
    if completed:
        at = task.completed_at or task.created_at
        events.append(
            event(task, EventType.STATUS_CHANGED, now=at, message="completed", with_task=True)
        )
    return events
