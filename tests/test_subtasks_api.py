"""Subtasks (seed 000): containers of custom work, stages, take within a task, status reports."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from taskorch.client import Client
from taskorch.client._errors import from_rpc_error
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from taskorch.v1.status_pb2 import COMPLETED, FAILED, RUNNING
from tests.servers import ServerProcess


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.TaskServiceStub]:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        yield pb_grpc.TaskServiceStub(channel)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as api:
        yield api


def _add(stub: pb_grpc.TaskServiceStub, task_id: str, kind: str, **fields: object) -> pb.Subtask:
    request = pb.CreateSubtaskRequest(task_id=task_id, kind=kind, **fields)  # type: ignore[arg-type]
    return stub.CreateSubtask(request, timeout=10)


def _take(stub: pb_grpc.TaskServiceStub, task_id: str, kind: str) -> pb.Subtask:
    request = pb.TakeSubtaskRequest(task_id=task_id, worker_id="tester", kinds=[kind])
    return stub.TakeSubtask(request, timeout=10)


def _report(
    stub: pb_grpc.TaskServiceStub, subtask: pb.Subtask, status: int, **fields: object
) -> pb.SubtaskStatusUpdate:
    request = pb.UpdateSubtaskStatusRequest(
        task_id=subtask.task_id,
        subtask_id=subtask.subtask_id,
        lease_id=subtask.lease_id,
        status=status,
        **fields,  # type: ignore[arg-type]
    )
    return stub.UpdateSubtaskStatus(request, timeout=10)


def test_a_container_completes_when_all_its_subtasks_have(
    client: Client, stub: pb_grpc.TaskServiceStub
) -> None:
    task = client.create_task(task_type="container")
    assert task.status == "PENDING" and task.progress_message == "waiting for subtasks"
    first = _add(stub, task.task_id, "manual-a", name="first")
    second = _add(stub, task.task_id, "manual-a", name="second")
    assert first.ready and second.ready  # stage 0 runs in parallel
    a = _take(stub, task.task_id, "manual-a")
    b = _take(stub, task.task_id, "manual-a")
    assert {a.subtask_id, b.subtask_id} == {first.subtask_id, second.subtask_id}
    assert a.lease_id and a.attempt == 1 and a.status == RUNNING
    assert client.get_task(task.task_id).status == "RUNNING"
    beat = _report(stub, a, RUNNING, progress=50, message="half way")
    assert not beat.stop and beat.subtask.progress == 50
    result = pb.UpdateSubtaskStatusRequest(
        task_id=a.task_id, subtask_id=a.subtask_id, lease_id=a.lease_id, status=COMPLETED
    )
    result.result.update({"part": "a"})
    stub.UpdateSubtaskStatus(result, timeout=10)
    assert client.get_task(task.task_id).status == "RUNNING"
    result_b = pb.UpdateSubtaskStatusRequest(
        task_id=b.task_id, subtask_id=b.subtask_id, lease_id=b.lease_id, status=COMPLETED
    )
    result_b.result.update({"part": "b"})
    stub.UpdateSubtaskStatus(result_b, timeout=10)
    done = client.get_task(task.task_id)
    assert done.status == "COMPLETED"
    assert done.result is not None
    assert done.result["steps"] == {"first": {"part": "a"}, "second": {"part": "b"}}


def test_later_stages_wait_for_earlier_ones(client: Client, stub: pb_grpc.TaskServiceStub) -> None:
    task = client.create_task(task_type="container")
    _add(stub, task.task_id, "staged", name="prepare")
    late = _add(stub, task.task_id, "staged", name="finish", stage=1)
    assert not late.ready
    first = _take(stub, task.task_id, "staged")
    assert first.name == "prepare"
    with pytest.raises(grpc.RpcError) as nothing:
        _take(stub, task.task_id, "staged")
    assert nothing.value.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(nothing.value).reason == "NO_WORK_AVAILABLE"
    _report(stub, first, COMPLETED)
    second = _take(stub, task.task_id, "staged")
    assert second.name == "finish"
    _report(stub, second, COMPLETED)
    assert client.get_task(task.task_id).status == "COMPLETED"


def test_list_get_and_update_subtask_info(client: Client, stub: pb_grpc.TaskServiceStub) -> None:
    task = client.create_task(task_type="container")
    created = _add(stub, task.task_id, "annotated", name="one")
    update = pb.UpdateSubtaskRequest(
        task_id=task.task_id, subtask_id=created.subtask_id, name="renamed"
    )
    update.info.update({"owner": "ops", "tries": 1})
    update.input.update({"x": 1})
    updated = stub.UpdateSubtask(update, timeout=10)
    assert updated.name == "renamed" and dict(updated.info)["owner"] == "ops"
    fetched = stub.GetSubtask(
        pb.GetSubtaskRequest(task_id=task.task_id, subtask_id=created.subtask_id), timeout=10
    )
    assert fetched.input["x"] == 1
    listed = stub.ListSubtasks(pb.ListSubtasksRequest(task_id=task.task_id), timeout=10)
    assert [s.subtask_id for s in listed.subtasks] == [created.subtask_id] and listed.total == 1
    pending = stub.ListSubtasks(
        pb.ListSubtasksRequest(task_id=task.task_id, status="queued"), timeout=10
    )
    assert pending.total == 1
    taken = _take(stub, task.task_id, "annotated")
    late_input = pb.UpdateSubtaskRequest(task_id=task.task_id, subtask_id=taken.subtask_id)
    late_input.input.update({"x": 2})
    with pytest.raises(grpc.RpcError) as started:
        stub.UpdateSubtask(late_input, timeout=10)
    assert from_rpc_error(started.value).reason == "SUBTASK_STARTED"


def test_reports_need_the_current_lease(client: Client, stub: pb_grpc.TaskServiceStub) -> None:
    task = client.create_task(task_type="container")
    _add(stub, task.task_id, "leased")
    taken = _take(stub, task.task_id, "leased")
    forged = pb.Subtask()
    forged.CopyFrom(taken)
    forged.lease_id = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(grpc.RpcError) as lost:
        _report(stub, forged, COMPLETED)
    assert lost.value.code() == grpc.StatusCode.ABORTED
    assert from_rpc_error(lost.value).reason == "LEASE_LOST"
    with pytest.raises(grpc.RpcError) as missing:
        _report(stub, pb.Subtask(task_id=taken.task_id, subtask_id=taken.subtask_id), COMPLETED)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_cancelled_task_tells_its_worker_to_stop(
    client: Client, stub: pb_grpc.TaskServiceStub
) -> None:
    task = client.create_task(task_type="container")
    _add(stub, task.task_id, "stoppable")
    taken = _take(stub, task.task_id, "stoppable")
    client.cancel_task(task.task_id)
    answer = _report(stub, taken, RUNNING, progress=10)
    assert answer.stop and answer.reason == "cancelled"


def test_a_failed_subtask_fails_the_container_and_stops_its_siblings(
    client: Client, stub: pb_grpc.TaskServiceStub
) -> None:
    task = client.create_task(task_type="container", max_attempts=1)
    _add(stub, task.task_id, "pair")
    _add(stub, task.task_id, "pair")
    one = _take(stub, task.task_id, "pair")
    other = _take(stub, task.task_id, "pair")
    _report(stub, one, FAILED, error="broken input", error_code="BAD_INPUT", permanent=True)
    done = client.get_task(task.task_id)
    assert done.status == "FAILED" and done.error == "broken input"
    assert done.error_code == "BAD_INPUT"
    assert _report(stub, other, RUNNING).stop


def test_subtasks_cannot_be_added_to_a_finished_task(
    client: Client, stub: pb_grpc.TaskServiceStub
) -> None:
    task = client.wait_for_task(client.create_task(text="finished").task_id, timeout=30)
    with pytest.raises(grpc.RpcError) as finished:
        _add(stub, task.task_id, "late")
    assert from_rpc_error(finished.value).reason == "TASK_FINISHED"
    with pytest.raises(grpc.RpcError) as no_kind:
        _add(stub, client.create_task(task_type="container").task_id, "")
    assert no_kind.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_built_in_tasks_list_their_own_subtask(
    client: Client, stub: pb_grpc.TaskServiceStub
) -> None:
    task = client.wait_for_task(client.create_task(text="one subtask").task_id, timeout=30)
    listed = stub.ListSubtasks(pb.ListSubtasksRequest(task_id=task.task_id), timeout=10)
    assert [s.kind for s in listed.subtasks] == ["text_analysis"]
    assert listed.subtasks[0].result["word_count"] == 2
