"""`taskorch serve` stops when asked, whenever it is asked: SIGTERM at each step of a watch
stream's set-up (issue 24), and a second Ctrl-C that cuts the drain short (issue 22 item 6)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("shutdown")

LONG_ECHO = pb.CreateTaskRequest(task_type="echo")
LONG_ECHO.input_data.update({"delay_seconds": 60, "progress_steps": 60})


def _wait_for_log(server: ServerProcess, message: str, timeout: float = 30.0) -> dict[str, object]:
    """The first JSON log line of the server whose event is ``message``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.logs().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == message:
                    return dict(entry)
        assert server.proc is not None and server.proc.poll() is None, server.logs()
        time.sleep(0.02)
    raise TimeoutError(f"no {message!r} in the log:\n{server.logs()}")


def _wait_running(stub: pb_grpc.TaskServiceStub, task_id: str) -> None:
    deadline = time.monotonic() + 30
    while stub.GetTask(pb.GetTaskRequest(task_id=task_id)).status != 2:  # RUNNING
        assert time.monotonic() < deadline
        time.sleep(0.02)


STEPS = ["call_started", "snapshot", "first_progress"]


@pytest.mark.parametrize("step", STEPS)
def test_sigterm_at_each_step_of_a_watch_stops_the_server_and_cuts_the_stream(
    server_factory: ServerFactory, step: str
) -> None:
    server = server_factory("--drain-seconds", "0")
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        task_id = stub.CreateTask(LONG_ECHO).task_id
        _wait_running(stub, task_id)
        call = stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30)
        started = time.monotonic()
        if step == "call_started":
            server.signal(signal.SIGTERM)
        seen: list[int] = []
        with pytest.raises(grpc.RpcError) as cut:
            for event in call:
                seen.append(event.type)
                at_step = (step == "snapshot" and event.type == 1) or (
                    step == "first_progress" and event.type == 3
                )
                if at_step and seen.count(event.type) == 1:
                    server.signal(signal.SIGTERM)
        # The stream ends with an error (never a clean end: the task did not finish)...
        assert cut.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, seen
        assert time.monotonic() - started < 15, seen
    # ...and the server exits promptly and cleanly.
    assert server.proc is not None and server.proc.wait(15) == 0, server.logs()


def _gateway_folders(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("taskorch-gateway-*"))


def test_a_second_ctrl_c_cuts_the_drain_short_and_cleans_up(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = server_factory(gateway=True, env={"TMPDIR": str(tmp)})  # drain: 30 s
    envoy_pid = int(str(_wait_for_log(server, "gateway ready")["pid"]))
    assert _gateway_folders(tmp)
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        task_ids = [stub.CreateTask(LONG_ECHO).task_id for _ in range(3)]
        for task_id in task_ids:
            _wait_running(stub, task_id)
    server.signal(signal.SIGINT)
    _wait_for_log(server, "draining running work")
    started = time.monotonic()
    server.signal(signal.SIGINT)  # the impatient user's second Ctrl-C
    assert server.proc is not None
    code = server.proc.wait(10)
    assert time.monotonic() - started < 6, server.logs()
    assert code == 130, server.logs()
    assert _gateway_folders(tmp) == [], "the gateway's temporary folder was left behind"
    with pytest.raises(ProcessLookupError):
        os.kill(envoy_pid, 0)
    # The work that was cut short is queued again for the next start, not lost.
    again = server_factory(database_url=server.database_url, env={"TMPDIR": str(tmp)})
    with grpc.insecure_channel(again.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        for task_id in task_ids:
            assert stub.GetTask(pb.GetTaskRequest(task_id=task_id)).status in (1, 2)


def test_a_third_ctrl_c_while_stopping_changes_nothing(server_factory: ServerFactory) -> None:
    server = server_factory()
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        _wait_running(stub, stub.CreateTask(LONG_ECHO).task_id)
    server.signal(signal.SIGINT)
    _wait_for_log(server, "draining running work")
    server.signal(signal.SIGINT)
    server.signal(signal.SIGINT)
    assert server.proc is not None and server.proc.wait(10) == 130, server.logs()
    assert "Traceback" not in server.logs()
