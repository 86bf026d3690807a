"""What is accepted can be read back (issue 22 item 4): a documented input limit that leaves
room for the result, lists that leave large payloads out unless asked, and an SDK whose message
limit is the server's (gRPC's default 4 MiB refused answers from 2.1 MiB of input)."""

from __future__ import annotations

import grpc
import pytest

from taskorch.client import InvalidArgumentError
from taskorch.domain.limits import MAX_INPUT_BYTES, MAX_RESULT_BYTES, MiB
from taskorch.v1 import task_service_pb2 as task_pb
from taskorch.v1 import task_service_pb2_grpc as task_grpc
from taskorch.v1 import worker_service_pb2 as pb
from taskorch.v1 import worker_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess

BIG = int(3.5 * MiB)  # under the input limit; the echo's result is as large again


def _blob(size: int, tag: str) -> dict[str, object]:
    return {"tag": tag, "blob": "x" * size}


def test_a_task_with_an_input_near_the_limit_is_read_back_whole(server: ServerProcess) -> None:
    with server.client(timeout=60) as client:  # the SDK's default limits
        created = client.create_task(task_type="echo", input_data=_blob(BIG, "whole"))
        assert created.input_data is not None and len(created.input_data["blob"]) == BIG
        done = client.wait_for_task(created.task_id, timeout=60)  # WatchTask
        assert done.status == "COMPLETED", done.error
        got = client.get_task(created.task_id)
        assert got.input_data == _blob(BIG, "whole")
        assert got.result is not None and got.result["echo"]["blob"] == "x" * BIG
        events = list(client.watch_task(created.task_id))  # the snapshot carries it all
        assert events[0].task is not None and events[0].task.result == got.result


def test_lists_leave_large_payloads_out_unless_asked(server: ServerProcess) -> None:
    with server.client(timeout=60) as client:
        big = client.create_task(task_type="echo", input_data=_blob(BIG, "listed"))
        small = client.create_task(task_type="echo", input_data={"tag": "small"})
        for task in (big, small):
            assert client.wait_for_task(task.task_id, timeout=60).status == "COMPLETED"
        listed = {t.task_id: t for t in client.list_tasks(limit=100).tasks}
        assert listed[big.task_id].input_data is None and listed[big.task_id].result is None
        assert listed[big.task_id].omitted_fields == ("input_data", "result")
        assert listed[small.task_id].input_data == {"tag": "small"}
        assert listed[small.task_id].omitted_fields == ()
        full = client.list_tasks(limit=1, view="TASK_VIEW_FULL", task_type="echo")
        assert full.tasks and full.tasks[0].omitted_fields == ()


def test_a_full_list_stops_its_page_early_and_its_token_goes_on(server: ServerProcess) -> None:
    with server.client(timeout=60) as client:
        ids = []
        for n in range(3):
            task = client.create_task(task_type="echo", input_data=_blob(BIG, f"page-{n}"))
            assert client.wait_for_task(task.task_id, timeout=60).status == "COMPLETED"
            ids.append(task.task_id)
        seen: list[str] = []
        token = ""
        for _ in range(20):
            page = client.list_tasks(
                limit=50, view="TASK_VIEW_FULL", task_type="echo", page_token=token
            )
            assert len(page.tasks) >= 1
            for task in page.tasks:
                seen.append(task.task_id)
                if task.task_id in ids:
                    assert task.input_data is not None and task.result is not None
            token = page.next_page_token
            if not token:
                break
        assert set(ids) <= set(seen) and len(seen) == len(set(seen))


@pytest.mark.parametrize("size", [MAX_INPUT_BYTES + 1024, 15 * MiB])
def test_an_input_over_the_limit_is_refused_naming_the_field(
    server: ServerProcess, size: int
) -> None:
    with server.client(timeout=60) as client, pytest.raises(InvalidArgumentError) as caught:
        client.create_task(task_type="echo", input_data=_blob(size, "too big"))
    assert caught.value.field_violations[0].field == "input_data"
    assert "at most 4 MiB" in caught.value.message


def test_a_result_over_the_limit_is_refused_naming_the_field(server: ServerProcess) -> None:
    with server.client() as client, grpc.insecure_channel(server.grpc_addr) as channel:
        task = client.create_task(task_type="container")
        task_grpc.TaskServiceStub(channel).CreateSubtask(
            task_pb.CreateSubtaskRequest(task_id=task.task_id, kind="big-results"), timeout=10
        )
        workers = pb_grpc.WorkerServiceStub(channel)
        lease = workers.Take(pb.TakeRequest(worker_id="w", kinds=["big-results"]), timeout=10)
        complete = pb.CompleteRequest(subtask_id=lease.subtask_id, lease_id=lease.lease_id)
        complete.result.update({"blob": "x" * (MAX_RESULT_BYTES + 1024)})
        with pytest.raises(grpc.RpcError) as caught:
            workers.Complete(complete, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "result" in caught.value.details()
        assert client.get_task(task.task_id).status == "RUNNING"  # the lease is still held
