"""WorkerService.Report: many subtasks reported in one call, each answered on its own."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from taskorch.v1 import worker_service_pb2 as pb
from taskorch.v1 import worker_service_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory


def _reason(status: object) -> str:
    for detail in status.details:  # type: ignore[attr-defined]
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def test_one_refused_report_fails_alone_and_the_rest_commit(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--workers", "0")
    with server.client() as client, grpc.insecure_channel(server.grpc_addr) as channel:
        tasks = [client.create_task(task_type="echo", input_data={"n": i}) for i in range(3)]
        stub = pb_grpc.WorkerServiceStub(channel)
        take = pb.TakeRequest(worker_id="w", kinds=["echo"], wait_seconds=5)
        leases = [stub.Take(take, timeout=10) for _ in tasks]
        first, second, third = leases
        reports = [
            pb.SubtaskReport(
                complete=pb.CompleteRequest(subtask_id=first.subtask_id, lease_id=first.lease_id)
            ),
            pb.SubtaskReport(
                complete=pb.CompleteRequest(subtask_id=second.subtask_id, lease_id="not-mine")
            ),
            pb.SubtaskReport(
                fail=pb.FailRequest(
                    subtask_id=third.subtask_id,
                    lease_id=third.lease_id,
                    error="broken",
                    permanent=True,
                )
            ),
        ]
        reports[0].complete.result.update({"ok": 1})
        answer = stub.Report(pb.ReportRequest(reports=reports), timeout=10)

        assert [o.WhichOneof("outcome") for o in answer.outcomes] == [
            "subtask",
            "error",
            "subtask",
        ]
        refused = answer.outcomes[1].error
        assert refused.code == grpc.StatusCode.ABORTED.value[0]  # as Complete answers it
        assert _reason(refused) == "LEASE_LOST"
        assert refused.message.startswith("reports[1]: ")
        by_id = {
            t.task_id: client.wait_for_task(t.task_id, timeout=10) for t in (tasks[0], tasks[2])
        }
        assert by_id[tasks[0].task_id].status == "COMPLETED"
        assert by_id[tasks[0].task_id].result == {"ok": 1}
        assert by_id[tasks[2].task_id].status == "FAILED"
        assert client.get_task(tasks[1].task_id).status == "RUNNING"  # its lease still held


@pytest.mark.parametrize("count", [0, 1001])
def test_a_report_call_holds_one_to_a_thousand_reports(
    server_factory: ServerFactory, count: int
) -> None:
    server = server_factory("--workers", "0")
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)
        report = pb.SubtaskReport(release=pb.ReleaseRequest(subtask_id="s", lease_id="l"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Report(pb.ReportRequest(reports=[report] * count), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reports" in (refused.value.details() or "")
