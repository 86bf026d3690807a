"""The queue's transitions on SQLite, with the sqlite3 driver on the writer's connection.

SQLite has one writer, so nothing here locks: each transition reads what it decides on and
writes many rows per statement (``UPDATE … FROM json_each(?)`` with the batch's values as
one JSON array, ``executemany`` for inserts). Statements cost tens of microseconds in
process; the Python around them is what a batch spends, so rows are decoded only where the
engine needs them.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from taskorch.domain.ids import new_id
from taskorch.domain.values import (
    JSON,
    EventType,
    Status,
    Subtask,
    Task,
    TaskEvent,
)
from taskorch.store.queue import (
    Changes,
    Completion,
    CountKey,
    Done,
    Key,
    KeyPlaces,
    Progress,
    Queue,
    Retry,
    TakeFilter,
    Taken,
    TaskEnd,
    Turns,
    event,
    key_of,
    new_task_events,
    started_event,
    stop_candidates,
)
from taskorch.store.queue.rows import (
    EVENT_COLUMNS,
    SUBTASK_COLUMNS,
    TASK_COLUMNS,
    dumps,
    loads,
    parse_sqlite_time,
    sqlite_time,
    subtask_from_sqlite,
    subtask_values_sqlite,
    task_from_sqlite,
    task_values_sqlite,
)


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_INSERT_TASK = _insert("tasks", TASK_COLUMNS)


def _insert_subtask() -> str:
    """The insert of a new subtask with its turn (store/queue's Turns): its parameters are
    SUBTASK_COLUMNS, then the tenant's step (0: first come, first served) and the creation
    time in seconds. Rows inserted one after another in one call each see the ones before
    them, so a burst of one tenant gets turns a step apart."""
    n = len(SUBTASK_COLUMNS)
    tenant, kind, priority = (
        f"?{SUBTASK_COLUMNS.index(c) + 1}" for c in ("tenant_id", "kind", "priority")
    )
    step, now = f"?{n + 1}", f"?{n + 2}"
    queued = f"kind = {kind} AND priority = {priority} AND status = 1 AND ready"
    turn = (
        f"CASE WHEN {step} = 0 THEN {now} ELSE coalesce("
        f"(SELECT turn FROM subtasks WHERE tenant_id = {tenant} AND {queued} "
        "ORDER BY turn DESC LIMIT 1), "
        f"(SELECT turn FROM subtasks WHERE {queued} ORDER BY turn LIMIT 1), {now}) + {step} END"
    )
    values = ", ".join(f"?{i + 1}" for i in range(n))
    return f"INSERT INTO subtasks ({', '.join(SUBTASK_COLUMNS)}, turn) VALUES ({values}, {turn})"


_INSERT_SUBTASK = _insert_subtask()
_INSERT_EVENT = _insert("task_events", EVENT_COLUMNS)
_INSERT_DEPENDENCY = "INSERT INTO task_dependencies (task_id, depends_on_id) VALUES (?, ?)"
_INSERT_DELTA = (
    "INSERT INTO task_count_deltas (tenant_id, status, task_type, model_name, template, delta) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
ACTIVE = (int(Status.PENDING), int(Status.RUNNING))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _key(row: Any) -> CountKey:
    return (row["tenant_id"], row["task_type"], row["model_name"], row["template"])


class SqliteQueue(Queue):
    """The transitions (see store/queue/__init__.py) on one sqlite3 connection, inside the
    transaction its owner began."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # Task statuses read in this transaction before a statement changed them (a
        # completion reads its task's with the subtask's update), by task id.
        self._task_status: dict[str, int] = {}

    def forget(self) -> None:
        """Drops what this queue remembers of the transaction (a savepoint rolled back)."""
        self._task_status.clear()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cursor = self.conn.cursor()
        cursor.row_factory = sqlite3.Row
        try:
            return cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params).close()

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows).close()

    def _events(self, events: Sequence[TaskEvent], changes: Changes) -> None:
        """Events are written once per batch, by :meth:`settle`."""
        changes.events += events

    def _statuses(self, task_ids: Iterable[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        rows = self.conn.execute(
            f"SELECT task_id, status FROM tasks WHERE task_id IN ({_marks(len(ids))})", ids
        ).fetchall()
        return dict(rows)

    # -- create -------------------------------------------------------------------------------

    async def find_requests(self, tenant_id: str, request_ids: Sequence[str]) -> dict[str, Task]:
        if not request_ids:
            return {}
        rows = self._rows(
            "SELECT * FROM tasks WHERE tenant_id = ? "
            f"AND request_id IN ({_marks(len(request_ids))})",
            [tenant_id, *request_ids],
        )
        return {row["request_id"]: task_from_sqlite(row) for row in rows}

    async def dependency_states(self, tenant_id: str, task_ids: Sequence[str]) -> dict[str, Status]:
        if not task_ids:
            return {}
        rows = self.conn.execute(
            "SELECT task_id, status FROM tasks WHERE tenant_id = ? "
            f"AND task_id IN ({_marks(len(task_ids))})",
            [tenant_id, *task_ids],
        ).fetchall()
        return {task_id: Status(status) for task_id, status in rows}

    async def active_tasks(self, tenant_id: str, enough: int = -1) -> int:
        (count,) = self.conn.execute(
            "SELECT (SELECT coalesce(sum(count), 0) FROM task_counts "
            "WHERE tenant_id = ? AND status IN (1, 2)) + "
            "(SELECT coalesce(sum(delta), 0) FROM task_count_deltas "
            "WHERE tenant_id = ? AND status IN (1, 2))",
            (tenant_id, tenant_id),
        ).fetchone()
        return int(count)

    async def insert_tasks(
        self,
        tasks: Sequence[tuple[Task, Sequence[Subtask]]],
        changes: Changes,
        turns: Turns,
        places: KeyPlaces | None = None,
    ) -> None:
        self._many(_INSERT_TASK, [task_values_sqlite(task) for task, _ in tasks])
        self._many(
            _INSERT_SUBTASK,
            [
                (*subtask_values_sqlite(s), turns.step(s.tenant_id), s.created_at.timestamp())
                for _, subtasks in tasks
                for s in subtasks
            ],
        )
        edges = [(task.task_id, dep) for task, _ in tasks for dep in task.depends_on]
        if edges:
            self._many(_INSERT_DEPENDENCY, edges)
        if places is not None:
            self._many(
                "INSERT INTO key_admitted (task_id, tenant_id, key) VALUES (?, ?, ?)",
                [(t.task_id, *key_of(t)) for t in places.admitted],
            )
            self._wait_for_keys(places.waiting)
        events = []
        for task, subtasks in tasks:
            changes.count(
                (task.tenant_id, task.task_type, task.model_name, task.template), None, task.status
            )
            events += new_task_events(task)
            changes.ready += [
                (s.kind, s.model_name, s.tenant_id)
                for s in subtasks
                if s.ready and s.status is Status.PENDING
            ]
        self._events(events, changes)

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
        kinds = sorted(set(taker.kinds))
        sql = _queue_head(
            len(kinds),
            len(taker.models) + 1 if taker.models else 0,
            len(taker.tenant_ids) if taker.tenant_ids is not None else -1,
            taker.task_id is not None,
        )
        arm: list[Any] = [sqlite_time(now)]
        if taker.models:
            arm += [*taker.models, ""]
        if taker.tenant_ids is not None:
            arm += list(taker.tenant_ids)
        if taker.task_id is not None:
            arm.append(taker.task_id)
        params: list[Any] = []
        for kind in kinds or [""]:
            params += ([kind] if kinds else []) + arm + [limit]
        heads = self.conn.execute(sql, [*params, limit]).fetchall()
        if not heads:
            return []
        picked = [row[0] for row in heads]
        before = {row[3]: row[4] for row in heads}
        leases = json.dumps([[sid, new_id()] for sid in picked])
        at = sqlite_time(now)
        rows = self._rows(
            "UPDATE subtasks SET status = 2, lease_id = i.lease, lease_expires_at = ?, "
            "worker_id = ?, attempt = attempt + 1, started_at = ?, updated_at = ? "
            "FROM (SELECT value->>0 AS id, value->>1 AS lease FROM json_each(?)) AS i "
            "WHERE subtasks.subtask_id = i.id AND subtasks.status = 1 RETURNING *",
            (sqlite_time(expires_at), worker_id, at, at, leases),
        )
        leased = [subtask_from_sqlite(row) for row in rows]
        order = {sid: n for n, sid in enumerate(picked)}
        leased.sort(key=lambda s: order[s.subtask_id])
        starts: dict[str, Subtask] = {}
        for s in leased:
            starts.setdefault(s.task_id, s)
        values = json.dumps([[tid, s.attempt] for tid, s in starts.items()])
        updated = self._rows(
            "UPDATE tasks SET status = 2, "
            "started_at = CASE WHEN status = 1 THEN ? ELSE started_at END, "
            "progress_message = CASE WHEN status = 1 THEN NULL "
            "ELSE 'attempt ' || i.attempt || ' started on ' || ? END, "
            "worker_id = ?, attempt = i.attempt, sequence = sequence + 1, updated_at = ? "
            "FROM (SELECT value->>0 AS id, value->>1 AS attempt FROM json_each(?)) AS i "
            "WHERE tasks.task_id = i.id AND tasks.status IN (1, 2) "
            "RETURNING task_id, tenant_id, status, sequence, progress, depends_on, "
            "task_type, model_name, template, concurrency_key",
            (at, worker_id, worker_id, at, values),
        )
        events = []
        depends: dict[str, tuple[str, ...]] = {}
        keyed: set[str] = set()
        for row in updated:
            task_id = row["task_id"]
            if row["concurrency_key"]:
                keyed.add(task_id)
            attempt = starts[task_id].attempt
            old = Status(before[task_id])
            changes.count(_key(row), old, Status.RUNNING)
            depends[task_id] = tuple(loads(row["depends_on"]) or ())
            events.append(
                started_event(
                    task_id,
                    row["tenant_id"],
                    row["sequence"],
                    row["progress"],
                    attempt=attempt,
                    worker_id=worker_id,
                    now=now,
                    first=old is Status.PENDING,
                )
            )
        self._events(events, changes)
        return [Taken(s, depends.get(s.task_id, ()), s.task_id in keyed) for s in leased]

    async def results_of(self, task_ids: Sequence[str]) -> dict[str, JSON | None]:
        if not task_ids:
            return {}
        rows = self.conn.execute(
            f"SELECT task_id, result FROM tasks WHERE task_id IN ({_marks(len(task_ids))})",
            list(task_ids),
        ).fetchall()
        return {task_id: loads(result) for task_id, result in rows}

    # -- while running ------------------------------------------------------------------------

    async def lock_tasks(self, task_ids: Iterable[str], subtask_ids: Iterable[str]) -> None:
        return None  # one writer: nothing to lock

    async def subtasks(self, subtask_ids: Sequence[str]) -> dict[str, Subtask]:
        ids = list(dict.fromkeys(subtask_ids))
        if not ids:
            return {}
        rows = self._rows(f"SELECT * FROM subtasks WHERE subtask_id IN ({_marks(len(ids))})", ids)
        return {row["subtask_id"]: subtask_from_sqlite(row) for row in rows}

    async def subtasks_of(self, task_id: str) -> list[Subtask]:
        rows = self._rows(
            "SELECT * FROM subtasks WHERE task_id = ? ORDER BY stage, created_at", (task_id,)
        )
        return [subtask_from_sqlite(row) for row in rows]

    async def extend_leases(
        self, leases: Sequence[tuple[str, str, datetime, float | None, str | None]], now: datetime
    ) -> list[Subtask]:
        values = json.dumps(
            [[sid, lid, sqlite_time(exp), p, tenant] for sid, lid, exp, p, tenant in leases]
        )
        rows = self._rows(
            "UPDATE subtasks SET lease_expires_at = i.expires, "
            "progress = coalesce(i.progress, subtasks.progress), updated_at = ? "
            "FROM (SELECT value->>0 AS id, value->>1 AS lease, value->>2 AS expires, "
            "value->>3 AS progress, value->>4 AS tenant FROM json_each(?)) AS i "
            "WHERE subtasks.subtask_id = i.id AND subtasks.status = 2 "
            "AND subtasks.lease_id = i.lease "
            "AND (i.tenant IS NULL OR subtasks.tenant_id = i.tenant) RETURNING *",
            (sqlite_time(now), values),
        )
        return [subtask_from_sqlite(row) for row in rows]

    async def progress_tasks(
        self, items: Sequence[Progress], now: datetime, changes: Changes
    ) -> None:
        events = []
        at = sqlite_time(now)
        for item in items:
            progress = item.progress
            if item.from_subtasks:
                (progress,) = self.conn.execute(
                    "SELECT avg(CASE WHEN status = 3 THEN 100.0 ELSE progress END) "
                    "FROM subtasks WHERE task_id = ?",
                    (item.task_id,),
                ).fetchone()
            statuses = [int(s) for s in item.only_if]
            rows = self._rows(
                "UPDATE tasks SET progress = coalesce(?, progress), "
                "progress_message = CASE WHEN ? THEN ? ELSE progress_message END, "
                "error = CASE WHEN ? THEN ? ELSE error END, "
                "error_code = CASE WHEN ? THEN ? ELSE error_code END, "
                "sequence = sequence + 1, updated_at = ? "
                f"WHERE task_id = ? AND status IN ({_marks(len(statuses))}) "
                "RETURNING task_id, tenant_id, status, sequence, progress",
                (
                    progress,
                    item.message is not None,
                    item.message,
                    item.error is not None,
                    item.error,
                    item.error is not None,
                    item.error_code,
                    at,
                    item.task_id,
                    *statuses,
                ),
            )
            for row in rows:
                events.append(
                    TaskEvent(
                        task_id=row["task_id"],
                        tenant_id=row["tenant_id"],
                        sequence=row["sequence"],
                        type=EventType.PROGRESS,
                        status=Status(row["status"]),
                        created_at=now,
                        progress=row["progress"],
                        message=item.message,
                        data=item.data,
                    )
                )
        self._events(events, changes)

    async def output_events(
        self, items: Sequence[tuple[str, str | None, JSON | None]], now: datetime, changes: Changes
    ) -> set[str]:
        per_task: dict[str, list[tuple[str | None, JSON | None]]] = {}
        for task_id, delta, data in items:
            per_task.setdefault(task_id, []).append((delta, data))
        events = []
        for task_id, outputs in per_task.items():
            row = self.conn.execute(
                "UPDATE tasks SET sequence = sequence + ?, updated_at = ? "
                "WHERE task_id = ? AND status = 2 RETURNING tenant_id, sequence, progress",
                (len(outputs), sqlite_time(now), task_id),
            ).fetchone()
            if row is None:
                continue
            tenant_id, last, progress = row
            for n, (delta, data) in enumerate(outputs):
                events.append(
                    TaskEvent(
                        task_id=task_id,
                        tenant_id=tenant_id,
                        sequence=last - len(outputs) + 1 + n,
                        type=EventType.OUTPUT,
                        status=Status.RUNNING,
                        created_at=now,
                        progress=progress,
                        output_delta=delta,
                        data=data,
                    )
                )
        self._events(events, changes)
        return {e.task_id for e in events}

    # -- finish -------------------------------------------------------------------------------

    async def complete(
        self, items: Sequence[Completion], now: datetime, changes: Changes
    ) -> tuple[list[Done], list[Task]]:
        done = self._complete_subtasks([item[:4] for item in items], now)
        usage = {item[0]: item[4] for item in items}
        ends = [
            TaskEnd(d.subtask.task_id, d.subtask.result, usage.get(d.subtask.subtask_id))
            for d in done
            if d.siblings == 0
        ]
        return done, self._end_tasks(Status.COMPLETED, ends, now, changes) if ends else []

    def _complete_subtasks(
        self, items: Sequence[tuple[str, str, JSON | None, str | None]], now: datetime
    ) -> list[Done]:
        at = sqlite_time(now)
        values = json.dumps([list(item) for item in items])
        rows = self._rows(
            "UPDATE subtasks SET status = 3, result = i.result, progress = 100.0, "
            "lease_id = NULL, lease_expires_at = NULL, updated_at = ?, completed_at = ? "
            "FROM (SELECT value->>0 AS id, value->>1 AS lease, value->>2 AS result, "
            "value->>3 AS tenant FROM json_each(?)) AS i "
            "WHERE subtasks.subtask_id = i.id AND subtasks.status = 2 "
            "AND subtasks.lease_id = i.lease "
            "AND (i.tenant IS NULL OR subtasks.tenant_id = i.tenant) "
            "RETURNING *, (SELECT count(*) - 1 FROM subtasks AS o "
            "WHERE o.task_id = subtasks.task_id) AS siblings, "
            "(SELECT status FROM tasks AS t WHERE t.task_id = subtasks.task_id) AS task_status",
            (at, at, values),
        )
        self._task_status.update((row["task_id"], row["task_status"]) for row in rows)
        return [Done(subtask_from_sqlite(row), siblings=row["siblings"]) for row in rows]

    async def complete_tasks(
        self, ends: Sequence[TaskEnd], now: datetime, changes: Changes
    ) -> list[Task]:
        return self._end_tasks(Status.COMPLETED, ends, now, changes)

    def _end_tasks(
        self,
        status: Status,
        ends: Sequence[TaskEnd],
        now: datetime,
        changes: Changes,
        reason: str | None = None,
    ) -> list[Task]:
        """Tasks still PENDING or RUNNING end (completed, failed or cancelled): one statement
        for them all, one terminal event each."""
        unique = list({end.task_id: end for end in ends}.values())
        if not unique:
            return []
        known = self._task_status
        if all(end.task_id in known for end in unique):
            before = {end.task_id: known[end.task_id] for end in unique}
        else:
            before = self._statuses(end.task_id for end in unique)
        at = sqlite_time(now)
        values = json.dumps(
            [
                [e.task_id, e.result, e.resource_usage, e.error, e.error_code, e.message]
                for e in unique
            ]
        )
        code = int(status)
        rows = self._rows(
            "UPDATE tasks SET status = ?1, "
            "result = CASE WHEN ?1 = 3 THEN i.result ELSE tasks.result END, "
            "progress = CASE WHEN ?1 = 3 THEN 100.0 ELSE tasks.progress END, "
            "resource_usage = CASE WHEN ?1 = 3 THEN coalesce(i.usage, tasks.resource_usage) "
            "ELSE tasks.resource_usage END, "
            "error = CASE WHEN ?1 = 3 THEN NULL WHEN ?1 = 4 THEN i.error ELSE tasks.error END, "
            "error_code = CASE WHEN ?1 = 3 THEN NULL WHEN ?1 = 4 THEN i.code "
            "ELSE tasks.error_code END, "
            "progress_message = CASE WHEN ?1 = 5 THEN ?2 ELSE NULL END, "
            "cancel_reason = CASE WHEN ?1 = 5 THEN ?3 ELSE tasks.cancel_reason END, "
            "cancelled_at = CASE WHEN ?1 = 5 THEN ?4 ELSE tasks.cancelled_at END, "
            "completed_at = ?4, updated_at = ?4, sequence = tasks.sequence + 1 "
            "FROM (SELECT value->>0 AS id, value->>1 AS result, value->>2 AS usage, "
            "value->>3 AS error, value->>4 AS code, value->>5 AS message "
            "FROM json_each(?5)) AS i "
            "WHERE tasks.task_id = i.id AND tasks.status IN (1, 2) RETURNING *",
            (
                code,
                f"cancelled: {reason}" if reason else "cancelled",
                reason or None,
                at,
                values,
            ),
        )
        messages = {e.task_id: e.message for e in unique}
        tasks = [task_from_sqlite(row) for row in rows]
        known.update((task.task_id, int(task.status)) for task in tasks)
        events = []
        for task in tasks:
            changes.count(
                (task.tenant_id, task.task_type, task.model_name, task.template),
                Status(before[task.task_id]),
                task.status,
            )
            events.append(
                event(
                    task,
                    EventType.STATUS_CHANGED,
                    now=now,
                    message=messages[task.task_id] or "completed",
                    with_task=True,
                )
            )
        self._events(events, changes)
        return tasks

    async def retry_subtasks(self, retries: Sequence[Retry], now: datetime) -> list[Subtask]:
        values = json.dumps(
            [
                [r.subtask_id, r.lease_id, r.error, r.error_code, sqlite_time(r.available_at)]
                for r in retries
            ]
        )
        rows = self._rows(
            "UPDATE subtasks SET status = 1, lease_id = NULL, lease_expires_at = NULL, "
            "worker_id = NULL, error = i.error, error_code = i.code, available_at = i.at, "
            "updated_at = ? "
            "FROM (SELECT value->>0 AS id, value->>1 AS lease, value->>2 AS error, "
            "value->>3 AS code, value->>4 AS at FROM json_each(?)) AS i "
            "WHERE subtasks.subtask_id = i.id AND subtasks.status = 2 "
            "AND subtasks.lease_id = i.lease RETURNING *",
            (sqlite_time(now), values),
        )
        return [subtask_from_sqlite(row) for row in rows]

    async def fail_subtasks(
        self, failures: Sequence[tuple[str, str, str, str]], now: datetime
    ) -> list[Subtask]:
        at = sqlite_time(now)
        rows = self._rows(
            "UPDATE subtasks SET status = 4, lease_id = NULL, lease_expires_at = NULL, "
            "error = i.error, error_code = i.code, updated_at = ?, completed_at = ? "
            "FROM (SELECT value->>0 AS id, value->>1 AS lease, value->>2 AS error, "
            "value->>3 AS code FROM json_each(?)) AS i "
            "WHERE subtasks.subtask_id = i.id AND subtasks.status = 2 "
            "AND subtasks.lease_id = i.lease RETURNING *",
            (at, at, json.dumps([list(f) for f in failures])),
        )
        return [subtask_from_sqlite(row) for row in rows]

    async def fail_tasks(
        self, ends: Sequence[TaskEnd], now: datetime, changes: Changes
    ) -> list[Task]:
        return self._end_tasks(Status.FAILED, ends, now, changes)

    async def end_subtasks(
        self, task_id: str, now: datetime, changes: Changes, reason: str
    ) -> list[Subtask]:
        rows = self._rows(
            "SELECT * FROM subtasks WHERE task_id = ? AND status IN (1, 2)", (task_id,)
        )
        ended = [subtask_from_sqlite(row) for row in rows]
        if ended:
            at = sqlite_time(now)
            self._run(
                "UPDATE subtasks SET status = 5, lease_id = NULL, lease_expires_at = NULL, "
                "updated_at = ?, completed_at = ? WHERE task_id = ? AND status IN (1, 2)",
                (at, at, task_id),
            )
            changes.stopped += [(s, reason) for s in stop_candidates(ended)]
        return ended

    async def cancel_task(
        self, task_id: str, reason: str, now: datetime, changes: Changes
    ) -> Task | None:
        end = TaskEnd(task_id, message=reason or "cancelled by client")
        cancelled = self._end_tasks(Status.CANCELLED, [end], now, changes, reason)
        return cancelled[0] if cancelled else None

    async def release_subtasks(
        self, leases: Sequence[tuple[str, str]], now: datetime, changes: Changes
    ) -> list[Subtask]:
        at = sqlite_time(now)
        rows = self._rows(
            "UPDATE subtasks SET status = 1, lease_id = NULL, lease_expires_at = NULL, "
            "worker_id = NULL, attempt = attempt - 1, available_at = ?, updated_at = ? "
            "FROM (SELECT value->>0 AS id, value->>1 AS lease FROM json_each(?)) AS i "
            "WHERE subtasks.subtask_id = i.id AND subtasks.status = 2 "
            "AND subtasks.lease_id = i.lease RETURNING *",
            (at, at, json.dumps([list(lease) for lease in leases])),
        )
        released = [subtask_from_sqlite(row) for row in rows]
        changes.ready += [(s.kind, s.model_name, s.tenant_id) for s in released]
        return released

    async def expired_leases(self, now: datetime, limit: int) -> list[Subtask]:
        rows = self._rows(
            "SELECT * FROM subtasks WHERE status = 2 AND lease_expires_at < ? "
            "ORDER BY lease_expires_at LIMIT ?",
            (sqlite_time(now), limit),
        )
        return [subtask_from_sqlite(row) for row in rows]

    async def leases_of_workers(self, prefixes: Sequence[str]) -> list[Subtask]:
        found: list[Subtask] = []
        for prefix in prefixes:
            rows = self._rows(
                "SELECT * FROM subtasks WHERE status = 2 AND substr(worker_id, 1, ?) = ?",
                (len(prefix), prefix),
            )
            found += [subtask_from_sqlite(row) for row in rows]
        return found

    # -- stages and dependencies --------------------------------------------------------------

    async def mark_ready(
        self,
        subtasks: Sequence[Subtask],
        now: datetime,
        changes: Changes,
        inputs: dict[str, JSON] | None = None,
    ) -> None:
        if not subtasks:
            return
        at = sqlite_time(now)
        new_inputs = inputs or {}
        self._many(
            "UPDATE subtasks SET ready = 1, available_at = ?, updated_at = ?, "
            "input = CASE WHEN ? THEN ? ELSE input END WHERE subtask_id = ? AND status = 1",
            [
                (
                    at,
                    at,
                    s.subtask_id in new_inputs,
                    dumps(new_inputs.get(s.subtask_id)),
                    s.subtask_id,
                )
                for s in subtasks
            ],
        )
        changes.ready += [(s.kind, s.model_name, s.tenant_id) for s in subtasks]

    async def delay_tasks(self, delays: Sequence[tuple[str, datetime]]) -> None:
        self._many(
            "INSERT INTO delayed_tasks (task_id, run_at) VALUES (?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET run_at = excluded.run_at",
            [(task_id, sqlite_time(at)) for task_id, at in delays],
        )

    async def due_tasks(self, now: datetime, limit: int) -> list[str]:
        rows = self.conn.execute(
            "DELETE FROM delayed_tasks WHERE task_id IN (SELECT task_id FROM delayed_tasks "
            "WHERE run_at <= ? ORDER BY run_at LIMIT ?) RETURNING task_id",
            (sqlite_time(now), limit),
        ).fetchall()
        return [row[0] for row in rows]

    async def next_delayed(self) -> datetime | None:
        row = self.conn.execute("SELECT min(run_at) FROM delayed_tasks").fetchone()
        return parse_sqlite_time(row[0]) if row else None

    async def claim_keys(
        self, tasks: Sequence[Task], limits: Sequence[tuple[str, str, int | None]]
    ) -> KeyPlaces:
        self._set_key_limits(limits)
        new = Counter(key_of(t) for t in tasks)
        grants: dict[Key, int] = {}
        recount: list[Key] = []
        for (tenant_id, key), count in new.items():
            # One writer: the key's room and whether its line is empty, read as they are.
            room, waits = self.conn.execute(
                "SELECT (SELECT max_running FROM concurrency_keys "
                "WHERE tenant_id = ?1 AND key = ?2) - (SELECT count(*) FROM key_admitted "
                "WHERE tenant_id = ?1 AND key = ?2), EXISTS (SELECT 1 FROM key_waiting "
                "WHERE tenant_id = ?1 AND key = ?2)",
                (tenant_id, key),
            ).fetchone()
            grants[(tenant_id, key)] = 0 if waits else max(0, min(count, room))
            if waits and room > 0:
                recount.append((tenant_id, key))
        return KeyPlaces.granted(tasks, grants, recount)

    async def line_up(self, tasks: Sequence[Task], now: datetime, changes: Changes) -> None:
        if tasks:
            self._wait_for_keys(tasks)
            await self.admit_keys(sorted({key_of(t) for t in tasks}), now, changes)

    async def leave_keys(self, task_ids: Sequence[str], now: datetime, changes: Changes) -> None:
        ids = list(dict.fromkeys(task_ids))
        marks = _marks(len(ids))
        self._run(f"DELETE FROM key_waiting WHERE task_id IN ({marks})", ids)
        rows = self.conn.execute(
            f"DELETE FROM key_admitted WHERE task_id IN ({marks}) RETURNING tenant_id, key", ids
        ).fetchall()
        await self.admit_keys(sorted({(row[0], row[1]) for row in rows}), now, changes)

    def _set_key_limits(self, limits: Sequence[tuple[str, str, int | None]]) -> None:
        kept = [(tenant, key) for tenant, key, limit in limits if limit is None]
        given = [(tenant, key, limit) for tenant, key, limit in limits if limit is not None]
        if kept:
            self._many(
                "INSERT INTO concurrency_keys (tenant_id, key, max_running) VALUES (?, ?, 1) "
                "ON CONFLICT (tenant_id, key) DO NOTHING",
                kept,
            )
        if given:
            self._many(
                "INSERT INTO concurrency_keys (tenant_id, key, max_running) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id, key) DO UPDATE SET max_running = excluded.max_running",
                given,
            )

    def _wait_for_keys(self, tasks: Sequence[Task]) -> None:
        self._many(
            "INSERT INTO key_waiting (task_id, tenant_id, key, priority, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_id) DO NOTHING",
            [(t.task_id, *key_of(t), t.priority, sqlite_time(t.created_at)) for t in tasks],
        )

    async def admit_keys(self, keys: Sequence[Key], now: datetime, changes: Changes) -> None:
        admitted: list[tuple[str, str, str]] = []
        for tenant_id, key in keys:
            # One statement: the key's room and the head of its line (one writer: no race).
            rows = self.conn.execute(
                "DELETE FROM key_waiting WHERE task_id IN (SELECT task_id FROM key_waiting "
                "WHERE tenant_id = ?1 AND key = ?2 ORDER BY priority DESC, created_at, task_id "
                "LIMIT max(0, coalesce((SELECT max_running FROM concurrency_keys "
                "WHERE tenant_id = ?1 AND key = ?2), 0) - (SELECT count(*) FROM key_admitted "
                "WHERE tenant_id = ?1 AND key = ?2))) RETURNING task_id",
                (tenant_id, key),
            ).fetchall()
            admitted += [(row[0], tenant_id, key) for row in rows]
        if admitted:
            self._many(
                "INSERT INTO key_admitted (task_id, tenant_id, key) VALUES (?, ?, ?)", admitted
            )
        self._ready_first_stages([task_id for task_id, _, _ in admitted], now, changes)

    def _ready_first_stages(self, task_ids: Sequence[str], now: datetime, changes: Changes) -> None:
        """Admitted tasks have run nothing yet: their lowest pending stage is their first."""
        if not task_ids:
            return
        at = sqlite_time(now)
        rows = self.conn.execute(
            "UPDATE subtasks SET ready = 1, available_at = ?, updated_at = ? "
            f"WHERE task_id IN ({_marks(len(task_ids))}) AND status = 1 AND NOT ready "
            "AND stage = (SELECT min(s.stage) FROM subtasks AS s "
            "WHERE s.task_id = subtasks.task_id AND s.status = 1) "
            "RETURNING kind, model_name, tenant_id",
            (at, at, *task_ids),
        ).fetchall()
        changes.ready += [(row[0], row[1], row[2]) for row in rows]

    async def dependents_of(self, task_ids: Sequence[str]) -> dict[str, list[str]]:
        if not task_ids:
            return {}
        rows = self.conn.execute(
            "SELECT depends_on_id, task_id FROM task_dependencies "
            f"WHERE depends_on_id IN ({_marks(len(task_ids))})",
            list(task_ids),
        ).fetchall()
        found: dict[str, list[str]] = {}
        for depends_on_id, task_id in rows:
            found.setdefault(depends_on_id, []).append(task_id)
        return found

    async def tasks(self, task_ids: Sequence[str], *, lock: bool = False) -> dict[str, Task]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        rows = self._rows(f"SELECT * FROM tasks WHERE task_id IN ({_marks(len(ids))})", ids)
        return {row["task_id"]: task_from_sqlite(row) for row in rows}

    # -- the end of a batch -------------------------------------------------------------------

    async def settle(self, changes: Changes) -> None:
        """Writes the batch's events and its folded count deltas (two statements)."""
        if changes.events:
            self._many(
                _INSERT_EVENT,
                [
                    (
                        e.task_id,
                        e.tenant_id,
                        e.sequence,
                        int(e.type),
                        int(e.status),
                        e.progress,
                        e.message,
                        e.output_delta,
                        dumps(e.data),
                        sqlite_time(e.created_at),
                    )
                    for e in changes.events
                ],
            )
        rows = [(*key, delta) for key, delta in changes.deltas.items() if delta]
        if rows:
            self._many(_INSERT_DELTA, rows)


@cache
def _queue_head(kinds: int, models: int, tenants: int, by_task: bool) -> str:
    """The statement reading the head of the queue: one arm per kind, each reading its part
    of the queue index in take order (merging a few heads is cheaper than sorting every
    queued row of several kinds), merged and cut to the limit."""
    where = "status = 1 AND ready AND available_at <= ?"
    if models:
        where += f" AND model_name IN ({_marks(models)})"
    if tenants >= 0:
        where += f" AND tenant_id IN ({_marks(tenants)})" if tenants else " AND 0"
    if by_task:
        where += " AND task_id = ?"
    order = "ORDER BY priority DESC, turn, subtask_id"
    # With each candidate, its task's status (the take changes it; SQLite's RETURNING only
    # shows new values).
    arm = (
        "SELECT subtask_id, priority, turn, task_id, "
        "(SELECT status FROM tasks AS t WHERE t.task_id = subtasks.task_id) AS task_status "
        "FROM subtasks WHERE {kind}"
    ) + where
    arms = [
        "SELECT * FROM (" + arm.format(kind="kind = ? AND " if kinds else "") + f" {order} LIMIT ?)"
        for _ in range(max(kinds, 1))
    ]
    return " UNION ALL ".join(arms) + f" {order} LIMIT ?"
