from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from taskorch.v1 import task_service_pb2 as _task_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ("task_type",)
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    def __init__(self, task_type: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "supported_task_types")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    supported_task_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., supported_task_types: _Optional[_Iterable[str]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "task", "family", "state", "execution_provider", "providers_requested", "providers_active", "inputs", "outputs", "max_batch_size", "max_queue_delay_ms", "max_input_length", "quantization", "labels", "default_for", "task_types", "error", "size_bytes", "load_seconds", "instances", "provider", "remote_url", "remote_model", "quantization_check")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Model.State]
        LOADING: _ClassVar[Model.State]
        READY: _ClassVar[Model.State]
        LOAD_FAILED: _ClassVar[Model.State]
        UNAVAILABLE: _ClassVar[Model.State]
    STATE_UNSPECIFIED: Model.State
    LOADING: Model.State
    READY: Model.State
    LOAD_FAILED: Model.State
    UNAVAILABLE: Model.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FOR_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REMOTE_URL_FIELD_NUMBER: _ClassVar[int]
    REMOTE_MODEL_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_CHECK_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    family: str
    state: Model.State
    execution_provider: str
    providers_requested: _containers.RepeatedScalarFieldContainer[str]
    providers_active: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    max_batch_size: int
    max_queue_delay_ms: float
    max_input_length: int
    quantization: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    default_for: _containers.RepeatedScalarFieldContainer[str]
    task_types: _containers.RepeatedScalarFieldContainer[str]
    error: str
    size_bytes: int
    load_seconds: float
    instances: int
    provider: str
    remote_url: str
    remote_model: str
    quantization_check: QuantizationCheck
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., family: _Optional[str] = ..., state: _Optional[_Union[Model.State, str]] = ..., execution_provider: _Optional[str] = ..., providers_requested: _Optional[_Iterable[str]] = ..., providers_active: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., max_batch_size: _Optional[int] = ..., max_queue_delay_ms: _Optional[float] = ..., max_input_length: _Optional[int] = ..., quantization: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., default_for: _Optional[_Iterable[str]] = ..., task_types: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ..., size_bytes: _Optional[int] = ..., load_seconds: _Optional[float] = ..., instances: _Optional[int] = ..., provider: _Optional[str] = ..., remote_url: _Optional[str] = ..., remote_model: _Optional[str] = ..., quantization_check: _Optional[_Union[QuantizationCheck, _Mapping]] = ...) -> None: ...

class QuantizationCheck(_message.Message):
    __slots__ = ("probes", "cosine_mean", "cosine_min", "cosine_threshold", "cosine_floor", "top_label_agreement", "float_size_bytes", "int8_size_bytes")
    PROBES_FIELD_NUMBER: _ClassVar[int]
    COSINE_MEAN_FIELD_NUMBER: _ClassVar[int]
    COSINE_MIN_FIELD_NUMBER: _ClassVar[int]
    COSINE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COSINE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    TOP_LABEL_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    FLOAT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INT8_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    probes: int
    cosine_mean: float
    cosine_min: float
    cosine_threshold: float
    cosine_floor: float
    top_label_agreement: float
    float_size_bytes: int
    int8_size_bytes: int
    def __init__(self, probes: _Optional[int] = ..., cosine_mean: _Optional[float] = ..., cosine_min: _Optional[float] = ..., cosine_threshold: _Optional[float] = ..., cosine_floor: _Optional[float] = ..., top_label_agreement: _Optional[float] = ..., float_size_bytes: _Optional[int] = ..., int8_size_bytes: _Optional[int] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[str]] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("model_name", "task_type", "input_data", "parameters", "inputs")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    task_type: str
    input_data: _struct_pb2.Struct
    parameters: _struct_pb2.Struct
    inputs: _struct_pb2.Value
    def __init__(self, model_name: _Optional[str] = ..., task_type: _Optional[str] = ..., input_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., inputs: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("model_name", "task_type", "result", "resource_usage", "embedding", "embeddings")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_USAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    task_type: str
    result: _struct_pb2.Struct
    resource_usage: _task_service_pb2.ResourceUsage
    embedding: _containers.RepeatedScalarFieldContainer[float]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, model_name: _Optional[str] = ..., task_type: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., resource_usage: _Optional[_Union[_task_service_pb2.ResourceUsage, _Mapping]] = ..., embedding: _Optional[_Iterable[float]] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("delta", "done", "result", "resource_usage")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_USAGE_FIELD_NUMBER: _ClassVar[int]
    delta: str
    done: bool
    result: _struct_pb2.Struct
    resource_usage: _task_service_pb2.ResourceUsage
    def __init__(self, delta: _Optional[str] = ..., done: _Optional[bool] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., resource_usage: _Optional[_Union[_task_service_pb2.ResourceUsage, _Mapping]] = ...) -> None: ...
