import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from taskorch.v1 import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_VIEW_UNSPECIFIED: _ClassVar[TaskView]
    TASK_VIEW_BASIC: _ClassVar[TaskView]
    TASK_VIEW_FULL: _ClassVar[TaskView]
TASK_VIEW_UNSPECIFIED: TaskView
TASK_VIEW_BASIC: TaskView
TASK_VIEW_FULL: TaskView

class Task(_message.Message):
    __slots__ = ("task_id", "id", "status", "task_type", "model_name", "template", "input_data", "parameters", "text", "priority", "depends_on", "result", "error", "error_code", "progress", "progress_message", "worker_id", "created_at", "updated_at", "started_at", "completed_at", "cancelled_at", "estimated_completion", "resource_usage", "request_id", "attempt", "max_attempts", "sequence", "timeout_seconds", "omitted_fields", "run_at", "concurrency_key")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    INPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COMPLETION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_USAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OMITTED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    id: str
    status: _status_pb2.Status
    task_type: str
    model_name: str
    template: str
    input_data: _struct_pb2.Struct
    parameters: _struct_pb2.Struct
    text: str
    priority: int
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    result: _struct_pb2.Struct
    error: str
    error_code: str
    progress: float
    progress_message: str
    worker_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    cancelled_at: _timestamp_pb2.Timestamp
    estimated_completion: _timestamp_pb2.Timestamp
    resource_usage: ResourceUsage
    request_id: str
    attempt: int
    max_attempts: int
    sequence: int
    timeout_seconds: float
    omitted_fields: _containers.RepeatedScalarFieldContainer[str]
    run_at: _timestamp_pb2.Timestamp
    concurrency_key: str
    def __init__(self, task_id: _Optional[str] = ..., id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, str]] = ..., task_type: _Optional[str] = ..., model_name: _Optional[str] = ..., template: _Optional[str] = ..., input_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., text: _Optional[str] = ..., priority: _Optional[int] = ..., depends_on: _Optional[_Iterable[str]] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ..., progress: _Optional[float] = ..., progress_message: _Optional[str] = ..., worker_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., estimated_completion: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resource_usage: _Optional[_Union[ResourceUsage, _Mapping]] = ..., request_id: _Optional[str] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., sequence: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., omitted_fields: _Optional[_Iterable[str]] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., concurrency_key: _Optional[str] = ...) -> None: ...

class Subtask(_message.Message):
    __slots__ = ("subtask_id", "task_id", "kind", "name", "stage", "input", "info", "status", "progress", "result", "error", "error_code", "attempt", "max_attempts", "priority", "model_name", "lease_id", "lease_expires_at", "worker_id", "ready", "available_at", "created_at", "updated_at", "started_at", "completed_at", "timeout_seconds", "dependency_results")
    class DependencyResultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Struct
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCY_RESULTS_FIELD_NUMBER: _ClassVar[int]
    subtask_id: str
    task_id: str
    kind: str
    name: str
    stage: int
    input: _struct_pb2.Struct
    info: _struct_pb2.Struct
    status: _status_pb2.Status
    progress: float
    result: _struct_pb2.Struct
    error: str
    error_code: str
    attempt: int
    max_attempts: int
    priority: int
    model_name: str
    lease_id: str
    lease_expires_at: _timestamp_pb2.Timestamp
    worker_id: str
    ready: bool
    available_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    timeout_seconds: float
    dependency_results: _containers.MessageMap[str, _struct_pb2.Struct]
    def __init__(self, subtask_id: _Optional[str] = ..., task_id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., stage: _Optional[int] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., status: _Optional[_Union[_status_pb2.Status, str]] = ..., progress: _Optional[float] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., priority: _Optional[int] = ..., model_name: _Optional[str] = ..., lease_id: _Optional[str] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker_id: _Optional[str] = ..., ready: _Optional[bool] = ..., available_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timeout_seconds: _Optional[float] = ..., dependency_results: _Optional[_Mapping[str, _struct_pb2.Struct]] = ...) -> None: ...

class CreateSubtaskRequest(_message.Message):
    __slots__ = ("task_id", "kind", "name", "input", "info", "stage", "model_name", "max_attempts", "timeout_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    name: str
    input: _struct_pb2.Struct
    info: _struct_pb2.Struct
    stage: int
    model_name: str
    max_attempts: int
    timeout_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stage: _Optional[int] = ..., model_name: _Optional[str] = ..., max_attempts: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class ListSubtasksRequest(_message.Message):
    __slots__ = ("task_id", "status")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: str
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ListSubtasksResponse(_message.Message):
    __slots__ = ("subtasks", "total")
    SUBTASKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    subtasks: _containers.RepeatedCompositeFieldContainer[Subtask]
    total: int
    def __init__(self, subtasks: _Optional[_Iterable[_Union[Subtask, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class GetSubtaskRequest(_message.Message):
    __slots__ = ("task_id", "subtask_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    subtask_id: str
    def __init__(self, task_id: _Optional[str] = ..., subtask_id: _Optional[str] = ...) -> None: ...

class UpdateSubtaskRequest(_message.Message):
    __slots__ = ("task_id", "subtask_id", "info", "name", "input")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    subtask_id: str
    info: _struct_pb2.Struct
    name: str
    input: _struct_pb2.Struct
    def __init__(self, task_id: _Optional[str] = ..., subtask_id: _Optional[str] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., name: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class TakeSubtaskRequest(_message.Message):
    __slots__ = ("task_id", "worker_id", "kinds", "models", "lease_seconds", "wait_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    worker_id: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    lease_seconds: float
    wait_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ..., lease_seconds: _Optional[float] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class UpdateSubtaskStatusRequest(_message.Message):
    __slots__ = ("task_id", "subtask_id", "lease_id", "status", "progress", "message", "result", "error", "error_code", "permanent", "lease_seconds", "output_delta")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SUBTASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DELTA_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    subtask_id: str
    lease_id: str
    status: _status_pb2.Status
    progress: float
    message: str
    result: _struct_pb2.Struct
    error: str
    error_code: str
    permanent: bool
    lease_seconds: float
    output_delta: str
    def __init__(self, task_id: _Optional[str] = ..., subtask_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ..., permanent: _Optional[bool] = ..., lease_seconds: _Optional[float] = ..., output_delta: _Optional[str] = ...) -> None: ...

class SubtaskStatusUpdate(_message.Message):
    __slots__ = ("subtask", "stop", "reason")
    SUBTASK_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subtask: Subtask
    stop: bool
    reason: str
    def __init__(self, subtask: _Optional[_Union[Subtask, _Mapping]] = ..., stop: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("model_name", "inference_time_seconds", "memory_used_gb", "execution_provider")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_GB_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    inference_time_seconds: float
    memory_used_gb: float
    execution_provider: str
    def __init__(self, model_name: _Optional[str] = ..., inference_time_seconds: _Optional[float] = ..., memory_used_gb: _Optional[float] = ..., execution_provider: _Optional[str] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("text", "task_type", "model_name", "input_data", "parameters", "template", "priority", "depends_on", "request_id", "max_attempts", "timeout_seconds", "run_at", "run_after_seconds", "concurrency_key", "concurrency_limit")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    RUN_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    text: str
    task_type: str
    model_name: str
    input_data: _struct_pb2.Struct
    parameters: _struct_pb2.Struct
    template: str
    priority: int
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    max_attempts: int
    timeout_seconds: float
    run_at: _timestamp_pb2.Timestamp
    run_after_seconds: float
    concurrency_key: str
    concurrency_limit: int
    def __init__(self, text: _Optional[str] = ..., task_type: _Optional[str] = ..., model_name: _Optional[str] = ..., input_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., template: _Optional[str] = ..., priority: _Optional[int] = ..., depends_on: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., max_attempts: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_after_seconds: _Optional[float] = ..., concurrency_key: _Optional[str] = ..., concurrency_limit: _Optional[int] = ...) -> None: ...

class BatchCreateTasksRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CreateTaskRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[CreateTaskRequest, _Mapping]]] = ...) -> None: ...

class BatchCreateTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskArtifactRequest(_message.Message):
    __slots__ = ("task_id", "name")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    name: str
    def __init__(self, task_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("status", "task_type", "model_name", "template", "limit", "offset", "page", "sort_by", "sort_order", "order", "page_token", "view")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    SORT_BY_FIELD_NUMBER: _ClassVar[int]
    SORT_ORDER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    status: str
    task_type: str
    model_name: str
    template: str
    limit: int
    offset: int
    page: int
    sort_by: str
    sort_order: str
    order: str
    page_token: str
    view: TaskView
    def __init__(self, status: _Optional[str] = ..., task_type: _Optional[str] = ..., model_name: _Optional[str] = ..., template: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., page: _Optional[int] = ..., sort_by: _Optional[str] = ..., sort_order: _Optional[str] = ..., order: _Optional[str] = ..., page_token: _Optional[str] = ..., view: _Optional[_Union[TaskView, str]] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "total", "limit", "offset", "pagination", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAGINATION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    total: int
    limit: int
    offset: int
    pagination: Pagination
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., total: _Optional[int] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., pagination: _Optional[_Union[Pagination, _Mapping]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Pagination(_message.Message):
    __slots__ = ("page", "limit", "total", "pages")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    page: int
    limit: int
    total: int
    pages: int
    def __init__(self, page: _Optional[int] = ..., limit: _Optional[int] = ..., total: _Optional[int] = ..., pages: _Optional[int] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetTasksByStatusRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class TasksByStatus(_message.Message):
    __slots__ = ("queued", "running", "completed", "failed", "cancelled")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    queued: _containers.RepeatedCompositeFieldContainer[Task]
    running: _containers.RepeatedCompositeFieldContainer[Task]
    completed: _containers.RepeatedCompositeFieldContainer[Task]
    failed: _containers.RepeatedCompositeFieldContainer[Task]
    cancelled: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, queued: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., running: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., completed: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., failed: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., cancelled: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class UpdateTaskPriorityRequest(_message.Message):
    __slots__ = ("task_id", "priority")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    priority: int
    def __init__(self, task_id: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id", "after_sequence")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    after_sequence: int
    def __init__(self, task_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchTasksRequest(_message.Message):
    __slots__ = ("task_ids", "terminal_only")
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    terminal_only: bool
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ..., terminal_only: _Optional[bool] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task_id", "sequence", "type", "status", "progress", "message", "output_delta", "data", "created_at", "task")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[TaskEvent.Type]
        SNAPSHOT: _ClassVar[TaskEvent.Type]
        STATUS_CHANGED: _ClassVar[TaskEvent.Type]
        PROGRESS: _ClassVar[TaskEvent.Type]
        OUTPUT: _ClassVar[TaskEvent.Type]
    TYPE_UNSPECIFIED: TaskEvent.Type
    SNAPSHOT: TaskEvent.Type
    STATUS_CHANGED: TaskEvent.Type
    PROGRESS: TaskEvent.Type
    OUTPUT: TaskEvent.Type
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DELTA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    sequence: int
    type: TaskEvent.Type
    status: _status_pb2.Status
    progress: float
    message: str
    output_delta: str
    data: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    task: Task
    def __init__(self, task_id: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[_Union[TaskEvent.Type, str]] = ..., status: _Optional[_Union[_status_pb2.Status, str]] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., output_delta: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...
