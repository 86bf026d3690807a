"""The SDK's value types: plain dataclasses built from the API's messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from taskorch import structs
from taskorch.v1 import status_pb2
from taskorch.v1 import task_service_pb2 as pb

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(message: Any, name: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime (None when unset).

    The value of ``ToDatetime(tzinfo=UTC)``, without its Python-level work.
    """
    if not message.HasField(name):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, name)
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def _struct(message: Any, name: str) -> dict[str, Any] | None:
    if not message.HasField(name):
        return None
    value: struct_pb2.Struct = getattr(message, name)
    return structs.to_dict(value)


@dataclass(frozen=True)
class ResourceUsage:
    model_name: str
    inference_time_seconds: float
    memory_used_gb: float
    execution_provider: str

    @classmethod
    def from_proto(cls, u: pb.ResourceUsage) -> ResourceUsage:
        return cls(u.model_name, u.inference_time_seconds, u.memory_used_gb, u.execution_provider)


@dataclass(frozen=True)
class Task:
    """A task as the server last described it. ``status`` is a word such as ``"PENDING"``."""

    task_id: str
    status: str
    task_type: str
    model_name: str = ""
    template: str = ""
    text: str = ""
    input_data: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    priority: int = 5
    depends_on: tuple[str, ...] = ()
    result: dict[str, Any] | None = None
    error: str = ""
    error_code: str = ""
    progress: float = 0.0
    progress_message: str = ""
    worker_id: str = ""
    request_id: str = ""
    attempt: int = 0
    max_attempts: int = 0
    sequence: int = 0
    timeout_seconds: float = 0.0
    resource_usage: ResourceUsage | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    estimated_completion: datetime | None = None
    #: A delayed task's time: not started before it.
    run_at: datetime | None = None
    #: At most its key's limit of tasks with this key run at once.
    concurrency_key: str | None = None
    #: In a list: the payloads left out for their size (``get_task`` has them, as does
    #: ``list_tasks(view="FULL")``).
    omitted_fields: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_proto(cls, m: pb.Task) -> Task:
        usage = ResourceUsage.from_proto(m.resource_usage) if m.HasField("resource_usage") else None
        return cls(
            task_id=m.task_id,
            status=_status(m.status),
            task_type=m.task_type,
            model_name=m.model_name,
            template=m.template,
            text=m.text,
            input_data=_struct(m, "input_data"),
            parameters=_struct(m, "parameters"),
            priority=m.priority,
            depends_on=tuple(m.depends_on),
            result=_struct(m, "result"),
            error=m.error,
            error_code=m.error_code,
            progress=m.progress,
            progress_message=m.progress_message,
            worker_id=m.worker_id,
            request_id=m.request_id,
            attempt=m.attempt,
            max_attempts=m.max_attempts,
            sequence=m.sequence,
            timeout_seconds=m.timeout_seconds,
            resource_usage=usage,
            created_at=_time(m, "created_at"),
            updated_at=_time(m, "updated_at"),
            started_at=_time(m, "started_at"),
            completed_at=_time(m, "completed_at"),
            cancelled_at=_time(m, "cancelled_at"),
            estimated_completion=_time(m, "estimated_completion"),
            run_at=_time(m, "run_at"),
            concurrency_key=m.concurrency_key or None,
            omitted_fields=tuple(m.omitted_fields),
        )


@dataclass(frozen=True)
class TaskEvent:
    """One change of a task, from a watch.

    ``type`` is SNAPSHOT, STATUS_CHANGED, PROGRESS or OUTPUT; ``task`` is set on the snapshot and on
    the final event.
    """

    task_id: str
    sequence: int
    type: str
    status: str
    progress: float
    message: str
    output_delta: str
    data: dict[str, Any] | None
    created_at: datetime | None
    task: Task | None

    @property
    def is_terminal(self) -> bool:
        return self.type in ("STATUS_CHANGED", "SNAPSHOT") and self.status in TERMINAL

    @classmethod
    def from_proto(cls, m: pb.TaskEvent) -> TaskEvent:
        return cls(
            task_id=m.task_id,
            sequence=m.sequence,
            type=pb.TaskEvent.Type.Name(m.type),
            status=_status(m.status),
            progress=m.progress,
            message=m.message,
            output_delta=m.output_delta,
            data=_struct(m, "data"),
            created_at=_time(m, "created_at"),
            task=Task.from_proto(m.task) if m.HasField("task") else None,
        )


@dataclass(frozen=True)
class TaskArtifact:
    """One binary result of a task (a WAV, a PNG), as ``get_task_artifact`` returns it."""

    name: str
    content_type: str
    data: bytes

    def save(self, path: str) -> None:
        """Write the bytes to ``path``."""
        with open(path, "wb") as out:
            out.write(self.data)


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    total: int
    limit: int
    offset: int
    page: int
    pages: int
    next_page_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, m: pb.ListTasksResponse) -> TaskPage:
        return cls(
            tasks=[Task.from_proto(t) for t in m.tasks],
            total=m.total,
            limit=m.limit,
            offset=m.offset,
            page=m.pagination.page,
            pages=m.pagination.pages,
            next_page_token=m.next_page_token,
        )


def _status(number: int) -> str:
    return status_pb2.Status.Name(number)
