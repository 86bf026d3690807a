"""A property-based fuzz run over every gRPC method (hypothesis), with a fixed budget.

Requests are generated from the message descriptors: any field may be set or not, strings
come from a mix of random text and values the API gives meaning to (ids, status words, huge
strings), numbers include NaN, infinities and the type's limits, enums include unknown
numbers, Structs are random JSON. No answer may be INTERNAL, UNKNOWN or DATA_LOSS (a crash
or a stack trace), every refusal must say something, and the server must be healthy
afterwards with no unexpected error in its log. The server has tiny models, so inference
methods run real ONNX Runtime sessions on what the fuzzer sends.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskorch.gateway.routes import SERVICE_FILES
from tests.inference.tiny_models import build_tiny_models
from tests.servers import ServerProcess, sqlite_url

pytestmark = pytest.mark.xdist_group("grpc_fuzz")

EXAMPLES_PER_METHOD = int(os.environ.get("TASKORCH_FUZZ_EXAMPLES", "25"))
CRASHES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
# Answers that are fine for a fuzzer's request: the call was refused, or a stream or a long
# wait outlived the fuzzer's patience.
TIMEOUT_SECONDS = 5.0

MEANINGFUL_STRINGS = [
    "",
    " ",
    "echo",
    "text_analysis",
    "feature_extraction",
    "text_generation",
    "container",
    "tiny-gpt2",
    "tiny-bert-embed",
    "text-analysis",
    "PENDING",
    "completed",
    "in_progress",
    "-created_at",
    "priority",
    str(uuid.uuid4()),
    "00000000-0000-0000-0000-000000000000",
    "../../etc/passwd",
    "'; DROP TABLE tasks; --",
    "%00",
    "\x00",
    "é" * 300,
    "x" * 5000,
]


def _methods() -> list[tuple[str, d.MethodDescriptor]]:
    found = []
    for module in SERVICE_FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append((f"{service.name}.{method.name}", method))
    return sorted(found, key=lambda item: item[0])


METHODS = _methods()


def _string() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(MEANINGFUL_STRINGS), st.text(max_size=40))


def _json(depth: int = 0) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-(2**53), 2**53),
        _string(),
    )
    if depth >= 3:
        return scalars
    return st.one_of(
        scalars,
        st.lists(_json(depth + 1), max_size=4),
        st.dictionaries(_string(), _json(depth + 1), max_size=4),
    )


def _struct() -> st.SearchStrategy[struct_pb2.Struct]:
    def build(value: dict[str, Any]) -> struct_pb2.Struct:
        struct = struct_pb2.Struct()
        struct.update(value)
        return struct

    return st.dictionaries(_string(), _json(), max_size=5).map(build)


def _value() -> st.SearchStrategy[struct_pb2.Value]:
    def build(value: Any) -> struct_pb2.Value:
        wrapper = struct_pb2.Struct()
        wrapper.update({"v": value})
        return wrapper.fields["v"]

    return _json().map(build)


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == d.FieldDescriptor.TYPE_STRING:
        return _string()
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        width = 32 if kind == d.FieldDescriptor.TYPE_FLOAT else 64
        return st.one_of(
            st.sampled_from([0.0, -1.0, 1e-9, 3.0e38, math.nan, math.inf, -math.inf]),
            st.floats(width=width),
        )
    if kind == d.FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 1000))
    signed64 = (
        d.FieldDescriptor.TYPE_INT64,
        d.FieldDescriptor.TYPE_SINT64,
        d.FieldDescriptor.TYPE_SFIXED64,
    )
    if kind in signed64:
        low, high = -(2**63), 2**63 - 1
    elif kind in (d.FieldDescriptor.TYPE_UINT64, d.FieldDescriptor.TYPE_FIXED64):
        low, high = 0, 2**64 - 1
    elif kind in (d.FieldDescriptor.TYPE_UINT32, d.FieldDescriptor.TYPE_FIXED32):
        low, high = 0, 2**32 - 1
    else:
        low, high = -(2**31), 2**31 - 1
    return st.one_of(st.sampled_from([0, 1, -1, low, high]), st.integers(low, high))


def _message(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":
        return _struct()
    if descriptor.full_name == "google.protobuf.Value":
        return _value()
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.integers(0, 253402300799).map(lambda s: timestamp_pb2.Timestamp(seconds=s))
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == d.FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                key = _scalar(field.message_type.fields_by_name["key"])
                value_field = field.message_type.fields_by_name["value"]
                value = (
                    _message(value_field.message_type, depth + 1)
                    if value_field.type == d.FieldDescriptor.TYPE_MESSAGE
                    else _scalar(value_field)
                )
                fields[field.name] = st.dictionaries(key, value, max_size=3)
                continue
            one: st.SearchStrategy[Any] = _message(field.message_type, depth + 1)
        else:
            one = _scalar(field)
        is_repeated = field.is_repeated
        fields[field.name] = st.lists(one, max_size=3) if is_repeated else one

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            target = getattr(message, name) if field.is_repeated else None
            is_map = (
                field.type == d.FieldDescriptor.TYPE_MESSAGE
                and field.message_type.GetOptions().map_entry
            )
            if is_map:
                for k, v in value.items():
                    if isinstance(v, Message):
                        getattr(message, name)[k].CopyFrom(v)
                    else:
                        getattr(message, name)[k] = v
            elif target is not None and field.type == d.FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            elif target is not None:
                target.extend(value)
            elif field.type == d.FieldDescriptor.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=fields).map(build)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("grpc-fuzz")
    models = workdir / "models"
    models.mkdir()
    tiny = build_tiny_models()
    for name in ("tiny-gpt2", "tiny-bert-embed"):
        (models / name).symlink_to(tiny.models_dir / name)
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=models,
        args=("--workers", "2"),
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def channel(fuzz_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzz_server.grpc_addr) as opened:
        yield opened


def _call(channel: grpc.Channel, method: d.MethodDescriptor, request: Message) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = type(request).SerializeToString
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=serialize)(
                request, timeout=TIMEOUT_SECONDS
            )
            for _, _message in zip(range(3), stream, strict=False):
                pass
            stream.cancel()
        else:
            channel.unary_unary(path, request_serializer=serialize)(
                request, timeout=TIMEOUT_SECONDS
            )
    except grpc.RpcError as error:
        code = error.code()
        assert code not in CRASHES, (path, request, code, error.details())
        if code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            assert error.details(), (path, request, code)


@pytest.mark.parametrize("name", [name for name, _ in METHODS])
def test_no_generated_request_crashes_the_method(channel: grpc.Channel, name: str) -> None:
    method = dict(METHODS)[name]

    @settings(
        max_examples=EXAMPLES_PER_METHOD,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=_message(method.input_type))
    def run(request: Message) -> None:
        _call(channel, method, request)

    run()


def test_the_server_is_healthy_and_logged_no_unexpected_error(
    fuzz_server: ServerProcess, channel: grpc.Channel
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    log = fuzz_server.logs()
    assert "unexpected error" not in log, log[-5000:]
    assert "Traceback" not in log, log[-5000:]


def test_the_fuzzer_covers_every_method() -> None:
    names = {name for name, _ in METHODS}
    assert {"TaskService.CreateTask", "WorkerService.Listen", "ModelService.Generate"} <= names
    assert len(names) >= 40
