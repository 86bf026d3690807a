"""What the SDK's two clients share: everything that is not I/O.

Request building, the channel's options and metadata, and the retry and deadline arithmetic
of streams live here; ``_async_client.py`` (hand-written) and ``_sync_client.py`` (generated
from it) only send the requests and convert the answers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from taskorch.client._errors import TaskorchClientError, UnavailableError
from taskorch.domain.limits import MAX_MESSAGE_BYTES
from taskorch.v1 import task_service_pb2 as pb

DEFAULT_TARGET = "127.0.0.1:50051"
#: How many times in a row a stream reconnects after UNAVAILABLE before giving up.
STREAM_RETRIES = 8


def _metadata(api_key: str | None, bearer_token: str | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    if api_key:
        pairs.append(("x-api-key", api_key))
    if bearer_token:
        pairs.append(("authorization", f"Bearer {bearer_token}"))
    return tuple(pairs)


def _create_request(
    *,
    text: str | None,
    task_type: str,
    model_name: str,
    input_data: Mapping[str, Any] | None,
    parameters: Mapping[str, Any] | None,
    template: str,
    priority: int,
    depends_on: Sequence[str],
    request_id: str,
    max_attempts: int,
    timeout_seconds: float,
    run_at: datetime | str | None = None,
    run_after_seconds: float = 0.0,
    concurrency_key: str = "",
    concurrency_limit: int = 0,
) -> pb.CreateTaskRequest:
    request = pb.CreateTaskRequest(
        task_type=task_type,
        model_name=model_name,
        template=template,
        priority=priority,
        depends_on=list(depends_on),
        request_id=request_id,
        max_attempts=max_attempts,
        timeout_seconds=timeout_seconds,
        run_after_seconds=run_after_seconds,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
    )
    if run_at is not None:
        request.run_at.FromDatetime(_aware(run_at))
    if text is not None:
        request.text = text
    if input_data is not None:
        request.input_data.update(input_data)
    if parameters is not None:
        request.parameters.update(parameters)
    return request


def _aware(value: datetime | str) -> datetime:
    """A time with its zone: a datetime, or RFC 3339 text ("2026-12-03T18:00:00Z")."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        raise ValueError("run_at needs a time zone (an aware datetime, or a Z or +hh:mm suffix)")
    return at


_CREATE_DEFAULTS: dict[str, Any] = {
    "text": None,
    "task_type": "",
    "model_name": "",
    "input_data": None,
    "parameters": None,
    "template": "",
    "priority": 0,
    "depends_on": (),
    "request_id": "",
    "max_attempts": 0,
    "timeout_seconds": 0.0,
    "run_at": None,
    "run_after_seconds": 0.0,
    "concurrency_key": "",
    "concurrency_limit": 0,
}


def _batch_request(requests: Sequence[Mapping[str, Any]]) -> pb.BatchCreateTasksRequest:
    unknown = {key for item in requests for key in item} - set(_CREATE_DEFAULTS)
    if unknown:
        raise TypeError(f"create_tasks: unknown fields {sorted(unknown)}")
    return pb.BatchCreateTasksRequest(
        requests=[_create_request(**{**_CREATE_DEFAULTS, **item}) for item in requests]
    )


def task_request(task: Mapping[str, Any]) -> pb.CreateTaskRequest:
    """A CreateTask request from the keyword arguments of ``create_task`` (a schedule's task)."""
    unknown = set(task) - set(_CREATE_DEFAULTS)
    if unknown:
        raise TypeError(f"task: unknown fields {sorted(unknown)}")
    return _create_request(**{**_CREATE_DEFAULTS, **task})


# The server's message limit, both ways: what it accepts, it can send back (gRPC's own
# default would refuse answers over 4 MiB).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def _list_request(**filters: Any) -> pb.ListTasksRequest:
    return pb.ListTasksRequest(**{k: v for k, v in filters.items() if v})


def _retryable(error: TaskorchClientError, retries: int) -> bool:
    """Whether a broken stream should reconnect: UNAVAILABLE, and retries left."""
    return isinstance(error, UnavailableError) and retries < STREAM_RETRIES


def _remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (``time.monotonic()``), None without one."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _deadline(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` at which ``timeout`` seconds from now end."""
    return None if timeout is None else time.monotonic() + timeout


def _backoff(retries: int, deadline: float | None = None) -> float:
    """Seconds to wait before reconnect number ``retries``, never past ``deadline``."""
    pause = float(min(0.2 * 2**retries, 5.0))
    left = _remaining(deadline)
    return pause if left is None else min(pause, left)
