"""Errors the SDK raises, one per gRPC status, carrying the server's details.

The hierarchy, with the gRPC codes each one stands for::

TaskorchClientError              (code, reason, message, request_id, field_violations)
├── InvalidArgumentError         INVALID_ARGUMENT       bad input; see field_violations
├── NotFoundError                NOT_FOUND              TASK_NOT_FOUND, MODEL_NOT_FOUND, ...
├── ConflictError                ABORTED, ALREADY_EXISTS e.g. TASK_NOT_CANCELLABLE
├── UnauthenticatedError         UNAUTHENTICATED
├── PermissionDeniedError        PERMISSION_DENIED
├── ResourceExhaustedError       RESOURCE_EXHAUSTED     quota or rate limit; retry_after
├── UnavailableError             UNAVAILABLE            retry later; retry_after
├── DeadlineExceededError        DEADLINE_EXCEEDED
└── InternalError                INTERNAL, UNKNOWN, ...
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class TaskorchClientError(Exception):
    """A call failed; ``reason`` is the server's error code (e.g. ``TASK_NOT_FOUND``)."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        reason: str = "",
        request_id: str = "",
        field_violations: tuple[FieldViolation, ...] = (),
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.request_id = request_id
        self.field_violations = field_violations
        self.metadata = metadata or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        fields = "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code}{reason}: {self.message}" + (f" ({fields})" if fields else "")


class InvalidArgumentError(TaskorchClientError): ...


class NotFoundError(TaskorchClientError): ...


class ConflictError(TaskorchClientError): ...


class UnauthenticatedError(TaskorchClientError): ...


class PermissionDeniedError(TaskorchClientError): ...


class ResourceExhaustedError(TaskorchClientError): ...


class UnavailableError(TaskorchClientError): ...


class DeadlineExceededError(TaskorchClientError): ...


class InternalError(TaskorchClientError): ...


_BY_CODE: dict[grpc.StatusCode, type[TaskorchClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: ConflictError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.ALREADY_EXISTS: ConflictError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def from_rpc_error(error: grpc.RpcError) -> TaskorchClientError:
    """The typed error for a failed call, with the details the server attached."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    reason, request_id, metadata = "", "", {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    try:
        status = rpc_status.from_call(error)
    except Exception:  # malformed details: keep what the code and message say
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            info_r = error_details_pb2.RequestInfo()
            detail.Unpack(info_r)
            request_id = info_r.request_id
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    kind = _BY_CODE.get(code, InternalError)
    return kind(
        message,
        code=code.name,
        reason=reason,
        request_id=request_id or metadata.get("request_id", ""),
        field_violations=tuple(violations),
        metadata=metadata,
        retry_after=retry_after,
    )
