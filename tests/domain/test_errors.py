"""The domain's errors: each carries the seed's reason code and the status the server maps to
gRPC and HTTP (the table in core/errors.py), messages stay bounded whatever a client sent, and
an error of one request of a batch names that request."""

from __future__ import annotations

import pytest

from taskorch.domain.errors import (
    MAX_MESSAGE_CHARS,
    AlreadyExists,
    Conflict,
    DeadlineExceeded,
    ErrorStatus,
    FieldViolation,
    InternalError,
    InvalidArgument,
    LeaseLost,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    TaskNotCancellable,
    TaskNotFound,
    TaskorchError,
    TemplateNotFound,
    Unauthenticated,
    Unavailable,
    UnsupportedTaskType,
    WorkerUnavailable,
    bounded,
    within,
)


@pytest.mark.parametrize(
    ("error", "reason", "status"),
    [
        (InvalidArgument("bad", field="text"), "VALIDATION_ERROR", ErrorStatus.INVALID_ARGUMENT),
        (UnsupportedTaskType("x", ["echo"]), "UNSUPPORTED_TASK_TYPE", ErrorStatus.INVALID_ARGUMENT),
        (TaskNotFound("t1"), "TASK_NOT_FOUND", ErrorStatus.NOT_FOUND),
        (ModelNotFound("m"), "MODEL_NOT_FOUND", ErrorStatus.NOT_FOUND),
        (TemplateNotFound("t"), "TEMPLATE_NOT_FOUND", ErrorStatus.NOT_FOUND),
        (TaskNotCancellable("t1", "COMPLETED"), "TASK_NOT_CANCELLABLE", ErrorStatus.ABORTED),
        (LeaseLost("s1", "expired"), "LEASE_LOST", ErrorStatus.ABORTED),
        (AlreadyExists("x"), "ALREADY_EXISTS", ErrorStatus.ALREADY_EXISTS),
        (ResourceExhausted("x"), "QUOTA_EXCEEDED", ErrorStatus.RESOURCE_EXHAUSTED),
        (
            RateLimited("acme", rate=2, burst=3, retry_after_seconds=0.5, reset_at=1),
            "RATE_LIMITED",
            ErrorStatus.RESOURCE_EXHAUSTED,
        ),
        (Unauthenticated(), "UNAUTHENTICATED", ErrorStatus.UNAUTHENTICATED),
        (PermissionDenied("x"), "PERMISSION_DENIED", ErrorStatus.PERMISSION_DENIED),
        (Unavailable("x"), "SERVICE_UNAVAILABLE", ErrorStatus.UNAVAILABLE),
        (WorkerUnavailable("x"), "WORKER_UNAVAILABLE", ErrorStatus.UNAVAILABLE),
        (DeadlineExceeded("x"), "TIMEOUT", ErrorStatus.DEADLINE_EXCEEDED),
        (InternalError(), "INTERNAL_ERROR", ErrorStatus.INTERNAL),
    ],
)
def test_each_error_carries_its_seed_reason_and_status(
    error: TaskorchError, reason: str, status: ErrorStatus
) -> None:
    assert (error.reason, error.status) == (reason, status)


def test_not_found_says_what_was_not_found_and_keeps_its_id() -> None:
    error = TaskNotFound("xyz")
    assert error.message == "Task with ID 'xyz' not found" and error.metadata == {"id": "xyz"}
    assert "available models: a, b" in ModelNotFound("m", available=["b", "a"]).message


def test_a_conflict_subclass_is_still_a_conflict() -> None:
    assert isinstance(TaskNotCancellable("t1", "FAILED"), Conflict)
    assert isinstance(LeaseLost("s1", "taken by another worker"), Conflict)


def test_an_invalid_field_is_both_the_first_violation_and_the_field() -> None:
    error = InvalidArgument(
        "text must not be empty", field="text", violations=[FieldViolation("top_n", "too big")]
    )
    assert error.metadata == {"field": "text"}
    assert [v.field for v in error.violations] == ["text", "top_n"]


def test_a_huge_value_in_a_message_is_quoted_by_its_start_and_length() -> None:
    blob = "x" * 50_000
    error = InvalidArgument(f"text {blob!r} is not a model name", field="model_name")
    assert len(error.message) <= MAX_MESSAGE_CHARS
    assert "[50002 characters]" in error.message and error.message.endswith("model name")
    short = "a short message stays as it is"
    assert bounded(short) == short


def test_a_long_message_keeps_its_start_and_its_end() -> None:
    words = " ".join(f"word{i}" for i in range(2000))
    cut = bounded(f"START {words} END")
    assert len(cut) <= MAX_MESSAGE_CHARS
    assert cut.startswith("START word0") and cut.endswith("word1999 END") and "cut]" in cut


def test_an_error_within_a_batch_names_the_request() -> None:
    error = within(InvalidArgument("text must not be empty", field="text"), "requests[3]")
    assert error.message == "requests[3]: text must not be empty" and str(error) == error.message
    assert error.metadata["field"] == "requests[3].text"
    assert [v.field for v in error.violations] == ["requests[3].text"]
    whole = within(AlreadyExists("request id used"), "requests[0]")
    assert whole.message.startswith("requests[0]: ") and "field" not in whole.metadata
