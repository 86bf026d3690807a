"""`GET /v1/tasks/{id}:watch` through Envoy: Server-Sent Events that arrive as they happen, and
streams that end badly are not presented as a clean end (chunked trailers carry grpc-status)."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.gateway._http import (
    TERMINAL,
    assert_json_error,
    read_sse,
    wait_for_status,
)
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("gateway_watch")

# Four progress events half a second apart.
SLOW_ECHO = {"task_type": "echo", "input_data": {"delay_seconds": 2.0, "progress_steps": 4}}


def _create(base_url: str, payload: dict[str, Any]) -> str:
    response = httpx.post(f"{base_url}/v1/tasks", json=payload, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["task_id"])


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_events_arrive_as_they_happen(gateway_server: ServerProcess) -> None:
    task_id = _create(gateway_server.http_url, SLOW_ECHO)
    stream = read_sse(gateway_server.http_url, f"/v1/tasks/{task_id}:watch", timeout=30)
    assert stream.status == 200 and stream.complete
    events = stream.messages
    assert events[0]["type"] == "SNAPSHOT" and events[0]["task"]["task_id"] == task_id
    sequences = [e["sequence"] for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    progress = [(arrived, e) for arrived, e in stream.events if e["type"] == "PROGRESS"]
    assert [e["progress"] for _, e in progress] == [25, 50, 75, 100]
    # Each event reaches the HTTP client right after the server stored it, not at the end.
    for arrived, event in stream.events[1:]:
        lag = arrived - _timestamp(event["created_at"])
        assert -0.05 < lag < 0.5, (lag, event)
    assert progress[-1][0] - progress[0][0] > 1.0
    last = events[-1]
    assert last["type"] == "STATUS_CHANGED" and last["status"] == "COMPLETED"
    assert last["task"]["result"]["echo"] == SLOW_ECHO["input_data"]


def test_many_tasks_stream_over_one_rest_watch(gateway_server: ServerProcess) -> None:
    first = _create(gateway_server.http_url, SLOW_ECHO)
    second = _create(gateway_server.http_url, SLOW_ECHO)
    path = f"/v1/tasks:watch?task_ids={first}&task_ids={second}&terminal_only=true"
    stream = read_sse(gateway_server.http_url, path, timeout=30)
    assert stream.status == 200 and stream.complete
    # Only the ends, one per task, each with its result; the stream ends after both.
    ends = {e["task_id"]: e for e in stream.messages}
    assert sorted(ends) == sorted([first, second]) and len(stream.messages) == 2
    for event in ends.values():
        assert event["status"] == "COMPLETED"
        assert event["task"]["result"]["echo"] == SLOW_ECHO["input_data"]


def test_the_stream_is_sse_framed_and_ends_with_an_ok_trailer(
    gateway_server: ServerProcess,
) -> None:
    task_id = _create(gateway_server.http_url, {"text": "short"})
    stream = read_sse(gateway_server.http_url, f"/v1/tasks/{task_id}:watch")
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["transfer-encoding"] == "chunked"
    assert stream.body.startswith(b"data: {") and stream.body.endswith(b"}\n\n")
    assert stream.complete and stream.trailers["grpc-status"] == "0"
    assert stream.messages[-1]["status"] == "COMPLETED"


def test_a_failing_task_ends_its_stream_with_failed_not_completed(
    gateway_server: ServerProcess,
) -> None:
    task_id = _create(
        gateway_server.http_url,
        {"task_type": "echo", "input_data": {"fail_attempts": 5}, "max_attempts": 1},
    )
    stream = read_sse(gateway_server.http_url, f"/v1/tasks/{task_id}:watch")
    assert stream.complete
    last = stream.messages[-1]
    assert last["status"] == "FAILED"
    task = last["task"]
    assert task["status"] == "FAILED" and "asked to fail" in task["error"]
    assert task["error_code"]
    assert all(e["status"] != "COMPLETED" for e in stream.messages)


def test_a_task_cancelled_mid_stream_ends_it_with_cancelled(
    gateway_server: ServerProcess,
) -> None:
    task_id = _create(gateway_server.http_url, SLOW_ECHO)

    def cancel_on_first_progress(event: dict[str, Any]) -> None:
        if event["type"] == "PROGRESS" and event["progress"] == 25:
            threading.Thread(
                target=httpx.delete, args=(f"{gateway_server.http_url}/v1/tasks/{task_id}",)
            ).start()

    stream = read_sse(
        gateway_server.http_url, f"/v1/tasks/{task_id}:watch", on_event=cancel_on_first_progress
    )
    assert stream.complete and stream.trailers["grpc-status"] == "0"
    assert stream.messages[-1]["status"] == "CANCELLED"
    assert 100 not in [e["progress"] for e in stream.messages if e["type"] == "PROGRESS"]


def test_resuming_after_a_sequence_replays_the_rest(gateway_server: ServerProcess) -> None:
    task_id = _create(gateway_server.http_url, {"text": "resume me"})
    with httpx.Client(base_url=gateway_server.http_url) as rest:
        final = wait_for_status(rest, task_id, TERMINAL)
    stream = read_sse(gateway_server.http_url, f"/v1/tasks/{task_id}:watch?after_sequence=1")
    assert [e["sequence"] for e in stream.messages] == list(range(2, final["sequence"] + 1))


def test_watch_errors_before_the_first_event_are_json(gateway_server: ServerProcess) -> None:
    with httpx.Client(base_url=gateway_server.http_url) as rest:
        assert_json_error(rest.get(f"/v1/tasks/{uuid.uuid4()}:watch"), 404, "TASK_NOT_FOUND")
        assert_json_error(rest.get("/v1/tasks/nope:watch"), 404, "TASK_NOT_FOUND")
        negative = rest.get(f"/v1/tasks/{uuid.uuid4()}:watch", params={"after_sequence": -1})
        assert_json_error(negative, 400, "VALIDATION_ERROR")


def test_a_stream_cut_by_a_server_shutdown_does_not_end_cleanly(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--drain-seconds", "0", gateway=True)
    task_id = _create(server.http_url, {**SLOW_ECHO, "input_data": {"delay_seconds": 30}})

    def stop_on_snapshot(event: dict[str, Any]) -> None:
        if event["type"] == "SNAPSHOT":
            server.signal(signal.SIGTERM)

    started = time.monotonic()
    stream = read_sse(server.http_url, f"/v1/tasks/{task_id}:watch", on_event=stop_on_snapshot)
    assert time.monotonic() - started < 20
    assert stream.status == 200 and stream.messages
    assert not any(e["status"] in TERMINAL for e in stream.messages)
    # Either the trailers say the call failed, or the body was cut: never a clean end.
    if stream.complete:
        assert stream.trailers.get("grpc-status", "0") != "0", stream.trailers
    assert server.proc is not None and server.proc.wait(30) == 0


def test_health_is_503_while_the_server_drains(server_factory: ServerFactory) -> None:
    server = server_factory("--drain-seconds", "20", gateway=True)
    task_id = _create(server.http_url, {"task_type": "echo", "input_data": {"delay_seconds": 4}})
    with httpx.Client(base_url=server.http_url, timeout=5) as rest:
        wait_for_status(rest, task_id, {"RUNNING"})
        assert rest.get("/health").status_code == 200
        server.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while (response := rest.get("/health")).status_code == 200:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.05)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "unhealthy" and body["problem"]
