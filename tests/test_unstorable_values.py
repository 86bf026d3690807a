"""Values no backend can store (NUL characters, non-finite numbers) are refused at the edge with
INVALID_ARGUMENT naming the field, the same on SQLite and PostgreSQL, and never fail the other
requests committed in the same batch."""

from __future__ import annotations

import concurrent.futures
import math

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from taskorch.domain.errors import InvalidArgument
from taskorch.server.unstorable import refuse_unstorable
from taskorch.v1 import chat_service_pb2 as chat_pb
from taskorch.v1 import chat_service_pb2_grpc as chat_grpc
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from taskorch.v1 import worker_service_pb2 as worker_pb
from taskorch.v1 import worker_service_pb2_grpc as worker_grpc
from tests.conftest import ServerFactory, WorkerFactory
from tests.servers import ServerProcess

NUL = "a\x00b"


def _struct(**values: object) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _violation(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    raise AssertionError(f"no field violation in {status}")


def _refused(call: object, request: object) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=15)  # type: ignore[operator]
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    return _violation(error), error.details() or ""


CREATES_WITH_NUL = [
    (pb.CreateTaskRequest(text=NUL), "text"),
    (pb.CreateTaskRequest(task_type="echo", input_data=_struct(note=NUL)), "input_data.note"),
    (
        pb.CreateTaskRequest(task_type="echo", input_data=_struct(deep={"list": ["ok", NUL]})),
        "input_data.deep.list[1]",
    ),
    (pb.CreateTaskRequest(text="hello", parameters=_struct(mode=NUL)), "parameters.mode"),
    (pb.CreateTaskRequest(text="hello", request_id=NUL), "request_id"),
    (pb.CreateTaskRequest(task_type=NUL), "task_type"),
    (pb.CreateTaskRequest(task_type="echo", model_name=NUL), "model_name"),
    (pb.CreateTaskRequest(template=NUL), "template"),
]


@pytest.mark.parametrize(("request_", "field"), CREATES_WITH_NUL)
def test_a_nul_character_in_any_create_field_is_refused_naming_it(
    server: ServerProcess, request_: pb.CreateTaskRequest, field: str
) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        named, message = _refused(pb_grpc.TaskServiceStub(channel).CreateTask, request_)
    assert named == field
    assert "NUL" in message and field in message


def test_a_nul_character_in_filters_keys_and_chat_fields_is_refused(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        tasks = pb_grpc.TaskServiceStub(channel)
        chat = chat_grpc.ChatServiceStub(channel)
        assert _refused(tasks.ListTasks, pb.ListTasksRequest(status=NUL))[0] == "status"
        assert _refused(tasks.GetTask, pb.GetTaskRequest(task_id=NUL))[0] == "task_id"
        key = _refused(
            tasks.CreateTask, pb.CreateTaskRequest(text="x", parameters=_struct(**{NUL: 1}))
        )[0]
        assert key.startswith("parameters[")
        assert _refused(chat.CreateSession, chat_pb.CreateSessionRequest(title=NUL))[0] == "title"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CreateTaskRequest(task_type="echo", input_data=_struct(x=math.nan)), "input_data.x"),
        (
            pb.CreateTaskRequest(task_type="echo", input_data=_struct(x=[1.0, math.inf])),
            "input_data.x[1]",
        ),
        (pb.CreateTaskRequest(text="hi", parameters=_struct(t=-math.inf)), "parameters.t"),
        (pb.CreateTaskRequest(text="hi", parameters=_struct(a={"b": math.nan})), "parameters.a.b"),
    ],
)
def test_non_finite_numbers_in_a_struct_are_refused_naming_the_field(
    server: ServerProcess, request_: pb.CreateTaskRequest, field: str
) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        named, message = _refused(pb_grpc.TaskServiceStub(channel).CreateTask, request_)
    assert named == field
    assert "finite" in message


def test_a_refused_value_never_fails_the_creates_batched_with_it(server: ServerProcess) -> None:
    """100 concurrent creates, one in five carrying a NUL character: every valid one is
    created (none answers UNAVAILABLE), every bad one is INVALID_ARGUMENT."""
    requests = [
        pb.CreateTaskRequest(text=NUL if i % 5 == 0 else f"valid text {i}", request_id=f"r{i}")
        for i in range(100)
    ]
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)

        def create(request: pb.CreateTaskRequest) -> grpc.StatusCode:
            try:
                stub.CreateTask(request, timeout=30)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(create, requests))
    expected = [
        grpc.StatusCode.INVALID_ARGUMENT if i % 5 == 0 else grpc.StatusCode.OK for i in range(100)
    ]
    assert codes == expected


def _leased_subtask(server: ServerProcess) -> tuple[str, worker_pb.Subtask]:
    """A task with one subtask of kind "manual", leased through the WorkerService."""
    with server.client() as client:
        task = client.create_task(task_type="container")
    with grpc.insecure_channel(server.grpc_addr) as channel:
        pb_grpc.TaskServiceStub(channel).CreateSubtask(
            pb.CreateSubtaskRequest(task_id=task.task_id, kind="manual"), timeout=10
        )
        lease = worker_grpc.WorkerServiceStub(channel).Take(
            worker_pb.TakeRequest(worker_id="w", kinds=["manual"], lease_seconds=30),
            timeout=10,
        )
    return task.task_id, lease


@pytest.mark.parametrize("seconds", [math.nan, -math.inf, math.inf, -1e300, -1.0])
def test_a_heartbeat_with_a_lease_that_is_not_a_positive_number_is_refused(
    server_factory: ServerFactory, seconds: float
) -> None:
    server = server_factory("--workers", "0")
    _, lease = _leased_subtask(server)
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = worker_grpc.WorkerServiceStub(channel)
        beat = worker_pb.HeartbeatRequest(
            subtask_id=lease.subtask_id, lease_id=lease.lease_id, lease_seconds=seconds
        )
        field, _ = _refused(stub.Heartbeat, beat)
        assert field == "lease_seconds"
        good = worker_pb.HeartbeatRequest(
            subtask_id=lease.subtask_id, lease_id=lease.lease_id, lease_seconds=30
        )
        assert not stub.Heartbeat(good, timeout=10).stop  # the lease is still held


def test_a_result_with_nan_is_refused_naming_the_field_and_the_lease_is_kept(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--workers", "0")
    task_id, lease = _leased_subtask(server)
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = worker_grpc.WorkerServiceStub(channel)
        bad = worker_pb.CompleteRequest(subtask_id=lease.subtask_id, lease_id=lease.lease_id)
        bad.result.update({"scores": [0.5, math.nan]})
        assert _refused(stub.Complete, bad)[0] == "result.scores[1]"
        good = worker_pb.CompleteRequest(subtask_id=lease.subtask_id, lease_id=lease.lease_id)
        good.result.update({"scores": [0.5, 0.25]})
        stub.Complete(good, timeout=10)
    with server.client() as client:
        assert client.wait_for_task(task_id, timeout=30).result == {"scores": [0.5, 0.25]}


def test_a_worker_whose_result_holds_nan_fails_the_task_naming_the_field(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server)
    with server.client() as client:
        task = client.create_task(task_type="container", max_attempts=3)
        with grpc.insecure_channel(server.grpc_addr) as channel:
            pb_grpc.TaskServiceStub(channel).CreateSubtask(
                pb.CreateSubtaskRequest(task_id=task.task_id, kind="not_a_number"), timeout=10
            )
        done = client.wait_for_task(task.task_id, timeout=60)
    assert done.status == "FAILED"
    assert done.error_code == "INVALID_RESULT"
    assert "result.score" in (done.error or "") and "finite" in (done.error or "")
    assert done.attempt == 1  # not retried: the same handler would answer the same


# -- the check itself, on parsed requests with their wire bytes --------------------------------

WITH_NUMBERS = {"count": 5, "scores": [0.25, 3.0], "nested": {"size": 12.5}}


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        *CREATES_WITH_NUL,
        (pb.CreateTaskRequest(task_type="echo", input_data=_struct(**{"k\x00": 1})), "input_data"),
        (pb.CreateTaskRequest(task_type="echo", input_data=_struct(x=math.nan)), "input_data.x"),
        (
            pb.CreateTaskRequest(task_type="echo", parameters=_struct(deep=[1, -math.inf])),
            "parameters.deep[1]",
        ),
    ],
)
def test_a_request_holding_numbers_is_still_checked_everywhere(
    request_: pb.CreateTaskRequest, field: str
) -> None:
    """Numbers put zero bytes on the wire (past the byte prefilter): every bad value is found."""
    message = pb.CreateTaskRequest()
    message.CopyFrom(request_)
    message.input_data.update(WITH_NUMBERS)  # alongside, never in place of, the bad value
    raw = message.SerializeToString()
    assert b"\x00" in raw
    with pytest.raises(InvalidArgument) as refused:
        refuse_unstorable(message, raw)
    named = refused.value.violations[0].field
    assert named.startswith(field), named


def test_clean_requests_pass_whatever_their_bytes() -> None:
    for message in (
        pb.CreateTaskRequest(task_type="echo", input_data=_struct(**WITH_NUMBERS)),
        # Words holding "nan" or "inf", an escaped-looking backslash, a long string.
        pb.CreateTaskRequest(text="banana infinity \\000", input_data=_struct(n=1.0)),
        pb.CreateTaskRequest(task_type="echo", input_data=_struct(blob="x" * 20000, n=2.0)),
    ):
        refuse_unstorable(message, message.SerializeToString())


def _subtask_with_results(key: str, **values: object) -> pb.Subtask:
    subtask = pb.Subtask(subtask_id="s1")
    subtask.dependency_results[key].update(values)
    return subtask


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (_subtask_with_results("t 1", x=[1, math.nan]), "dependency_results['t 1'].x[1]"),
        (_subtask_with_results("t\x00"), "dependency_results['t\\x00']"),
        (pb.CreateTaskRequest(input_data=_struct(**{"[a": {"b": math.inf}})), "input_data.[a.b"),
        (pb.CreateTaskRequest(depends_on=["t_1", NUL]), "depends_on[1]"),
        (pb.CreateTaskRequest(parameters=_struct(a={"b": [{"c": NUL}]})), "parameters.a.b[0].c"),
    ],
)
def test_the_refusal_names_the_whole_path_through_maps_lists_and_keys(
    message: pb.CreateTaskRequest | pb.Subtask, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        refuse_unstorable(message)
    assert refused.value.violations[0].field == field
    assert str(refused.value).startswith(f"{field} ")
