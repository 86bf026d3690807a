"""Domain errors → gRPC status with google.rpc details; the one place that maps them.

A client gets the gRPC code, the message, and in ``grpc-status-details-bin``:
``ErrorInfo`` (reason = the seed error code, e.g. TASK_NOT_FOUND; metadata incl. the
request id), ``BadRequest`` field violations for bad input, ``RetryInfo`` when retrying
later may help, and ``RequestInfo`` with the request id. Unexpected errors are logged with
the request id and answered INTERNAL / INTERNAL_ERROR with no internals.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from taskorch.domain.errors import TaskorchError

ERROR_DOMAIN = "taskorch.dev"


def status_for(error: TaskorchError, request_id: str) -> status_pb2.Status:
    """The google.rpc.Status of a domain error: code, ErrorInfo reason and details."""
    code = grpc.StatusCode[error.status.value]
    details = [
        error_details_pb2.ErrorInfo(
            reason=error.reason,
            domain=ERROR_DOMAIN,
            metadata={**error.metadata, "request_id": request_id},
        )
    ]
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    details.append(error_details_pb2.RequestInfo(request_id=request_id))
    return _status(code, error.message, details)


def internal_status(request_id: str) -> status_pb2.Status:
    """The google.rpc.Status of an unexpected error (INTERNAL, no details)."""
    return _status(
        grpc.StatusCode.INTERNAL,
        f"Unexpected internal error (request {request_id})",
        [
            error_details_pb2.ErrorInfo(
                reason="INTERNAL_ERROR",
                domain=ERROR_DOMAIN,
                metadata={"request_id": request_id},
            ),
            error_details_pb2.RequestInfo(request_id=request_id),
        ],
    )


def _status(code: grpc.StatusCode, message: str, details: list[object]) -> status_pb2.Status:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)  # type: ignore[arg-type]
        packed.append(wrapper)
    number = code.value[0]
    assert code_pb2.Code.Name(number)
    return status_pb2.Status(code=number, message=message, details=packed)
