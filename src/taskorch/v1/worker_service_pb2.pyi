import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from taskorch.v1 import task_service_pb2 as _task_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TakeRequest(_message.Message):
    __slots__ = ("worker_id", "kinds", "models", "lease_seconds", "wait_seconds")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    lease_seconds: float
    wait_seconds: float
    def __init__(self, worker_id: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ..., lease_seconds: _Optional[float] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class ListenRequest(_message.Message):
    __slots__ = ("worker_id", "kinds", "models", "capacity", "lease_seconds", "run_ahead", "batch_assignments")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_AHEAD_FIELD_NUMBER: _ClassVar[int]
    BATCH_ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    lease_seconds: float
    run_ahead: int
    batch_assignments: bool
    def __init__(self, worker_id: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., lease_seconds: _Optional[float] = ..., run_ahead: _Optional[int] = ..., batch_assignments: _Optional[bool] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("assignment", "cancel", "ping", "assignments")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignment: _task_service_pb2.Subtask
    cancel: Cancellation
    ping: _timestamp_pb2.Timestamp
    assignments: Assignments
    def __init__(self, assignment: _Optional[_Union[_task_service_pb2.Subtask, _Mapping]] = ..., cancel: _Optional[_Union[Cancellation, _Mapping]] = ..., ping: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., assignments: _Optional[_Union[Assignments, _Mapping]] = ...) -> None: ...

class Assignments(_message.Message):
    __slots__ = ("subtasks",)
    SUBTASKS_FIELD_NUMBER: _ClassVar[int]
    subtasks: _containers.RepeatedCompositeFieldContainer[_task_service_pb2.Subtask]
    def __init__(self, subtasks: _Optional[_Iterable[_Union[_task_service_pb2.Subtask, _Mapping]]] = ...) -> None: ...

class Cancellation(_message.Message):
    __slots__ = ("subtask_id", "lease_id", "reason")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    lease_id: str
    reason: str
    def __init__(self, subtask_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("subtask_id", "lease_id", "lease_seconds", "progress", "message", "output_delta", "output_data")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DELTA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    lease_id: str
    lease_seconds: float
    progress: float
    message: str
    output_delta: str
    output_data: _struct_pb2.Struct
    def __init__(self, subtask_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., lease_seconds: _Optional[float] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., output_delta: _Optional[str] = ..., output_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("lease_expires_at", "stop", "reason")
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_expires_at: _timestamp_pb2.Timestamp
    stop: bool
    reason: str
    def __init__(self, lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("subtask_id", "lease_id", "result", "resource_usage")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_USAGE_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    lease_id: str
    result: _struct_pb2.Struct
    resource_usage: _task_service_pb2.ResourceUsage
    def __init__(self, subtask_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., resource_usage: _Optional[_Union[_task_service_pb2.ResourceUsage, _Mapping]] = ...) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("subtask_id", "lease_id", "error", "error_code", "permanent")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    lease_id: str
    error: str
    error_code: str
    permanent: bool
    def __init__(self, subtask_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ..., permanent: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("subtask_id", "lease_id", "reason")
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    lease_id: str
    reason: str
    def __init__(self, subtask_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[SubtaskReport]
    def __init__(self, reports: _Optional[_Iterable[_Union[SubtaskReport, _Mapping]]] = ...) -> None: ...

class SubtaskReport(_message.Message):
    __slots__ = ("complete", "fail", "release")
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    complete: CompleteRequest
    fail: FailRequest
    release: ReleaseRequest
    def __init__(self, complete: _Optional[_Union[CompleteRequest, _Mapping]] = ..., fail: _Optional[_Union[FailRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ReportOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ReportOutcome, _Mapping]]] = ...) -> None: ...

class ReportOutcome(_message.Message):
    __slots__ = ("subtask", "error")
    SUBTASK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    subtask: _task_service_pb2.Subtask
    error: _status_pb2.Status
    def __init__(self, subtask: _Optional[_Union[_task_service_pb2.Subtask, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
