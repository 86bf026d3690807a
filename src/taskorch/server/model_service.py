"""ModelService over gRPC: the model repository and synchronous inference."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, TypeAlias

from google.protobuf import json_format

from taskorch import structs
from taskorch.domain.errors import InvalidArgument
from taskorch.inference import InferenceEngine, ModelInfo
from taskorch.inference.types import ModelState, QuantizationCheck
from taskorch.server.convert import struct_to_dict
from taskorch.v1 import model_service_pb2 as pb
from taskorch.v1 import model_service_pb2_grpc as pb_grpc
from taskorch.v1 import task_service_pb2

Context: TypeAlias = Any

_STATES = {
    ModelState.LOADING: pb.Model.LOADING,
    ModelState.READY: pb.Model.READY,
    ModelState.FAILED: pb.Model.LOAD_FAILED,
    ModelState.UNAVAILABLE: pb.Model.UNAVAILABLE,
}


def model_to_proto(info: ModelInfo) -> pb.Model:
    """A model of the repository as the API's message."""
    return pb.Model(
        name=info.name,
        task=str(info.task or ""),
        family=str(info.family or ""),
        state=_STATES[info.state],
        execution_provider=info.execution_provider,
        providers_requested=list(info.providers_requested),
        providers_active=list(info.providers_active),
        inputs=[_tensor(t) for t in info.inputs],
        outputs=[_tensor(t) for t in info.outputs],
        max_batch_size=info.max_batch_size,
        max_queue_delay_ms=info.max_queue_delay_ms,
        max_input_length=info.max_input_length,
        quantization=info.quantization,
        labels=list(info.labels),
        default_for=[str(t) for t in info.default_for],
        task_types=[str(t) for t in info.task_types],
        error=info.error or "",
        size_bytes=info.size_bytes,
        load_seconds=info.load_seconds or 0.0,
        instances=info.instances,
        provider=info.provider,
        remote_url=info.remote_url,
        remote_model=info.remote_model,
        quantization_check=_quantization_check(info.quantization_check),
    )


def _quantization_check(check: QuantizationCheck | None) -> pb.QuantizationCheck | None:
    if check is None:
        return None
    return pb.QuantizationCheck(
        probes=check.probes,
        cosine_mean=check.cosine_mean,
        cosine_min=check.cosine_min,
        cosine_threshold=check.cosine_threshold,
        cosine_floor=check.cosine_floor,
        top_label_agreement=check.top_label_agreement,
        float_size_bytes=check.float_size_bytes,
        int8_size_bytes=check.int8_size_bytes,
    )


def _tensor(tensor: Any) -> pb.Tensor:
    return pb.Tensor(name=tensor.name, dtype=tensor.dtype, shape=[str(d) for d in tensor.shape])


def _usage(usage: Any) -> task_service_pb2.ResourceUsage:
    return task_service_pb2.ResourceUsage(
        model_name=usage.model_name,
        inference_time_seconds=usage.inference_time_seconds,
        memory_used_gb=usage.memory_used_gb,
        execution_provider=usage.execution_provider,
    )


class ModelServicer(pb_grpc.ModelServiceServicer):
    """The ModelService RPCs: the repository's models and synchronous inference."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        """Every model of the repository, loaded or not, with the provider that runs it."""
        models = self.engine.models()
        if request.task_type:
            wanted = self.engine.canonical_task_type(request.task_type)
            models = [m for m in models if wanted in {str(t) for t in m.task_types}]
        return pb.ListModelsResponse(
            models=[model_to_proto(m) for m in models],
            supported_task_types=self.engine.supported_task_types(),
        )

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        """One model."""
        if not request.name:
            raise InvalidArgument("name is required", field="name")
        return model_to_proto(self.engine.model(request.name))

    def _check(self, request: pb.InferRequest) -> Any:
        if not request.model_name:
            raise InvalidArgument("model_name is required", field="model_name")
        model_task = self.engine.task_of(request.model_name)
        input_data: Mapping[str, Any] = (
            struct_to_dict(request.input_data, "input_data")
            if request.HasField("input_data")
            else {}
        )
        if request.HasField("inputs"):
            value = request.inputs
            inputs = (
                value.string_value  # the common case, without json_format's generic walk
                if value.WhichOneof("kind") == "string_value"
                else structs.to_dict_value(json_format.MessageToDict(value))
            )
            input_data = {**input_data, "inputs": inputs}
        parameters = (
            struct_to_dict(request.parameters, "parameters")
            if request.HasField("parameters")
            else {}
        )
        task_type = request.task_type or model_task
        return self.engine.check(task_type, request.model_name, input_data, parameters)

    async def Infer(self, request: pb.InferRequest, context: Context) -> pb.InferResponse:
        """Runs one inference now and answers its result."""
        checked = self._check(request)
        result = await self.engine.run(checked)
        answer = dict(result.result)
        # Vectors go into packed float fields: building them as Struct lists of Values
        # costs more than the model itself.
        embedding = answer.pop("embedding", None)
        embeddings = answer.pop("embeddings", None)
        response = pb.InferResponse(
            model_name=checked.model_name,
            task_type=str(checked.task_type),
            resource_usage=_usage(result.resource_usage),
            embedding=embedding or (),
            embeddings=[pb.Embedding(values=v) for v in embeddings or ()],
        )
        response.result.update(answer)
        return response

    async def Generate(
        self, request: pb.InferRequest, context: Context
    ) -> AsyncIterator[pb.GenerateEvent]:
        """Generates text and streams it as it is produced."""
        checked = self._check(request)
        result: Any = None
        async with contextlib.aclosing(generation(self.engine, checked)) as items:
            async for item in items:
                if isinstance(item, str):
                    yield pb.GenerateEvent(delta=item)
                else:
                    result = item
        final = pb.GenerateEvent(done=True, resource_usage=_usage(result.resource_usage))
        final.result.update(result.result)
        yield final


async def generation(engine: Any, checked: Any) -> AsyncGenerator[Any, None]:
    """Runs a generation, yielding its text deltas, then its result.

    The deltas come as they are produced (those that queued up while one was being sent are merged),
    then the result; it raises what ended the generation. Closing the iterator early (the client
    went away) cancels the generation and frees the model's batch slot.
    """
    deltas: asyncio.Queue[str | None] = asyncio.Queue()
    cancel = asyncio.Event()

    async def on_output(delta: str) -> None:
        deltas.put_nowait(delta)

    async def generate() -> Any:
        try:
            return await engine.run(checked, on_output=on_output, cancel=cancel)
        finally:
            deltas.put_nowait(None)

    work = asyncio.create_task(generate())
    try:
        while (delta := await deltas.get()) is not None:
            pending = [delta]
            while not deltas.empty():
                more = deltas.get_nowait()
                if more is None:
                    deltas.put_nowait(None)
                    break
                pending.append(more)
            yield "".join(pending)
        yield await work
    finally:
        cancel.set()
        if not work.done():
            await asyncio.wait({work}, timeout=5)
