"""The queue's transitions on PostgreSQL, with asyncpg on connections of their own.

Each transition is one statement for the whole batch: the batch's values travel as arrays
(``unnest``), and data-modifying CTEs change the subtasks, the tasks and append the events
in the same round trip. asyncpg prepares each statement once per connection.

Lock order, kept by every writer (these transitions and the SQLAlchemy ones alike): a task's
row before its subtasks' rows, tasks in id order. A batch takes the rows of every task it
will change first, in one statement (:meth:`PostgresQueue.lock_tasks`). Takes are the
exception that never waits: they lock runnable subtasks and their tasks with ``SKIP LOCKED``
and leave busy ones to the next take. Quotas are exact across writers and replicas: a
create holds a transaction-scoped advisory lock per tenant while it counts.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from taskorch.domain.values import (
    JSON,
    EventType,
    Status,
    Subtask,
    Task,
    TaskEvent,
)
from taskorch.store import notices
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
from taskorch.store.queue.rows import TASK_COLUMNS, subtask_from, task_from

log = structlog.get_logger(__name__)

CONFLICT_RETRIES = 5
CONFLICT_PAUSE_SECONDS = 0.01
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
STATEMENT_SQLSTATE_CLASSES = frozenset({"21", "22", "23", "2F", "42", "0A", "P0"})  # as database.py
_QUOTA_LOCK = "taskorch-quota:"


def _subtask(record: Any) -> Subtask:
    return subtask_from(record.__getitem__)


def _task(record: Any) -> Task:
    return task_from(record.__getitem__)


def _ended_task(record: Any) -> Task:
    """The task a completion ended, from its columns beside the subtask's (``t_``)."""
    return task_from(lambda column: record["t_" + column])


def _key(record: Any) -> CountKey:
    return (record["tenant_id"], record["task_type"], record["model_name"], record["template"])


def _turn_ranks(subtasks: Sequence[Subtask]) -> list[int]:
    """Each new subtask's rank (1, 2, ...) among the batch's subtasks of its tenant, kind and
    priority: how many steps after its tenant's last queued turn it goes."""
    seen: dict[tuple[str, str, int], int] = {}
    ranks = []
    for s in subtasks:
        key = (s.tenant_id, s.kind, s.priority)
        seen[key] = seen.get(key, 0) + 1
        ranks.append(seen[key])
    return ranks


def _stored(changes: Changes, record: Any) -> None:
    first, last = record["first_event"], record["last_event"]
    if first is not None:
        changes.stored((first, last))


# -- statements ---------------------------------------------------------------------------------

# A new task comes PENDING, or started or completed by the engine (work handed to an idle
# in-process worker as it is created): its rows then carry their lease, result and times
# ($53-$65), and its events ($66-$74) are those of every step it passed.
_INSERT_TASKS = """
WITH new_tasks AS (
    INSERT INTO tasks (task_id, tenant_id, status, task_type, model_name, template, text,
        input_data, parameters, priority, depends_on, progress, progress_message, request_id,
        attempt, max_attempts, timeout_seconds, sequence, created_at, updated_at, run_at,
        concurrency_key, result, resource_usage, worker_id, started_at, completed_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[]::jsonb[], $9::text[]::jsonb[], $10::int2[],
        $11::text[]::jsonb[],
        $12::float8[], $13::text[], $14::text[], $15::int4[], $16::int4[], $17::float8[],
        $18::int4[], $19::timestamptz[], $58::timestamptz[], $40::timestamptz[], $41::text[],
        $53::text[]::jsonb[], $54::text[]::jsonb[], $55::text[], $56::timestamptz[],
        $57::timestamptz[])
), new_subtasks AS (
    INSERT INTO subtasks (subtask_id, task_id, tenant_id, kind, model_name, name, stage,
        input, info, status, progress, attempt, max_attempts, priority, ready, available_at,
        timeout_seconds, created_at, updated_at, turn, result, lease_id, lease_expires_at,
        worker_id, started_at, completed_at)
    SELECT s.subtask_id, s.task_id, s.tenant_id, s.kind, s.model_name, s.name, s.stage,
        s.input, s.info, s.status, s.progress, s.attempt, s.max_attempts, s.priority, s.ready,
        s.available_at, s.timeout_seconds, s.created_at, s.updated_at,
        -- Its turn (store/queue's Turns): after its tenant's last queued turn of the kind and
        -- priority, or after the queue's head, by its rank among the batch's rows of that
        -- tenant, kind and priority (from the batch's time, $44, when the queue is empty);
        -- step 0 is first come, first served.
        CASE WHEN s.step = 0 THEN extract(epoch FROM s.created_at) ELSE coalesce(
            (SELECT q.turn FROM subtasks q WHERE q.tenant_id = s.tenant_id
                AND q.kind = s.kind AND q.priority = s.priority AND q.status = 1 AND q.ready
                ORDER BY q.turn DESC LIMIT 1),
            (SELECT q.turn FROM subtasks q WHERE q.kind = s.kind AND q.priority = s.priority
                AND q.status = 1 AND q.ready ORDER BY q.turn LIMIT 1),
            $44::float8) + s.rank * s.step END,
        s.result, s.lease_id, s.lease_expires_at, s.worker_id, s.started_at, s.completed_at
    FROM unnest($20::text[], $21::text[], $22::text[],
        $23::text[], $24::text[], $25::text[], $26::int4[], $27::text[]::jsonb[],
        $28::text[]::jsonb[],
        $29::int2[], $30::float8[], $31::int4[], $32::int4[], $33::int2[], $34::bool[],
        $35::timestamptz[], $36::float8[], $37::timestamptz[], $42::float8[], $43::int4[],
        $65::timestamptz[], $59::text[]::jsonb[], $60::text[], $61::timestamptz[],
        $62::text[], $63::timestamptz[], $64::timestamptz[])
        AS s(subtask_id, task_id, tenant_id, kind, model_name, name, stage, input, info,
            status, progress, attempt, max_attempts, priority, ready, available_at,
            timeout_seconds, created_at, step, rank, updated_at, result, lease_id,
            lease_expires_at, worker_id, started_at, completed_at)
), new_edges AS (
    INSERT INTO task_dependencies (task_id, depends_on_id)
    SELECT * FROM unnest($38::text[], $39::text[])
), new_admitted AS (
    -- Keyed tasks' places (claim_keys): admitted, or waiting in their key's line.
    INSERT INTO key_admitted (task_id, tenant_id, key)
    SELECT * FROM unnest($45::text[], $46::text[], $47::text[])
), new_waiting AS (
    INSERT INTO key_waiting (task_id, tenant_id, key, priority, created_at)
    SELECT * FROM unnest($48::text[], $49::text[], $50::text[], $51::int2[], $52::timestamptz[])
), new_events AS (
    INSERT INTO task_events (task_id, tenant_id, sequence, type, status, progress, message,
        data, created_at)
    SELECT * FROM unnest($66::text[], $67::text[], $68::int4[], $69::int2[], $70::int2[],
        $71::float8[], $72::text[], $73::text[]::jsonb[], $74::timestamptz[])
    RETURNING event_id
)
SELECT min(event_id) AS first_event, max(event_id) AS last_event FROM new_events
"""

_TAKE = """
WITH candidates AS (
    SELECT c.subtask_id, c.task_id, c.priority, c.turn
    FROM unnest($1::text[]) AS k(kind)
    CROSS JOIN LATERAL (
        SELECT s.subtask_id, s.task_id, s.priority, s.turn FROM subtasks s
        WHERE s.kind = k.kind AND s.status = 1 AND s.ready AND s.available_at <= $2
          AND ($3::text[] IS NULL OR s.model_name = ANY($3::text[]))
          AND ($4::text[] IS NULL OR s.tenant_id = ANY($4::text[]))
          AND ($5::text IS NULL OR s.task_id = $5::text)
        ORDER BY s.priority DESC, s.turn, s.subtask_id
        LIMIT $6
        FOR UPDATE OF s SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.turn, c.subtask_id
    LIMIT $6
), locked AS (
    SELECT t.task_id, t.status AS old_status FROM tasks t
    WHERE t.task_id IN (SELECT task_id FROM candidates) AND t.status IN (1, 2)
    FOR UPDATE OF t SKIP LOCKED
), leased AS (
    UPDATE subtasks s SET status = 2, lease_id = gen_random_uuid()::text,
        lease_expires_at = $7, worker_id = $8, attempt = s.attempt + 1, started_at = $2,
        updated_at = $2
    FROM candidates c
    WHERE s.subtask_id = c.subtask_id AND c.task_id IN (SELECT task_id FROM locked)
    RETURNING s.*, c.priority AS take_priority, c.turn AS take_turn
), first_lease AS (
    SELECT DISTINCT ON (task_id) task_id, attempt FROM leased ORDER BY task_id, attempt DESC
), started AS (
    UPDATE tasks t SET status = 2,
        started_at = CASE WHEN t.status = 1 THEN $2 ELSE t.started_at END,
        progress_message = CASE WHEN t.status = 1 THEN NULL
            ELSE 'attempt ' || f.attempt || ' started on ' || $8 END,
        worker_id = $8, attempt = f.attempt, sequence = t.sequence + 1, updated_at = $2
    FROM first_lease f, locked l
    WHERE t.task_id = f.task_id AND l.task_id = f.task_id
    RETURNING t.task_id, t.tenant_id, t.sequence, t.progress, t.depends_on, t.task_type,
        t.model_name, t.template, t.concurrency_key, l.old_status, f.attempt AS task_attempt
), new_events AS (
    INSERT INTO task_events (task_id, tenant_id, sequence, type, status, progress, message,
        data, created_at)
    SELECT task_id, tenant_id, sequence, CASE WHEN old_status = 1 THEN 2 ELSE 3 END, 2,
        progress, 'attempt ' || task_attempt || ' started on ' || $8,
        jsonb_build_object('attempt', task_attempt, 'worker_id', $8::text), $2
    FROM started
    RETURNING event_id
), span AS (
    SELECT min(event_id) AS first_event, max(event_id) AS last_event FROM new_events
)
SELECT l.*, st.sequence AS task_sequence, st.progress AS task_progress,
    st.depends_on AS task_depends_on, st.task_type, st.model_name AS task_model_name,
    st.template, st.concurrency_key AS task_concurrency_key, st.old_status, st.task_attempt,
    span.first_event, span.last_event
FROM leased l JOIN started st ON st.task_id = l.task_id CROSS JOIN span
ORDER BY l.take_priority DESC, l.take_turn, l.subtask_id
"""

# Concurrency keys. A key's row counts its admitted and waiting tasks (key_admitted and
# key_waiting hold them): a statement that locks the row (an UPDATE, ON CONFLICT DO UPDATE)
# reads its newest version, committed or not when the statement began, so a key's room is
# known and taken in the one statement that locks it.

# One round trip, before new tasks are inserted: their keys get their limits (a given one
# replaces the key's, NULL keeps it, a new key gets 1) and are locked, in one order so that
# replicas lock alike, and each key admits its new tasks while it has room and nobody waits
# in its line; the rest wait. A key's admitted count is the new tasks it admitted
# (new - waiting, as its line was empty, or 0). A key whose line has room afterwards (its
# limit raised while tasks waited) is admitted from after the insert.
_CLAIM_KEYS = """
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[])
        AS g(tenant_id, key, max_running, new)
)
INSERT INTO concurrency_keys AS c (tenant_id, key, max_running, admitted, waiting)
SELECT tenant_id, key, coalesce(max_running, 1), least(new, coalesce(max_running, 1)),
    new - least(new, coalesce(max_running, 1))
FROM given ORDER BY tenant_id, key
ON CONFLICT (tenant_id, key) DO UPDATE SET (max_running, admitted, waiting) = (
    SELECT x.max_running, c.admitted + y.taken, c.waiting + x.new - y.taken
    FROM (SELECT coalesce(g.max_running, c.max_running) AS max_running, g.new FROM given g
          WHERE g.tenant_id = excluded.tenant_id AND g.key = excluded.key) AS x
    CROSS JOIN LATERAL (SELECT CASE WHEN c.waiting > 0 THEN 0
        ELSE greatest(0, least(x.new, x.max_running - c.admitted)) END AS taken) AS y)
RETURNING tenant_id, key, waiting, waiting > 0 AND admitted < max_running AS room
"""

# One round trip: tasks held back until now join their keys' lines, which count them and
# are locked (in one order).
_LINE_UP = """
WITH waiting AS (
    INSERT INTO key_waiting (task_id, tenant_id, key, priority, created_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::timestamptz[])
    ON CONFLICT (task_id) DO NOTHING
    RETURNING tenant_id, key
), joined AS (
    SELECT tenant_id, key, count(*) AS n FROM waiting GROUP BY tenant_id, key
), locked AS (
    SELECT c.tenant_id, c.key FROM concurrency_keys c
    WHERE (c.tenant_id, c.key) IN (SELECT tenant_id, key FROM unnest($2::text[], $3::text[]))
    ORDER BY c.tenant_id, c.key
    FOR UPDATE
)
UPDATE concurrency_keys c SET waiting = c.waiting + j.n
FROM joined j
WHERE c.tenant_id = j.tenant_id AND c.key = j.key
  AND (c.tenant_id, c.key) IN (SELECT tenant_id, key FROM locked)
"""

# One round trip: ended tasks leave their keys, whose counts drop (the rows locked in one
# order); the keys whose line now has room are returned.
_LEAVE_KEYS = """
WITH waited AS (
    DELETE FROM key_waiting WHERE task_id = ANY($1::text[]) RETURNING tenant_id, key
), held AS (
    DELETE FROM key_admitted WHERE task_id = ANY($1::text[]) RETURNING tenant_id, key
), left_keys AS (
    SELECT tenant_id, key, count(*) FILTER (WHERE admitted) AS admitted,
        count(*) FILTER (WHERE NOT admitted) AS waiting
    FROM (SELECT tenant_id, key, true AS admitted FROM held
          UNION ALL SELECT tenant_id, key, false FROM waited) AS l
    GROUP BY tenant_id, key
), locked AS (
    SELECT c.tenant_id, c.key FROM concurrency_keys c
    WHERE (c.tenant_id, c.key) IN (SELECT tenant_id, key FROM left_keys)
    ORDER BY c.tenant_id, c.key
    FOR UPDATE
)
UPDATE concurrency_keys c SET admitted = greatest(0, c.admitted - l.admitted),
    waiting = greatest(0, c.waiting - l.waiting)
FROM left_keys l
WHERE c.tenant_id = l.tenant_id AND c.key = l.key
  AND (c.tenant_id, c.key) IN (SELECT tenant_id, key FROM locked)
RETURNING c.tenant_id, c.key, c.waiting > 0 AND c.admitted < c.max_running AS room
"""

# Under the keys' locks, a new statement (a new snapshot): the admitted tasks are counted
# afresh (the key's count is set from them) and the room they leave is filled from the heads
# of the lines; a line that filled less than its room is empty.
_ADMIT = """
WITH k AS (
    SELECT c.tenant_id, c.key, c.max_running, (SELECT count(*) FROM key_admitted a
        WHERE a.tenant_id = c.tenant_id AND a.key = c.key) AS held
    FROM unnest($1::text[], $2::text[]) AS i(tenant_id, key)
    JOIN concurrency_keys c ON c.tenant_id = i.tenant_id AND c.key = i.key
), picked AS (
    SELECT w.task_id, w.tenant_id, w.key FROM k CROSS JOIN LATERAL (
        SELECT task_id, tenant_id, key FROM key_waiting
        WHERE key_waiting.tenant_id = k.tenant_id AND key_waiting.key = k.key
        ORDER BY priority DESC, created_at, task_id
        LIMIT greatest(0, k.max_running - k.held)
    ) AS w
), head AS (
    DELETE FROM key_waiting WHERE task_id IN (SELECT task_id FROM picked)
), added AS (
    INSERT INTO key_admitted (task_id, tenant_id, key) SELECT * FROM picked
), counted AS (
    UPDATE concurrency_keys c SET admitted = k.held + coalesce(p.n, 0),
        waiting = CASE WHEN coalesce(p.n, 0) < greatest(0, k.max_running - k.held) THEN 0
            ELSE greatest(0, c.waiting - coalesce(p.n, 0)) END
    FROM k LEFT JOIN (SELECT tenant_id, key, count(*) AS n FROM picked
                      GROUP BY tenant_id, key) AS p USING (tenant_id, key)
    WHERE c.tenant_id = k.tenant_id AND c.key = k.key
), locked AS (
    -- The admitted tasks' rows, which adding a subtask (core/subtasks.py) locks while it
    -- decides whether the new work is held back: an add that decided "held" commits before
    -- the statement below reads the tasks' work, and one that comes later sees them admitted.
    SELECT task_id FROM tasks WHERE task_id IN (SELECT task_id FROM picked)
    ORDER BY task_id FOR UPDATE
)
SELECT task_id FROM locked
"""

_READY_FIRST_STAGES = """
UPDATE subtasks s SET ready = true, available_at = $2, updated_at = $2
WHERE s.task_id = ANY($1::text[]) AND s.status = 1 AND NOT s.ready
  AND s.stage = (SELECT min(f.stage) FROM subtasks f WHERE f.task_id = s.task_id AND f.status = 1)
RETURNING s.kind, s.model_name, s.tenant_id
"""

_LOCK_TASKS = """
SELECT task_id FROM tasks
WHERE task_id = ANY($1::text[]
    || ARRAY(SELECT task_id FROM subtasks WHERE subtask_id = ANY($2::text[])))
ORDER BY task_id
FOR UPDATE
"""

_EXTEND = """
UPDATE subtasks s SET lease_expires_at = i.expires,
    progress = coalesce(i.progress, s.progress), updated_at = $1
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::float8[], $6::text[])
    AS i(id, lease, expires, progress, tenant)
WHERE s.subtask_id = i.id AND s.status = 2 AND s.lease_id = i.lease
  AND (i.tenant IS NULL OR s.tenant_id = i.tenant)
RETURNING s.*
"""

_PROGRESS = """
WITH i AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::bool[], $5::float8[], $6::bool[],
        $7::text[], $8::bool[], $9::text[], $10::text[]::jsonb[], $11::int4[])
        AS i(task_id, message, set_message, progress, from_subtasks, error, set_error, code,
            data, states)
), changed AS (
    UPDATE tasks t SET
        progress = CASE WHEN i.from_subtasks THEN coalesce(
                (SELECT avg(CASE WHEN o.status = 3 THEN 100.0 ELSE o.progress END)
                 FROM subtasks o WHERE o.task_id = t.task_id), t.progress)
            ELSE coalesce(i.progress, t.progress) END,
        progress_message = CASE WHEN i.set_message THEN i.message ELSE t.progress_message END,
        error = CASE WHEN i.set_error THEN i.error ELSE t.error END,
        error_code = CASE WHEN i.set_error THEN i.code ELSE t.error_code END,
        sequence = t.sequence + 1, updated_at = $1
    FROM i
    WHERE t.task_id = i.task_id AND ((1 << t.status) & i.states) <> 0
    RETURNING t.task_id, t.tenant_id, t.status, t.sequence, t.progress, i.message, i.data
), new_events AS (
    INSERT INTO task_events (task_id, tenant_id, sequence, type, status, progress, message,
        data, created_at)
    SELECT task_id, tenant_id, sequence, 3, status, progress, message, data, $1 FROM changed
    RETURNING event_id
), span AS (
    SELECT min(event_id) AS first_event, max(event_id) AS last_event FROM new_events
)
SELECT changed.*, span.* FROM changed CROSS JOIN span
"""

_OUTPUT = """
WITH i AS (
    SELECT * FROM unnest($2::text[], $3::int4[]) AS i(task_id, n)
), changed AS (
    UPDATE tasks t SET sequence = t.sequence + i.n, updated_at = $1
    FROM i WHERE t.task_id = i.task_id AND t.status = 2
    RETURNING t.task_id, t.tenant_id, t.sequence, t.progress, i.n
), new_events AS (
    INSERT INTO task_events (task_id, tenant_id, sequence, type, status, progress,
        output_delta, data, created_at)
    SELECT o.task_id, c.tenant_id, c.sequence - c.n + o.k, 4, 2, c.progress, o.delta,
        o.data, $1
    FROM unnest($4::text[], $5::int4[], $6::text[], $7::text[]::jsonb[])
        AS o(task_id, k, delta, data)
    JOIN changed c ON c.task_id = o.task_id
    RETURNING event_id
), span AS (
    SELECT min(event_id) AS first_event, max(event_id) AS last_event FROM new_events
)
SELECT changed.*, span.* FROM changed CROSS JOIN span
"""

# Completions and the ends of the tasks they finish, in one round trip. The batch's task
# locks ($6, $7: see lock_tasks) are taken first, whole (an InitPlan counts them before the
# first row is changed), in the one order; the subtasks complete; a task whose only subtask
# completed ends COMPLETED with its result (as _END_TASKS does for status 3, its event
# inserted). One statement sees one snapshot, so "no other subtask is unfinished" is the
# sibling count of the completion (the task is locked: no subtask is added meanwhile).
# Each completed subtask's row comes back with its ended task's columns (``t_``) or NULLs.
_COMPLETE = f"""
WITH locked AS (
    SELECT task_id FROM tasks
    WHERE task_id = ANY($6::text[]
        || ARRAY(SELECT task_id FROM subtasks WHERE subtask_id = ANY($7::text[])))
    ORDER BY task_id
    FOR UPDATE
), done AS (
    UPDATE subtasks s SET status = 3, result = i.result, progress = 100.0, lease_id = NULL,
        lease_expires_at = NULL, updated_at = $1, completed_at = $1
    FROM unnest($2::text[], $3::text[], $4::text[]::jsonb[], $5::text[], $8::text[]::jsonb[])
        AS i(id, lease, result, tenant, usage)
    WHERE (SELECT count(*) FROM locked) >= 0
      AND s.subtask_id = i.id AND s.status = 2 AND s.lease_id = i.lease
      AND (i.tenant IS NULL OR s.tenant_id = i.tenant)
    RETURNING s.*, i.usage AS usage,
        (SELECT count(*) FROM subtasks o WHERE o.task_id = s.task_id) - 1 AS siblings
), before AS (
    SELECT t.task_id, t.status FROM tasks t JOIN done ON done.task_id = t.task_id
    WHERE done.siblings = 0 AND t.status IN (1, 2)
), ended AS (
    UPDATE tasks t SET status = 3, result = done.result, progress = 100.0,
        resource_usage = coalesce(done.usage, t.resource_usage), error = NULL,
        error_code = NULL, progress_message = NULL, completed_at = $1, updated_at = $1,
        sequence = t.sequence + 1
    FROM done, before
    WHERE t.task_id = done.task_id AND before.task_id = done.task_id
    RETURNING t.*, before.status AS old_status,
        EXISTS (SELECT 1 FROM task_dependencies d WHERE d.depends_on_id = t.task_id)
            AS has_dependents
), new_events AS (
    INSERT INTO task_events (task_id, tenant_id, sequence, type, status, progress, message,
        created_at)
    SELECT task_id, tenant_id, sequence, 2, status, progress, 'completed', $1 FROM ended
    RETURNING event_id
), span AS (
    SELECT min(event_id) AS first_event, max(event_id) AS last_event FROM new_events
)
SELECT done.*, {", ".join(f"ended.{c} AS t_{c}" for c in TASK_COLUMNS)},
    ended.old_status, ended.has_dependents, span.*
FROM done LEFT JOIN ended ON ended.task_id = done.task_id CROSS JOIN span
"""

# The task ends (completed, failed, cancelled) share one shape: $4 is the new status.
_END_TASKS = """
WITH i AS (
    SELECT * FROM unnest($2::text[], $3::text[]::jsonb[], $5::text[]::jsonb[], $6::text[],
        $7::text[], $8::text[], $9::text[])
        AS i(task_id, result, usage, error, code, message, reason)
), before AS (
    SELECT t.task_id, t.status FROM tasks t JOIN i ON i.task_id = t.task_id
    WHERE t.status IN (1, 2)
), ended AS (
    UPDATE tasks t SET status = $4::int2,
        result = CASE WHEN $4::int2 = 3 THEN i.result ELSE t.result END,
        progress = CASE WHEN $4::int2 = 3 THEN 100.0 ELSE t.progress END,
        resource_usage = CASE WHEN $4::int2 = 3 THEN coalesce(i.usage, t.resource_usage)
            ELSE t.resource_usage END,
        error = CASE WHEN $4::int2 = 3 THEN NULL WHEN $4::int2 = 4 THEN i.error ELSE t.error END,
        error_code = CASE WHEN $4::int2 = 3 THEN NULL WHEN $4::int2 = 4 THEN i.code
            ELSE t.error_code END,
        progress_message = CASE WHEN $4::int2 = 5 THEN
            CASE WHEN i.reason IS NULL THEN 'cancelled' ELSE 'cancelled: ' || i.reason END
            ELSE NULL END,
        cancel_reason = CASE WHEN $4::int2 = 5 THEN i.reason ELSE t.cancel_reason END,
        cancelled_at = CASE WHEN $4::int2 = 5 THEN $1 ELSE t.cancelled_at END,
        completed_at = $1, updated_at = $1, sequence = t.sequence + 1
    FROM i, before
    WHERE t.task_id = i.task_id AND before.task_id = i.task_id
      -- A task completes only with all its work done (a subtask added meanwhile runs first).
      AND ($4::int2 <> 3 OR NOT EXISTS (
          SELECT 1 FROM subtasks o WHERE o.task_id = t.task_id AND o.status <> 3))
    RETURNING t.*, before.status AS old_status, i.message AS event_message,
        EXISTS (SELECT 1 FROM task_dependencies d WHERE d.depends_on_id = t.task_id)
            AS has_dependents
), new_events AS (
    INSERT INTO task_events (task_id, tenant_id, sequence, type, status, progress, message,
        created_at)
    SELECT task_id, tenant_id, sequence, 2, status, progress, event_message, $1 FROM ended
    RETURNING event_id
), span AS (
    SELECT min(event_id) AS first_event, max(event_id) AS last_event FROM new_events
)
SELECT ended.*, span.* FROM ended CROSS JOIN span
"""

_RETRY_SUBTASKS = """
UPDATE subtasks s SET status = 1, lease_id = NULL, lease_expires_at = NULL, worker_id = NULL,
    error = i.error, error_code = i.code, available_at = i.due, updated_at = $1
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
    AS i(id, lease, error, code, due)
WHERE s.subtask_id = i.id AND s.status = 2 AND s.lease_id = i.lease
RETURNING s.*
"""

_FAIL_SUBTASKS = """
UPDATE subtasks s SET status = 4, lease_id = NULL, lease_expires_at = NULL, error = i.error,
    error_code = i.code, updated_at = $1, completed_at = $1
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS i(id, lease, error, code)
WHERE s.subtask_id = i.id AND s.status = 2 AND s.lease_id = i.lease
RETURNING s.*
"""

_END_SUBTASKS = """
WITH ended AS (
    SELECT * FROM subtasks WHERE task_id = $1 AND status IN (1, 2) FOR UPDATE
), changed AS (
    UPDATE subtasks s SET status = 5, lease_id = NULL, lease_expires_at = NULL,
        updated_at = $2, completed_at = $2
    FROM ended WHERE s.subtask_id = ended.subtask_id
)
SELECT * FROM ended
"""

_RELEASE_SUBTASKS = """
UPDATE subtasks s SET status = 1, lease_id = NULL, lease_expires_at = NULL, worker_id = NULL,
    attempt = s.attempt - 1, available_at = $1, updated_at = $1
FROM unnest($2::text[], $3::text[]) AS i(id, lease)
WHERE s.subtask_id = i.id AND s.status = 2 AND s.lease_id = i.lease
RETURNING s.*
"""

_MARK_READY = """
UPDATE subtasks s SET ready = true, available_at = $1, updated_at = $1,
    input = CASE WHEN i.replace THEN i.input ELSE s.input END
FROM unnest($2::text[], $3::bool[], $4::text[]::jsonb[]) AS i(id, replace, input)
WHERE s.subtask_id = i.id AND s.status = 1
"""

_ACTIVE = """
SELECT (SELECT coalesce(sum(count), 0) FROM task_counts
        WHERE tenant_id = $1 AND status IN (1, 2))
     + (SELECT coalesce(sum(delta), 0) FROM task_count_deltas
        WHERE tenant_id = $1 AND status IN (1, 2))
"""


class Transaction:
    """The writer's connection inside one batch's transaction, whose BEGIN goes with the
    first statement: in the same message when that one is plain SQL (the simple protocol
    carries several statements; a create's quota lock is one), else just before it. A batch
    that starts with its quota lock saves a round trip; one that runs nothing sends nothing.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.begun = False

    async def _begin(self) -> None:
        if not self.begun:
            await self.conn.execute("BEGIN")
            self.begun = True

    async def execute(self, query: str, *args: Any) -> str:
        if not self.begun and not args:
            self.begun = True  # even if it fails: the rollback then ends what it began
            query = f"BEGIN; {query}"
        else:
            await self._begin()
        result: str = await self.conn.execute(query, *args)
        return result

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        await self._begin()
        rows: list[Any] = await self.conn.fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> Any:
        await self._begin()
        return await self.conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        await self._begin()
        return await self.conn.fetchval(query, *args)


class PostgresQueue(Queue):
    """The transitions (see store/queue/__init__.py) on one asyncpg connection, inside the
    transaction its owner began."""

    def __init__(self, conn: Transaction) -> None:
        self.conn = conn
        # Task locks asked for and not taken yet: the next statement that needs them takes
        # them (completions take them in their own statement, saving a round trip).
        self._lock_tasks: set[str] = set()
        self._lock_subtasks: set[str] = set()
        # Tasks this batch ended, and whether tasks wait for them.
        self._has_dependents: dict[str, bool] = {}

    async def _locks(self) -> None:
        if self._lock_tasks or self._lock_subtasks:
            await self.conn.execute(
                _LOCK_TASKS, sorted(self._lock_tasks), sorted(self._lock_subtasks)
            )
            self._lock_tasks.clear()
            self._lock_subtasks.clear()

    # -- create -------------------------------------------------------------------------------

    async def find_requests(self, tenant_id: str, request_ids: Sequence[str]) -> dict[str, Task]:
        if not request_ids:
            return {}
        rows = await self.conn.fetch(
            "SELECT * FROM tasks WHERE tenant_id = $1 AND request_id = ANY($2::text[])",
            tenant_id,
            list(request_ids),
        )
        return {row["request_id"]: _task(row) for row in rows}

    async def dependency_states(self, tenant_id: str, task_ids: Sequence[str]) -> dict[str, Status]:
        if not task_ids:
            return {}
        rows = await self.conn.fetch(
            "SELECT task_id, status FROM tasks WHERE tenant_id = $1 AND task_id = ANY($2::text[]) "
            "ORDER BY task_id FOR SHARE",
            tenant_id,
            sorted(set(task_ids)),
        )
        return {row["task_id"]: Status(row["status"]) for row in rows}

    async def active_tasks(self, tenant_id: str, enough: int = -1) -> int:
        # The lock is held until the commit: the tenant's next create counts after this
        # one's tasks. Plain SQL (no parameters): a batch that starts here sends its BEGIN
        # with it. Far from the quota the check goes in the same message, a statement of
        # its own after the lock (its snapshot sees every create the lock waited for): it
        # divides by zero when there are more than ``enough``, and the count is read then.
        lock = f"SELECT pg_advisory_xact_lock(hashtext({_literal(_QUOTA_LOCK + tenant_id)}))"
        if enough < 0:
            await self.conn.execute(lock)
        else:
            active = _ACTIVE.replace("$1", _literal(tenant_id))
            check = f"SELECT 1 / (({active}) <= {int(enough)})::int"
            try:
                await self.conn.execute(
                    f"{lock}; SAVEPOINT quota; {check}; RELEASE SAVEPOINT quota"
                )
                return enough
            except asyncpg.DivisionByZeroError:
                await self.conn.execute("ROLLBACK TO SAVEPOINT quota; RELEASE SAVEPOINT quota")
        count = await self.conn.fetchval(_ACTIVE, tenant_id)
        return int(count)

    async def insert_tasks(
        self,
        tasks: Sequence[tuple[Task, Sequence[Subtask]]],
        changes: Changes,
        turns: Turns,
        places: KeyPlaces | None = None,
    ) -> None:
        ts = [task for task, _ in tasks]
        events = [e for task in ts for e in new_task_events(task)]
        admitted = list(places.admitted) if places else []
        waiting = list(places.waiting) if places else []
        subs = [s for _, subtasks in tasks for s in subtasks]
        edges = [(task.task_id, dep) for task in ts for dep in task.depends_on]
        record = await self.conn.fetchrow(
            _INSERT_TASKS,
            [t.task_id for t in ts],
            [t.tenant_id for t in ts],
            [int(t.status) for t in ts],
            [t.task_type for t in ts],
            [t.model_name for t in ts],
            [t.template for t in ts],
            [t.text for t in ts],
            _json(t.input_data for t in ts),
            _json(t.parameters for t in ts),
            [t.priority for t in ts],
            _json(list(t.depends_on) if t.depends_on else None for t in ts),
            [t.progress for t in ts],
            [t.progress_message for t in ts],
            [t.request_id for t in ts],
            [t.attempt for t in ts],
            [t.max_attempts for t in ts],
            [t.timeout_seconds for t in ts],
            [t.sequence for t in ts],
            [t.created_at for t in ts],
            [s.subtask_id for s in subs],
            [s.task_id for s in subs],
            [s.tenant_id for s in subs],
            [s.kind for s in subs],
            [s.model_name for s in subs],
            [s.name for s in subs],
            [s.stage for s in subs],
            _json(s.input for s in subs),
            _json(s.info for s in subs),
            [int(s.status) for s in subs],
            [s.progress for s in subs],
            [s.attempt for s in subs],
            [s.max_attempts for s in subs],
            [s.priority for s in subs],
            [s.ready for s in subs],
            [s.available_at or s.created_at for s in subs],
            [s.timeout_seconds for s in subs],
            [s.created_at for s in subs],
            [a for a, _ in edges],
            [b for _, b in edges],
            [t.run_at for t in ts],
            [t.concurrency_key for t in ts],
            [turns.step(s.tenant_id) for s in subs],
            _turn_ranks(subs),
            max((s.created_at.timestamp() for s in subs), default=0.0),
            [t.task_id for t in admitted],
            [key_of(t)[0] for t in admitted],
            [key_of(t)[1] for t in admitted],
            [t.task_id for t in waiting],
            [key_of(t)[0] for t in waiting],
            [key_of(t)[1] for t in waiting],
            [t.priority for t in waiting],
            [t.created_at for t in waiting],
            _json(t.result for t in ts),
            _json(t.resource_usage.to_json() if t.resource_usage else None for t in ts),
            [t.worker_id for t in ts],
            [t.started_at for t in ts],
            [t.completed_at for t in ts],
            [t.updated_at or t.created_at for t in ts],
            _json(s.result for s in subs),
            [s.lease_id for s in subs],
            [s.lease_expires_at for s in subs],
            [s.worker_id for s in subs],
            [s.started_at for s in subs],
            [s.completed_at for s in subs],
            [s.updated_at or s.created_at for s in subs],
            [e.task_id for e in events],
            [e.tenant_id for e in events],
            [e.sequence for e in events],
            [int(e.type) for e in events],
            [int(e.status) for e in events],
            [e.progress for e in events],
            [e.message for e in events],
            _json(e.data for e in events),
            [e.created_at for e in events],
        )
        _stored(changes, record)
        for task, subtasks in tasks:
            changes.count(
                (task.tenant_id, task.task_type, task.model_name, task.template), None, task.status
            )
            changes.ready += [
                (s.kind, s.model_name, s.tenant_id)
                for s in subtasks
                if s.ready and s.status is Status.PENDING
            ]
        changes.events += events

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
        await self._locks()
        kinds = sorted(set(taker.kinds))
        if not kinds:
            # A worker of every kind: the kinds that have runnable work, read from the index.
            kinds = [
                row[0]
                for row in await self.conn.fetch(
                    "SELECT DISTINCT kind FROM subtasks WHERE status = 1 AND ready"
                )
            ]
            if not kinds:
                return []
        rows = await self.conn.fetch(
            _TAKE,
            kinds,
            now,
            [*taker.models, ""] if taker.models else None,
            list(taker.tenant_ids) if taker.tenant_ids is not None else None,
            taker.task_id,
            limit,
            expires_at,
            worker_id,
        )
        if not rows:
            return []
        _stored(changes, rows[0])
        taken = []
        seen: set[str] = set()
        for row in rows:
            subtask = _subtask(row)
            keyed = bool(row["task_concurrency_key"])
            taken.append(Taken(subtask, tuple(row["task_depends_on"] or ()), keyed))
            task_id = subtask.task_id
            if task_id in seen:
                continue
            seen.add(task_id)
            old = Status(row["old_status"])
            changes.count(
                (subtask.tenant_id, row["task_type"], row["task_model_name"], row["template"]),
                old,
                Status.RUNNING,
            )
            attempt = row["task_attempt"]
            changes.events.append(
                started_event(
                    task_id,
                    subtask.tenant_id,
                    row["task_sequence"],
                    row["task_progress"],
                    attempt=attempt,
                    worker_id=worker_id,
                    now=now,
                    first=old is Status.PENDING,
                )
            )
        return taken

    async def results_of(self, task_ids: Sequence[str]) -> dict[str, JSON | None]:
        rows = await self.conn.fetch(
            "SELECT task_id, result FROM tasks WHERE task_id = ANY($1::text[])", list(task_ids)
        )
        return {row["task_id"]: row["result"] for row in rows}

    # -- while running ------------------------------------------------------------------------

    async def lock_tasks(self, task_ids: Iterable[str], subtask_ids: Iterable[str]) -> None:
        self._lock_tasks.update(task_ids)
        self._lock_subtasks.update(subtask_ids)

    async def subtasks(self, subtask_ids: Sequence[str]) -> dict[str, Subtask]:
        await self._locks()
        if not subtask_ids:
            return {}
        rows = await self.conn.fetch(
            "SELECT * FROM subtasks WHERE subtask_id = ANY($1::text[])", list(set(subtask_ids))
        )
        return {row["subtask_id"]: _subtask(row) for row in rows}

    async def subtasks_of(self, task_id: str) -> list[Subtask]:
        await self._locks()
        rows = await self.conn.fetch(
            "SELECT * FROM subtasks WHERE task_id = $1 ORDER BY stage, created_at", task_id
        )
        return [_subtask(row) for row in rows]

    async def extend_leases(
        self, leases: Sequence[tuple[str, str, datetime, float | None, str | None]], now: datetime
    ) -> list[Subtask]:
        await self._locks()
        rows = await self.conn.fetch(
            _EXTEND,
            now,
            [lease[0] for lease in leases],
            [lease[1] for lease in leases],
            [lease[2] for lease in leases],
            [lease[3] for lease in leases],
            [lease[4] for lease in leases],
        )
        return [_subtask(row) for row in rows]

    async def progress_tasks(
        self, items: Sequence[Progress], now: datetime, changes: Changes
    ) -> None:
        await self._locks()
        # One row per task in each statement (an UPDATE changes a row once), in order.
        rounds: list[list[Progress]] = []
        for item in items:
            for batch in rounds:
                if all(other.task_id != item.task_id for other in batch):
                    batch.append(item)
                    break
            else:
                rounds.append([item])
        for batch in rounds:
            rows = await self.conn.fetch(
                _PROGRESS,
                now,
                [p.task_id for p in batch],
                [p.message for p in batch],
                [p.message is not None for p in batch],
                [p.progress for p in batch],
                [p.from_subtasks for p in batch],
                [p.error for p in batch],
                [p.error is not None for p in batch],
                [p.error_code for p in batch],
                _json(p.data for p in batch),
                [sum(1 << int(s) for s in p.only_if) for p in batch],
            )
            if rows:
                _stored(changes, rows[0])
            changes.events += [
                TaskEvent(
                    task_id=row["task_id"],
                    tenant_id=row["tenant_id"],
                    sequence=row["sequence"],
                    type=EventType.PROGRESS,
                    status=Status(row["status"]),
                    created_at=now,
                    progress=row["progress"],
                    message=row["message"],
                    data=row["data"],
                )
                for row in rows
            ]

    async def output_events(
        self, items: Sequence[tuple[str, str | None, JSON | None]], now: datetime, changes: Changes
    ) -> set[str]:
        await self._locks()
        counts: dict[str, int] = {}
        numbered = []
        for task_id, delta, data in items:
            counts[task_id] = counts.get(task_id, 0) + 1
            numbered.append((task_id, counts[task_id], delta, data))
        rows = await self.conn.fetch(
            _OUTPUT,
            now,
            list(counts),
            list(counts.values()),
            [n[0] for n in numbered],
            [n[1] for n in numbered],
            [n[2] for n in numbered],
            _json(n[3] for n in numbered),
        )
        if not rows:
            return set()
        _stored(changes, rows[0])
        changed = {row["task_id"]: row for row in rows}
        for task_id, k, delta, data in numbered:
            row = changed.get(task_id)
            if row is None:
                continue
            changes.events.append(
                TaskEvent(
                    task_id=task_id,
                    tenant_id=row["tenant_id"],
                    sequence=row["sequence"] - row["n"] + k,
                    type=EventType.OUTPUT,
                    status=Status.RUNNING,
                    created_at=now,
                    progress=row["progress"],
                    output_delta=delta,
                    data=data,
                )
            )
        return set(changed)

    # -- finish -------------------------------------------------------------------------------

    async def complete(
        self, items: Sequence[Completion], now: datetime, changes: Changes
    ) -> tuple[list[Done], list[Task]]:
        rows = await self.conn.fetch(
            _COMPLETE,
            now,
            [i[0] for i in items],
            [i[1] for i in items],
            _json(i[2] for i in items),
            [i[3] for i in items],
            sorted(self._lock_tasks),
            sorted(self._lock_subtasks),
            _json(i[4] for i in items),
        )
        self._lock_tasks.clear()
        self._lock_subtasks.clear()
        if rows:
            _stored(changes, rows[0])
        done = []
        ended = []
        for row in rows:
            done.append(Done(_subtask(row), siblings=row["siblings"]))
            if row["t_task_id"] is None:
                continue
            task = _ended_task(row)
            ended.append(task)
            self._has_dependents[task.task_id] = row["has_dependents"]
            key = (task.tenant_id, task.task_type, task.model_name, task.template)
            changes.count(key, Status(row["old_status"]), Status.COMPLETED)
            changes.events.append(
                event(task, EventType.STATUS_CHANGED, now=now, message="completed", with_task=True)
            )
        return done, ended

    async def _end_tasks(
        self,
        status: Status,
        ends: Sequence[TaskEnd],
        reasons: Sequence[str | None],
        now: datetime,
        changes: Changes,
    ) -> list[Task]:
        await self._locks()
        unique = list(
            {end.task_id: (end, reason) for end, reason in zip(ends, reasons, strict=True)}.values()
        )
        if not unique:
            return []
        rows = await self.conn.fetch(
            _END_TASKS,
            now,
            [e.task_id for e, _ in unique],
            _json(e.result for e, _ in unique),
            int(status),
            _json(e.resource_usage for e, _ in unique),
            [e.error for e, _ in unique],
            [e.error_code for e, _ in unique],
            [e.message for e, _ in unique],
            [r for _, r in unique],
        )
        if rows:
            _stored(changes, rows[0])
        tasks = []
        for row in rows:
            task = _task(row)
            tasks.append(task)
            self._has_dependents[task.task_id] = row["has_dependents"]
            changes.count(_key(row), Status(row["old_status"]), status)
            changes.events.append(
                event(
                    task,
                    EventType.STATUS_CHANGED,
                    now=now,
                    message=row["event_message"],
                    with_task=True,
                )
            )
        return tasks

    async def complete_tasks(
        self, ends: Sequence[TaskEnd], now: datetime, changes: Changes
    ) -> list[Task]:
        for end in ends:
            if not end.message:
                ends = [
                    e
                    if e.message
                    else TaskEnd(e.task_id, e.result, e.resource_usage, message="completed")
                    for e in ends
                ]
                break
        return await self._end_tasks(Status.COMPLETED, ends, [None] * len(ends), now, changes)

    async def retry_subtasks(self, retries: Sequence[Retry], now: datetime) -> list[Subtask]:
        await self._locks()
        rows = await self.conn.fetch(
            _RETRY_SUBTASKS,
            now,
            [r.subtask_id for r in retries],
            [r.lease_id for r in retries],
            [r.error for r in retries],
            [r.error_code for r in retries],
            [r.available_at for r in retries],
        )
        return [_subtask(row) for row in rows]

    async def fail_subtasks(
        self, failures: Sequence[tuple[str, str, str, str]], now: datetime
    ) -> list[Subtask]:
        await self._locks()
        rows = await self.conn.fetch(
            _FAIL_SUBTASKS,
            now,
            [f[0] for f in failures],
            [f[1] for f in failures],
            [f[2] for f in failures],
            [f[3] for f in failures],
        )
        return [_subtask(row) for row in rows]

    async def fail_tasks(
        self, ends: Sequence[TaskEnd], now: datetime, changes: Changes
    ) -> list[Task]:
        return await self._end_tasks(Status.FAILED, ends, [None] * len(ends), now, changes)

    async def end_subtasks(
        self, task_id: str, now: datetime, changes: Changes, reason: str
    ) -> list[Subtask]:
        await self._locks()
        rows = await self.conn.fetch(_END_SUBTASKS, task_id, now)
        ended = [_subtask(row) for row in rows]
        changes.stopped += [(s, reason) for s in stop_candidates(ended)]
        return ended

    async def cancel_task(
        self, task_id: str, reason: str, now: datetime, changes: Changes
    ) -> Task | None:
        end = TaskEnd(task_id, message=reason or "cancelled by client")
        cancelled = await self._end_tasks(Status.CANCELLED, [end], [reason or None], now, changes)
        return cancelled[0] if cancelled else None

    async def release_subtasks(
        self, leases: Sequence[tuple[str, str]], now: datetime, changes: Changes
    ) -> list[Subtask]:
        await self._locks()
        rows = await self.conn.fetch(
            _RELEASE_SUBTASKS, now, [lease[0] for lease in leases], [lease[1] for lease in leases]
        )
        released = [_subtask(row) for row in rows]
        changes.ready += [(s.kind, s.model_name, s.tenant_id) for s in released]
        return released

    async def expired_leases(self, now: datetime, limit: int) -> list[Subtask]:
        rows = await self.conn.fetch(
            "SELECT * FROM subtasks WHERE status = 2 AND lease_expires_at < $1 "
            "ORDER BY lease_expires_at LIMIT $2",
            now,
            limit,
        )
        return [_subtask(row) for row in rows]

    async def leases_of_workers(self, prefixes: Sequence[str]) -> list[Subtask]:
        rows = await self.conn.fetch(
            "SELECT * FROM subtasks WHERE status = 2 AND EXISTS "
            "(SELECT 1 FROM unnest($1::text[]) AS p WHERE starts_with(worker_id, p))",
            list(prefixes),
        )
        return [_subtask(row) for row in rows]

    # -- stages and dependencies --------------------------------------------------------------

    async def mark_ready(
        self,
        subtasks: Sequence[Subtask],
        now: datetime,
        changes: Changes,
        inputs: dict[str, JSON] | None = None,
    ) -> None:
        await self._locks()
        if not subtasks:
            return
        new_inputs = inputs or {}
        await self.conn.execute(
            _MARK_READY,
            now,
            [s.subtask_id for s in subtasks],
            [s.subtask_id in new_inputs for s in subtasks],
            _json(new_inputs.get(s.subtask_id) for s in subtasks),
        )
        changes.ready += [(s.kind, s.model_name, s.tenant_id) for s in subtasks]

    async def delay_tasks(self, delays: Sequence[tuple[str, datetime]]) -> None:
        await self.conn.execute(
            "INSERT INTO delayed_tasks (task_id, run_at) "
            "SELECT * FROM unnest($1::text[], $2::timestamptz[]) "
            "ON CONFLICT (task_id) DO UPDATE SET run_at = excluded.run_at",
            [task_id for task_id, _ in delays],
            [at for _, at in delays],
        )

    async def due_tasks(self, now: datetime, limit: int) -> list[str]:
        rows = await self.conn.fetch(
            "DELETE FROM delayed_tasks WHERE task_id IN (SELECT task_id FROM delayed_tasks "
            "WHERE run_at <= $1 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "RETURNING task_id",
            now,
            limit,
        )
        return [row["task_id"] for row in rows]

    async def next_delayed(self) -> datetime | None:
        at: datetime | None = await self.conn.fetchval("SELECT min(run_at) FROM delayed_tasks")
        return at

    async def claim_keys(
        self, tasks: Sequence[Task], limits: Sequence[tuple[str, str, int | None]]
    ) -> KeyPlaces:
        # One row per key (a statement cannot change a row twice): a given limit wins over
        # "keep", the last one given over earlier ones.
        given: dict[Key, int | None] = {}
        for tenant, name, limit in limits:
            if limit is not None or (tenant, name) not in given:
                given[(tenant, name)] = limit
        new = Counter(key_of(t) for t in tasks)
        for key in new:
            given.setdefault(key, None)
        rows = await self.conn.fetch(
            _CLAIM_KEYS,
            [tenant for tenant, _ in given],
            [key for _, key in given],
            list(given.values()),
            [new[key] for key in given],
        )
        # A key admitted its new tasks but those that now wait in its line.
        grants = {
            (r["tenant_id"], r["key"]): max(0, new[(r["tenant_id"], r["key"])] - r["waiting"])
            for r in rows
        }
        recount = [(r["tenant_id"], r["key"]) for r in rows if r["room"]]
        return KeyPlaces.granted(tasks, grants, recount)

    async def line_up(self, tasks: Sequence[Task], now: datetime, changes: Changes) -> None:
        if not tasks:
            return
        keys = [key_of(t) for t in tasks]
        await self.conn.execute(
            _LINE_UP,
            [t.task_id for t in tasks],
            [tenant for tenant, _ in keys],
            [key for _, key in keys],
            [t.priority for t in tasks],
            [t.created_at for t in tasks],
        )
        await self.admit_keys(sorted(set(keys)), now, changes)

    async def leave_keys(self, task_ids: Sequence[str], now: datetime, changes: Changes) -> None:
        rows = await self.conn.fetch(_LEAVE_KEYS, list(dict.fromkeys(task_ids)))
        await self.admit_keys(
            [(row["tenant_id"], row["key"]) for row in rows if row["room"]], now, changes
        )

    async def admit_keys(self, keys: Sequence[Key], now: datetime, changes: Changes) -> None:
        if not keys:
            return
        # Under the keys' locks, a new statement (a new snapshot): the admitted counts are
        # current, and the room they leave is filled from the heads of the lines.
        admitted = await self.conn.fetch(_ADMIT, [t for t, _ in keys], [k for _, k in keys])
        if not admitted:
            return
        # Under the admitted tasks' locks, a new snapshot: work added to them while they
        # waited is here. They have run nothing yet: their lowest pending stage is the first.
        rows = await self.conn.fetch(_READY_FIRST_STAGES, [row["task_id"] for row in admitted], now)
        changes.ready += [(r["kind"], r["model_name"], r["tenant_id"]) for r in rows]

    async def dependents_of(self, task_ids: Sequence[str]) -> dict[str, list[str]]:
        known = self._has_dependents
        if all(known.get(t) is False for t in task_ids):
            return {}  # this batch ended them and saw none wait
        rows = await self.conn.fetch(
            "SELECT depends_on_id, task_id FROM task_dependencies "
            "WHERE depends_on_id = ANY($1::text[])",
            list(task_ids),
        )
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(row["depends_on_id"], []).append(row["task_id"])
        return found

    async def tasks(self, task_ids: Sequence[str], *, lock: bool = False) -> dict[str, Task]:
        await self._locks()
        if not task_ids:
            return {}
        sql = "SELECT * FROM tasks WHERE task_id = ANY($1::text[]) ORDER BY task_id"
        rows = await self.conn.fetch(sql + (" FOR UPDATE" if lock else ""), sorted(set(task_ids)))
        return {row["task_id"]: _task(row) for row in rows}

    # -- the end of a batch -------------------------------------------------------------------

    async def settle(self, changes: Changes) -> None:
        await self.conn.execute(self.settling(changes))

    def settling(self, changes: Changes) -> str:
        """The SQL writing the batch's folded count deltas and sending its notice to other
        replicas, as one simple-protocol statement, so that it travels with the batch's
        COMMIT in one round trip. Values go in as JSON literals (escaped below); counts and
        notices are the only values, none of them binary."""
        deltas = [
            {
                "tenant_id": k[0],
                "status": k[1],
                "task_type": k[2],
                "model_name": k[3],
                "template": k[4],
                "delta": d,
            }
            for k, d in changes.deltas.items()
            if d
        ]
        notices_sent: list[str] = []
        payload_format = notices.installed()
        channel = payload_format.channel if payload_format is not None else ""
        if payload_format is not None:
            if changes.first_event_id is not None:
                assert changes.last_event_id is not None
                notices_sent.append(
                    payload_format.events_stored(changes.first_event_id, changes.last_event_id)
                )
            if changes.ready:
                notices_sent.append(payload_format.work_ready())
            for subtask, _ in changes.stopped:
                worker, lease = subtask.worker_id or "", subtask.lease_id or ""
                notices_sent.append(payload_format.worker_stop(worker, subtask.subtask_id, lease))
        if not deltas and not notices_sent:
            return ""
        return (
            "WITH deltas AS (INSERT INTO task_count_deltas "
            "(tenant_id, status, task_type, model_name, template, delta) "
            f"SELECT * FROM json_to_recordset({_literal(deltas)}::json) AS x(tenant_id text, "
            "status int2, task_type text, model_name text, template text, delta int4)) "
            f"SELECT count(pg_notify({_literal(channel)}, n)) "
            f"FROM json_array_elements_text({_literal(notices_sent)}::json) AS n"
        )


class PostgresWriter:
    """One connection that commits batches of transitions (see store/database.py)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self.dsn, timeout=10)
            # Each statement here is prepared once and run with arrays of any length: one
            # generic plan fits every call (planning the take anew each time, which "auto"
            # chose, cost more than running it). A plan made once must not depend on how
            # big the tables were then: every statement finds its rows through an index
            # (ids, the queue), so sequential scans are ruled out for these connections.
            # With sequential scans ruled out, a statement that has no index to use (the
            # count deltas, a few rows) is costed above JIT's threshold: PostgreSQL would
            # then compile it on every run (~125 ms). JIT never pays for these statements.
            await conn.execute(
                "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; SET jit = off"
            )
            for name in ("json", "jsonb"):
                await conn.set_type_codec(
                    name, encoder=_dumps, decoder=json.loads, schema="pg_catalog"
                )
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            try:
                async with asyncio.timeout(5):
                    await self._conn.close()
            except Exception:
                self._conn.terminate()
        self._conn = None

    async def commit(self, run: Any, batch: list[Any]) -> Changes:
        """Runs ``run(queue, changes, batch)`` in one transaction and commits. A conflict
        with another writer (deadlock, serialisation) runs the batch again; a statement
        that fails runs each transition alone in a savepoint, so one bad transition fails
        alone."""
        isolate = False
        for attempt in range(1, CONFLICT_RETRIES + 1):
            conn = await self._connection()
            try:
                return await self._once(conn, run, batch, isolate)
            except asyncpg.PostgresError as exc:
                sqlstate = getattr(exc, "sqlstate", "") or ""
                if sqlstate[:2] in OUTAGE_SQLSTATE_CLASSES:
                    await self.close()
                    raise
                if sqlstate in RETRYABLE_SQLSTATES:
                    if attempt == CONFLICT_RETRIES:
                        raise
                    log.info("write conflict; retrying", sqlstate=sqlstate, attempt=attempt)
                    await asyncio.sleep(random.uniform(0, CONFLICT_PAUSE_SECONDS * attempt))
                    continue
                if isolate and len(batch) > 1:
                    return await self._one_by_one(run, batch)
                if isolate:
                    raise
                isolate = True  # a transition's statement failed: find which one
            except (OSError, asyncpg.InterfaceError, TimeoutError):
                await self.close()
                raise
        raise RuntimeError("write conflicts did not clear")

    async def _one_by_one(self, run: Any, batch: list[Any]) -> Changes:
        """Each transition in a transaction of its own, for a batch that failed even with
        each in a savepoint (its settlement met a value the counters or the notice cannot
        carry): the transition at fault fails alone, never its batch-mates."""
        changes = Changes()
        outage: BaseException | None = None
        for op in batch:
            if outage is not None:
                op.error = outage  # the database is gone: the rest would only wait for it
                continue
            try:
                changes.merge(await self.commit(run, [op]))
            except Exception as exc:  # this transition alone failed to commit
                log.warning("a transition failed to commit alone", error=str(exc)[:200])
                op.error = exc
                sqlstate = getattr(exc, "sqlstate", None)
                if not isinstance(sqlstate, str) or sqlstate[:2] not in STATEMENT_SQLSTATE_CLASSES:
                    outage = exc
        return changes

    async def _once(
        self, conn: asyncpg.Connection, run: Any, batch: list[Any], isolate: bool
    ) -> Changes:
        """One transaction: BEGIN (with the first statement, see Transaction), the
        transitions, then the settlement and COMMIT together (one round trip for both)."""
        changes = Changes()
        tx = Transaction(conn)
        queue = PostgresQueue(tx)
        try:
            if not isolate:
                await run(queue, changes, batch)
            else:
                for op in batch:
                    own = Changes()
                    await tx.execute("SAVEPOINT transition")
                    try:
                        await run(queue, own, [op])
                    except asyncpg.PostgresError as exc:
                        sqlstate = getattr(exc, "sqlstate", "") or ""
                        if (
                            sqlstate[:2] in OUTAGE_SQLSTATE_CLASSES
                            or sqlstate in RETRYABLE_SQLSTATES
                        ):
                            raise
                        await tx.execute("ROLLBACK TO SAVEPOINT transition")
                        queue = PostgresQueue(tx)  # what it remembered may be undone
                        log.info("a transition failed in its batch", error=str(exc)[:200])
                        op.error = exc
                        continue
                    await tx.execute("RELEASE SAVEPOINT transition")
                    changes.merge(own)
            settling = queue.settling(changes)
            if settling or tx.begun:  # a batch that ran no statement has nothing to commit
                await tx.execute(f"{settling}; COMMIT" if settling else "COMMIT")
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                try:
                    async with asyncio.timeout(10):
                        await conn.execute("ROLLBACK")
                except Exception:
                    conn.terminate()
            raise
        return changes


def _literal(value: Any) -> str:
    """A JSON value (or string) as an escaped SQL string literal (E'...')."""
    text = value if isinstance(value, str) else _dumps(value)
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _json(values: Iterable[Any]) -> list[str | None]:
    """JSON values for a ``jsonb[]`` parameter, as text: asyncpg would read a list value as
    another dimension of the array."""
    return [None if v is None else _dumps(v) for v in values]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
