import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetOpenApiDocumentRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("status", "timestamp", "version", "uptime", "active_tasks", "pending_tasks", "completed_tasks", "failed_tasks", "cancelled_tasks", "problem", "worker_slots", "busy_worker_slots")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_TASKS_FIELD_NUMBER: _ClassVar[int]
    PENDING_TASKS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_TASKS_FIELD_NUMBER: _ClassVar[int]
    FAILED_TASKS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_TASKS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    WORKER_SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_WORKER_SLOTS_FIELD_NUMBER: _ClassVar[int]
    status: str
    timestamp: _timestamp_pb2.Timestamp
    version: str
    uptime: int
    active_tasks: int
    pending_tasks: int
    completed_tasks: int
    failed_tasks: int
    cancelled_tasks: int
    problem: str
    worker_slots: int
    busy_worker_slots: int
    def __init__(self, status: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[str] = ..., uptime: _Optional[int] = ..., active_tasks: _Optional[int] = ..., pending_tasks: _Optional[int] = ..., completed_tasks: _Optional[int] = ..., failed_tasks: _Optional[int] = ..., cancelled_tasks: _Optional[int] = ..., problem: _Optional[str] = ..., worker_slots: _Optional[int] = ..., busy_worker_slots: _Optional[int] = ...) -> None: ...
