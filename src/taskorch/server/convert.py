"""Between protobuf messages and the domain's types (the only place that knows both)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from taskorch import structs
from taskorch.core.planning import TaskSpec
from taskorch.core.tasks import ListRequest
from taskorch.domain.errors import InvalidArgument
from taskorch.domain.limits import LIST_PAYLOAD_BYTES, MAX_INPUT_BYTES, MAX_RESULT_BYTES, MiB
from taskorch.domain.values import JSON, Lease, Page, ResourceUsage, Subtask, Task, TaskEvent
from taskorch.v1 import task_service_pb2 as pb

MAX_STRUCT_DEPTH = 32


def struct_to_dict(struct: struct_pb2.Struct, field: str) -> JSON:
    """A request's Struct as JSON, refusing absurd nesting (it would only exhaust the stack)."""
    data = structs.to_dict(struct)
    if structs.depth(data) > MAX_STRUCT_DEPTH:
        raise InvalidArgument(
            f"{field} is nested more than {MAX_STRUCT_DEPTH} levels deep", field=field
        )
    return data


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_time(target: timestamp_pb2.Timestamp, value: datetime | None) -> None:
    """Sets a Timestamp field from a datetime (naive: UTC); leaves it unset for None.

    The same values as protobuf's ``FromDatetime``, without its calendar work in Python
    (several timestamps go into every task message and event).
    """
    if value is not None:
        since = (value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH
        target.seconds = since.days * 86_400 + since.seconds
        target.nanos = since.microseconds * 1000


def time_from_proto(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A timestamp a client sent, as an aware UTC datetime."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid time", field=field) from None


def check_input_size(*fields: tuple[str, Message | None]) -> None:
    """Refuses input too large to be read back with its result (``MAX_INPUT_BYTES``).

    Raises:
        InvalidArgument: naming the largest field.
    """
    sizes = [(m.ByteSize(), name) for name, m in fields if m is not None]
    total = sum(size for size, _ in sizes)
    if total > MAX_INPUT_BYTES:
        largest = max(sizes)[1]
        raise InvalidArgument(
            f"the input is {total / MiB:.1f} MiB; at most {MAX_INPUT_BYTES // MiB} MiB "
            f"({', '.join(name for name, _ in fields)} together), so that the task can be "
            "read back with its result",
            field=largest,
            reason="INPUT_TOO_LARGE",
        )


def check_result_size(request: Message) -> None:
    """Refuses a reported result larger than ``MAX_RESULT_BYTES``."""
    if not request.HasField("result"):
        return
    size = getattr(request, "result").ByteSize()  # noqa: B009 (any message with a result)
    if size > MAX_RESULT_BYTES:
        raise InvalidArgument(
            f"the result is {size / MiB:.1f} MiB; at most {MAX_RESULT_BYTES // MiB} MiB",
            field="result",
            reason="RESULT_TOO_LARGE",
        )


def spec_from_proto(request: pb.CreateTaskRequest, idempotency_key: str = "") -> TaskSpec:
    """The domain's task specification from a CreateTask request."""
    check_input_size(
        ("input_data", request.input_data if request.HasField("input_data") else None),
        ("parameters", request.parameters if request.HasField("parameters") else None),
    )
    return TaskSpec(
        text=request.text if request.HasField("text") else None,
        task_type=request.task_type,
        model_name=request.model_name,
        input_data=(
            struct_to_dict(request.input_data, "input_data")
            if request.HasField("input_data")
            else None
        ),
        parameters=(
            struct_to_dict(request.parameters, "parameters")
            if request.HasField("parameters")
            else None
        ),
        template=request.template,
        priority=request.priority,
        depends_on=tuple(request.depends_on),
        request_id=request.request_id or idempotency_key,
        max_attempts=request.max_attempts,
        timeout_seconds=request.timeout_seconds,
        run_at=time_from_proto(request.run_at, "run_at") if request.HasField("run_at") else None,
        run_after_seconds=request.run_after_seconds,
        concurrency_key=request.concurrency_key,
        concurrency_limit=request.concurrency_limit,
    )


def list_request_from_proto(request: pb.ListTasksRequest) -> ListRequest:
    """The domain's list query from a ListTasks request."""
    return ListRequest(
        status=request.status,
        task_type=request.task_type,
        model_name=request.model_name,
        template=request.template,
        limit=request.limit,
        offset=request.offset,
        page=request.page,
        sort_by=request.sort_by,
        sort_order=request.sort_order or request.order,
        page_token=request.page_token,
    )


_PAYLOADS = ("input_data", "parameters", "result")


def list_item(task: pb.Task, view: int) -> pb.Task:
    """A task as a list shows it, large payloads left out.

    With view BASIC, payloads over ``LIST_PAYLOAD_BYTES`` are left out and named in
    ``omitted_fields`` (GetTask has them).
    """
    if view == pb.TASK_VIEW_FULL:
        return task
    for name in _PAYLOADS:
        if task.HasField(name) and getattr(task, name).ByteSize() > LIST_PAYLOAD_BYTES:
            task.ClearField(name)
            task.omitted_fields.append(name)
    return task


def task_to_proto(task: Task, estimated_completion: datetime | None = None) -> pb.Task:
    """A task as the API's message, with its estimated completion if known."""
    message = pb.Task(
        task_id=task.task_id,
        id=task.task_id,
        status=task.status.name,
        task_type=task.task_type,
        model_name=task.model_name,
        template=task.template,
        text=task.text or "",
        priority=task.priority,
        depends_on=task.depends_on,
        error=task.error or "",
        error_code=task.error_code or "",
        progress=task.progress,
        progress_message=task.progress_message or "",
        worker_id=task.worker_id or "",
        request_id=task.request_id or "",
        attempt=task.attempt,
        max_attempts=task.max_attempts,
        sequence=task.sequence,
        timeout_seconds=task.timeout_seconds or 0.0,
        concurrency_key=task.concurrency_key or "",
    )
    if task.input_data is not None:
        message.input_data.update(task.input_data)
    if task.parameters is not None:
        message.parameters.update(task.parameters)
    if task.result is not None:
        message.result.update(task.result)
    if task.resource_usage is not None:
        _usage_to_proto(task.resource_usage, message.resource_usage)
    set_time(message.created_at, task.created_at)
    set_time(message.updated_at, task.updated_at)
    set_time(message.started_at, task.started_at)
    set_time(message.completed_at, task.completed_at)
    set_time(message.run_at, task.run_at)
    set_time(message.cancelled_at, task.cancelled_at)
    set_time(message.estimated_completion, estimated_completion)
    return message


def _usage_to_proto(usage: ResourceUsage, target: pb.ResourceUsage) -> None:
    target.model_name = usage.model_name
    target.inference_time_seconds = usage.inference_time_seconds
    target.memory_used_gb = usage.memory_used_gb
    target.execution_provider = usage.execution_provider


def page_to_proto(page: Page, tasks: list[pb.Task]) -> pb.ListTasksResponse:
    """A page of tasks as the ListTasks answer."""
    page_number = int(page.extra.get("page", 1))
    pages = math.ceil(page.total / page.limit) if page.limit else 0
    return pb.ListTasksResponse(
        tasks=tasks,
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        pagination=pb.Pagination(page=page_number, limit=page.limit, total=page.total, pages=pages),
        next_page_token=page.next_page_token,
    )


def to_json(message: Message) -> JSON:
    """A message as the REST gateway prints it (proto field names, every scalar field)."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return {key: _whole_numbers(value) for key, value in data.items()}


# Below this, Python's repr of a whole float has no exponent (1e16 prints as 1e+16).
_PLAIN_FLOAT_LIMIT = 1e16


def _whole_numbers(value: object) -> object:
    """Whole doubles as JSON integers (3, not 3.0), as Envoy's printer writes them.

    A client must read the same value in the same form from every REST answer.
    """
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < _PLAIN_FLOAT_LIMIT else value
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


def event_to_proto(event: TaskEvent, task: pb.Task | None = None) -> pb.TaskEvent:
    """A task event as the API's message (``task`` on snapshots and final events)."""
    message = pb.TaskEvent(
        task_id=event.task_id,
        sequence=event.sequence,
        type=event.type.name,
        status=event.status.name,
        progress=event.progress or 0.0,
        message=event.message or "",
        output_delta=event.output_delta or "",
    )
    if event.data is not None:
        message.data.update(event.data)
    set_time(message.created_at, event.created_at)
    if task is not None:
        message.task.CopyFrom(task)
    return message


def subtask_to_proto(subtask: Subtask, lease: Lease | None = None) -> pb.Subtask:
    """A subtask; from a fresh lease it also carries its dependencies' results."""
    message = pb.Subtask(
        subtask_id=subtask.subtask_id,
        task_id=subtask.task_id,
        kind=subtask.kind,
        name=subtask.name,
        stage=subtask.stage,
        status=subtask.status.name,
        progress=subtask.progress,
        error=subtask.error or "",
        error_code=subtask.error_code or "",
        attempt=subtask.attempt,
        max_attempts=subtask.max_attempts,
        priority=subtask.priority,
        model_name=subtask.model_name,
        lease_id=subtask.lease_id or "",
        worker_id=subtask.worker_id or "",
        ready=subtask.ready,
        timeout_seconds=subtask.timeout_seconds or 0.0,
    )
    for name in ("input", "info", "result"):
        value = getattr(subtask, name)
        if value is not None:
            getattr(message, name).update(value)
    set_time(message.lease_expires_at, subtask.lease_expires_at)
    set_time(message.available_at, subtask.available_at)
    set_time(message.created_at, subtask.created_at)
    set_time(message.updated_at, subtask.updated_at)
    set_time(message.started_at, subtask.started_at)
    set_time(message.completed_at, subtask.completed_at)
    if lease is not None:
        for task_id, result in lease.dependency_results.items():
            message.dependency_results[task_id].update(result or {})
    return message


def optional_struct(message: Message, field: str) -> JSON | None:
    """A Struct field as a dict, None when the field is unset."""
    if not message.HasField(field):
        return None
    return struct_to_dict(getattr(message, field), field)
