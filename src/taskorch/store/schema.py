"""The tables, as SQLAlchemy Core metadata shared by the repository and the migrations.

One schema serves SQLite and PostgreSQL. The schema itself is only ever created and changed
by the Alembic migrations in ``store/migrations``; a test checks that they produce exactly
this metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json: Any = JSON().with_variant(JSONB(), "postgresql")
EventId: Any = BigInteger().with_variant(Integer(), "sqlite")

TENANT = 64
ID = 36

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(ID), primary_key=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("model_name", String(200), nullable=False, server_default=""),
    Column("template", String(200), nullable=False, server_default=""),
    Column("text", Text),
    Column("input_data", Json),
    Column("parameters", Json),
    Column("priority", SmallInteger, nullable=False),
    # The task ids this task waits for (the edges also live in task_dependencies).
    Column("depends_on", Json),
    Column("result", Json),
    Column("error", Text),
    Column("error_code", String(64)),
    Column("progress", Float, nullable=False, server_default=text("0")),
    Column("progress_message", Text),
    Column("worker_id", String(200)),
    Column("request_id", String(200)),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_seconds", Float),
    Column("resource_usage", Json),
    Column("sequence", Integer, nullable=False, server_default=text("0")),
    Column("cancel_reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("cancelled_at", UTCDateTime),
    Column("run_at", UTCDateTime),
    Column("concurrency_key", String(200)),
    UniqueConstraint("tenant_id", "request_id"),
    # List filters, each in list order (sort column, task_id): pages are read in index order,
    # keyset pagination is a range, and deep offsets skip rows in the index alone.
    Index(None, "tenant_id", "created_at", "task_id"),
    Index(None, "tenant_id", "status", "created_at", "task_id"),
    Index(None, "tenant_id", "task_type", "created_at", "task_id"),
    Index(None, "tenant_id", "model_name", "created_at", "task_id"),
    Index(None, "tenant_id", "template", "created_at", "task_id"),
    Index(None, "tenant_id", "updated_at", "task_id"),
)

task_dependencies = Table(
    "task_dependencies",
    metadata,
    Column(
        "task_id",
        String(ID),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("depends_on_id", String(ID), ForeignKey("tasks.task_id"), nullable=False),
    PrimaryKeyConstraint("task_id", "depends_on_id"),
    Index(None, "depends_on_id"),
)

# Delayed tasks whose time has not come: their work is held back (not ready) until the engine
# promotes them (core/engine.py), so a take never reads past work that is not yet due.
delayed_tasks = Table(
    "delayed_tasks",
    metadata,
    Column(
        "task_id",
        String(ID),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("run_at", UTCDateTime, nullable=False),
    Index(None, "run_at"),
)

# Concurrency keys: at most max_running tasks of a key (tenant_id + key) are admitted at once.
# key_admitted holds the admitted tasks that have not ended; key_waiting the others, in
# admission order, their work held back until admitted (core/engine.py). On PostgreSQL the
# key's row also counts them (admitted, waiting), so that the statement locking the row sees
# its room (store/queue/postgres.py); SQLite, one writer, counts the rows and leaves them 0.
concurrency_keys = Table(
    "concurrency_keys",
    metadata,
    Column("tenant_id", String(TENANT), nullable=False),
    Column("key", String(200), nullable=False),
    Column("max_running", Integer, nullable=False),
    Column("admitted", Integer, nullable=False, server_default=text("0")),
    Column("waiting", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("tenant_id", "key"),
)

key_admitted = Table(
    "key_admitted",
    metadata,
    Column(
        "task_id",
        String(ID),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("key", String(200), nullable=False),
    Index(None, "tenant_id", "key"),
)

key_waiting = Table(
    "key_waiting",
    metadata,
    Column(
        "task_id",
        String(ID),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("key", String(200), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
Index(
    "ix_key_waiting_line",
    key_waiting.c.tenant_id,
    key_waiting.c.key,
    key_waiting.c.priority.desc(),
    key_waiting.c.created_at,
    key_waiting.c.task_id,
)

subtasks = Table(
    "subtasks",
    metadata,
    Column("subtask_id", String(ID), primary_key=True),
    Column(
        "task_id",
        String(ID),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("kind", String(100), nullable=False),
    # The model the work needs, so a worker can take only work for models it serves.
    Column("model_name", String(200), nullable=False, server_default=""),
    Column("name", String(200), nullable=False, server_default=""),
    # Subtasks of one stage run in parallel; stage N+1 becomes ready when all of stage N
    # completed (a template's steps are stages 0, 1, 2, ...).
    Column("stage", Integer, nullable=False, server_default=text("0")),
    Column("input", Json),
    # Free-form annotations a client sets on a subtask (seed 000's "set info").
    Column("info", Json),
    Column("status", SmallInteger, nullable=False),
    Column("progress", Float, nullable=False, server_default=text("0")),
    Column("result", Json),
    Column("error", Text),
    Column("error_code", String(64)),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    # False while the task's dependencies (or earlier steps) have not completed.
    Column("ready", Boolean, nullable=False, server_default=true()),
    # Not runnable before this time (retry backoff).
    Column("available_at", UTCDateTime, nullable=False),
    Column("lease_id", String(ID)),
    Column("lease_expires_at", UTCDateTime),
    Column("worker_id", String(200)),
    Column("timeout_seconds", Float),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    # Its turn in the queue: a point on the queue's clock (seconds since the epoch) set when
    # it is created. Within a kind and priority a tenant's next subtask takes the turn after
    # its own last queued one, or after the queue's head when it has none queued, so tenants
    # with work queued take turns (fair sharing; store/queue's Turns). Without fair sharing
    # it is the creation time: first come, first served.
    Column("turn", Float(precision=53), nullable=False, server_default=text("0")),
    Index(None, "task_id", "stage"),
)

# Partial indexes hold only live rows, so finished work never slows a take or a rescue down
# and finishing work removes an entry instead of moving one (queries must state the same
# condition, word for word, for SQLite to use them).
QUEUED = "status = 1 AND ready"
RUNNING = "status = 2"

# The work queue: runnable subtasks of a kind in take order (priority first, then turn),
# so a take reads the first rows of the index instead of sorting the queue; its first row
# of a kind and priority is also the queue's head a newcomer's turn follows.
Index(
    "ix_subtasks_queue",
    subtasks.c.kind,
    subtasks.c.priority.desc(),
    subtasks.c.turn,
    subtasks.c.subtask_id,
    sqlite_where=text(QUEUED),
    postgresql_where=text(QUEUED),
)
# A tenant's last queued turn of a kind and priority, which its next subtask follows.
Index(
    "ix_subtasks_tenant_turns",
    subtasks.c.tenant_id,
    subtasks.c.kind,
    subtasks.c.priority,
    subtasks.c.turn,
    sqlite_where=text(QUEUED),
    postgresql_where=text(QUEUED),
)
# The lease rescuer: running subtasks by lease deadline.
Index(
    "ix_subtasks_leases",
    subtasks.c.lease_expires_at,
    sqlite_where=text(RUNNING),
    postgresql_where=text(RUNNING),
)

task_events = Table(
    "task_events",
    metadata,
    Column("event_id", EventId, primary_key=True, autoincrement=True),
    Column(
        "task_id",
        String(ID),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("type", SmallInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("progress", Float),
    Column("message", Text),
    Column("output_delta", Text),
    Column("data", Json),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("task_id", "sequence"),
)


# API keys: only a hash of each key is stored; the key itself is shown once, at creation.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(ID), primary_key=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("role", String(32), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    # The first characters of the key, to recognise it in listings.
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# Request rate limits of tenants (`taskorch keys limit`): a token bucket of `burst` requests
# refilled at `rate_per_second`; 0 means unlimited. A tenant without a row has the server's
# --tenant-rate-limit. Every replica reads the table (cached for a few seconds).
tenant_rate_limits = Table(
    "tenant_rate_limits",
    metadata,
    Column("tenant_id", String(TENANT), primary_key=True),
    Column("rate_per_second", Float, nullable=False),
    Column("burst", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# How many tasks each combination of the list filters has, so a list's `total` costs the same
# at a thousand tasks as at a million. Writers only append deltas (no hot row to contend
# for); a compaction folds them into task_counts every second.
COUNT_KEYS = ("tenant_id", "status", "task_type", "model_name", "template")

task_counts = Table(
    "task_counts",
    metadata,
    Column("tenant_id", String(TENANT), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("template", String(200), nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint(*COUNT_KEYS),
)

task_count_deltas = Table(
    "task_count_deltas",
    metadata,
    Column("delta_id", EventId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("template", String(200), nullable=False),
    Column("delta", Integer, nullable=False),
)


# User templates (built-in ones ship as YAML files in the package and are not stored).
templates = Table(
    "templates",
    metadata,
    Column("template_id", String(ID), primary_key=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("name", String(100), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("parameters", Json, nullable=False),
    Column("steps", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "name"),
)


# -- schedules ---------------------------------------------------------------------------------

schedules = Table(
    "schedules",
    metadata,
    Column("schedule_id", String(ID), primary_key=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("name", String(100), nullable=False),
    # Exactly one of cron (5 fields, in timezone) and interval_seconds is set.
    Column("cron", String(200), nullable=False, server_default=""),
    Column("interval_seconds", Float, nullable=False, server_default=text("0")),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    # The create request of each firing's task (core/schedules.py: spec_to_json).
    Column("task", Json, nullable=False),
    # "one" or "none": what a missed slot does.
    Column("catch_up", String(16), nullable=False, server_default="one"),
    Column("paused", Boolean, nullable=False, server_default=false()),
    # The slot it fires for next; a replica claims a slot by moving this past it (one
    # conditional UPDATE), so no slot fires twice. NULL while paused.
    Column("next_fire_at", UTCDateTime),
    Column("last_fired_at", UTCDateTime),
    Column("last_task_id", String(ID)),
    Column("fire_count", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "name"),
    # The scheduler's due read (paused ones have no next_fire_at).
    Index(None, "next_fire_at"),
)


# -- chat --------------------------------------------------------------------------------------

chat_sessions = Table(
    "chat_sessions",
    metadata,
    Column("session_id", String(ID), primary_key=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("system_prompt", Text, nullable=False, server_default=""),
    Column("title", String(200), nullable=False, server_default=""),
    # Generation parameters of every reply.
    Column("parameters", Json),
    # The sequence number of the session's latest event (see chat_events).
    Column("sequence", Integer, nullable=False, server_default=text("0")),
    # The position given to the latest message (positions are never reused).
    Column("last_position", Integer, nullable=False, server_default=text("0")),
    Column("message_count", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Names of the tenant's collections each user message searches (migration 0009).
    Column("collections", Json),
    # Listing, newest first, with keyset pagination; and by model.
    Index(None, "tenant_id", "created_at", "session_id"),
    Index(None, "tenant_id", "model_name", "created_at"),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column("message_id", String(ID), primary_key=True),
    Column(
        "session_id",
        String(ID),
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", SmallInteger, nullable=False),
    Column("content", Text, nullable=False, server_default=""),
    Column("status", SmallInteger, nullable=False),
    # Replies: the task generating it and the user message it answers.
    Column("task_id", String(ID)),
    Column("reply_to", String(ID)),
    Column("request_id", String(200)),
    # Replies: tokens_generated, prompt_tokens, inference_time, time_to_first_token, ...
    Column("generation", Json),
    Column("error", Text),
    Column("error_code", String(64)),
    # Replies: the sequence number of the last event of the task applied to this message.
    Column("task_sequence", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    # Replies: the collection chunks put into the prompt (migration 0009).
    Column("sources", Json),
    # A session's messages in order (listing, keyset pagination, history).
    UniqueConstraint("session_id", "position"),
    UniqueConstraint("session_id", "request_id"),
    Index(None, "task_id"),
    # Replies not finished yet (recovery at start-up; the head of a session's reply queue).
    Index(None, "status"),
)

chat_events = Table(
    "chat_events",
    metadata,
    Column("event_id", EventId, primary_key=True, autoincrement=True),
    Column(
        "session_id",
        String(ID),
        ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("type", SmallInteger, nullable=False),
    Column("message_id", String(ID)),
    Column("status", SmallInteger),
    Column("delta", Text),
    # MESSAGE_ADDED, REPLY_FINISHED, MESSAGE_DELETED: the message as it was then.
    Column("data", Json),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("session_id", "sequence"),
)


# -- collections (retrieval) -------------------------------------------------------------------

collections = Table(
    "collections",
    metadata,
    Column("collection_id", String(ID), primary_key=True),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("name", String(100), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("dimensions", Integer, nullable=False),
    Column("chunk_size", Integer, nullable=False),
    Column("chunk_overlap", Integer, nullable=False),
    Column("document_count", BigInteger, nullable=False, server_default=text("0")),
    Column("chunk_count", BigInteger, nullable=False, server_default=text("0")),
    # Increases with every change of its chunks: a vector index built at another revision
    # (by this process earlier, or before another replica's change) is rebuilt.
    Column("revision", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

collection_documents = Table(
    "collection_documents",
    metadata,
    Column(
        "collection_id",
        String(ID),
        ForeignKey("collections.collection_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("document_id", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("metadata", Json),
    Column("chunk_count", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("collection_id", "document_id"),
)

# One chunk of a document with its vector (little-endian float32, normalised). On SQLite
# the FTS5 table collection_chunks_fts (created by the migration, kept in step by
# triggers) indexes the text for keyword search.
collection_chunks = Table(
    "collection_chunks",
    metadata,
    Column("chunk_id", EventId, primary_key=True, autoincrement=True),
    Column(
        "collection_id",
        String(ID),
        ForeignKey("collections.collection_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("document_id", String(200), nullable=False),
    Column("position", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Index(None, "collection_id", "document_id"),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- task artifacts (binary results: audio, images) ---------------------------------------------

task_artifacts = Table(
    "task_artifacts",
    metadata,
    Column(
        "task_id",
        String(ID),
        ForeignKey("tasks.task_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tenant_id", String(TENANT), nullable=False),
    Column("name", String(200), nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("task_id", "name"),
)
