"""Inference values of the SDK: what ``client.models`` returns, and its requests.

``client.models`` lists the models a server has and calls them at once (``infer``) or streams
generated text (``generate``); the calls are ``Models`` and ``AsyncModels``
(``_async_client.py``).

For work that should be queued, retried, prioritised and watched, create a task with
``task_type`` and ``model_name`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from taskorch.client._models import ResourceUsage, _struct
from taskorch.v1 import model_service_pb2 as pb


@dataclass(frozen=True)
class QuantizationCheck:
    """How an int8 model agreed with its float original when it was imported.

    ``taskorch models import --quantize int8`` compares them over ``probes`` inputs: the
    cosine of their outputs (mean and lowest, against the thresholds they had to reach) and,
    for models that answer with a label, the share of probes whose top label was unchanged
    (None for the others).
    """

    probes: int
    cosine_mean: float
    cosine_min: float
    cosine_threshold: float
    cosine_floor: float
    top_label_agreement: float | None
    float_size_bytes: int
    int8_size_bytes: int

    @classmethod
    def from_proto(cls, m: pb.QuantizationCheck) -> QuantizationCheck:
        return cls(
            probes=m.probes,
            cosine_mean=m.cosine_mean,
            cosine_min=m.cosine_min,
            cosine_threshold=m.cosine_threshold,
            cosine_floor=m.cosine_floor,
            top_label_agreement=(
                m.top_label_agreement if m.HasField("top_label_agreement") else None
            ),
            float_size_bytes=m.float_size_bytes,
            int8_size_bytes=m.int8_size_bytes,
        )


@dataclass(frozen=True)
class ModelInfo:
    """A model of the server's repository.

    ``state`` is LOADING, READY, LOAD_FAILED or (a remote model whose server does not answer)
    UNAVAILABLE, then ``error`` says why; ``execution_provider`` is the ONNX Runtime provider that
    really runs it, which may differ from the first of ``providers_requested``. ``provider`` is
    "openai" for a remote model (served by ``remote_url`` as ``remote_model``), "" for a local one.
    """

    name: str
    task: str
    family: str
    state: str
    execution_provider: str
    providers_requested: tuple[str, ...] = ()
    providers_active: tuple[str, ...] = ()
    task_types: tuple[str, ...] = ()
    default_for: tuple[str, ...] = ()
    max_batch_size: int = 0
    max_queue_delay_ms: float = 0.0
    max_input_length: int = 0
    quantization: str = ""
    labels: tuple[str, ...] = ()
    size_bytes: int = 0
    load_seconds: float = 0.0
    error: str = ""
    instances: int = 0
    provider: str = ""
    remote_url: str = ""
    remote_model: str = ""
    quantization_check: QuantizationCheck | None = None

    @classmethod
    def from_proto(cls, m: pb.Model) -> ModelInfo:
        return cls(
            name=m.name,
            task=m.task,
            family=m.family,
            state=pb.Model.State.Name(m.state),
            execution_provider=m.execution_provider,
            providers_requested=tuple(m.providers_requested),
            providers_active=tuple(m.providers_active),
            task_types=tuple(m.task_types),
            default_for=tuple(m.default_for),
            max_batch_size=m.max_batch_size,
            max_queue_delay_ms=m.max_queue_delay_ms,
            max_input_length=m.max_input_length,
            quantization=m.quantization,
            labels=tuple(m.labels),
            size_bytes=m.size_bytes,
            load_seconds=m.load_seconds,
            error=m.error,
            instances=m.instances,
            provider=m.provider,
            remote_url=m.remote_url,
            remote_model=m.remote_model,
            quantization_check=(
                QuantizationCheck.from_proto(m.quantization_check)
                if m.HasField("quantization_check")
                else None
            ),
        )


@dataclass(frozen=True)
class InferenceResult:
    """What ``infer`` answers.

    ``result`` has the Hugging Face Inference API shape of the task; feature extraction returns its
    vectors in ``embedding`` (one input) or ``embeddings`` (a list of inputs) instead.
    """

    model_name: str
    task_type: str
    result: dict[str, Any]
    embedding: list[float] | None = None
    embeddings: list[list[float]] | None = None
    resource_usage: ResourceUsage | None = None

    @classmethod
    def from_proto(cls, m: pb.InferResponse) -> InferenceResult:
        return cls(
            model_name=m.model_name,
            task_type=m.task_type,
            result=_struct(m, "result") or {},
            embedding=list(m.embedding) if m.embedding else None,
            embeddings=[list(e.values) for e in m.embeddings] if m.embeddings else None,
            resource_usage=_usage(m),
        )


@dataclass(frozen=True)
class GenerationEvent:
    """A piece of a streamed generation.

    ``delta`` is the text since the previous event (the deltas concatenate to the final text); the
    last event has ``done`` and the ``result`` (``generated_text``, ``tokens_generated``,
    ``finish_reason``, ...).
    """

    delta: str
    done: bool
    result: dict[str, Any] | None = None
    resource_usage: ResourceUsage | None = None

    @classmethod
    def from_proto(cls, m: pb.GenerateEvent) -> GenerationEvent:
        return cls(
            delta=m.delta, done=m.done, result=_struct(m, "result"), resource_usage=_usage(m)
        )


def _usage(m: pb.InferResponse | pb.GenerateEvent) -> ResourceUsage | None:
    return ResourceUsage.from_proto(m.resource_usage) if m.HasField("resource_usage") else None


def _infer_request(
    model_name: str,
    inputs: Any,
    input_data: Mapping[str, Any] | None,
    parameters: Mapping[str, Any] | None,
    task_type: str,
) -> pb.InferRequest:
    request = pb.InferRequest(model_name=model_name, task_type=task_type)
    if inputs is not None:
        json_format.ParseDict(inputs, request.inputs)
    if input_data is not None:
        request.input_data.update(input_data)
    if parameters is not None:
        request.parameters.update(parameters)
    return request


def _generate_request(
    model_name: str,
    prompt: str | None,
    input_data: Mapping[str, Any] | None,
    parameters: Mapping[str, Any] | None,
) -> pb.InferRequest:
    data = dict(input_data or {})
    if prompt is not None:
        data["prompt"] = prompt
    return _infer_request(model_name, None, data, parameters, "")


def _list_request(task_type: str) -> pb.ListModelsRequest:
    return pb.ListModelsRequest(task_type=task_type)
