"""What the gateway tests share: REST calls, error-body checks, and a Server-Sent Events reader
that also sees HTTP/1.1 chunked trailers (httpx drops them; h11 keeps them)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def surface(path: str) -> str:
    """Which seed document's error body a path gets (see the Lua filter in gateway/config.py)."""
    if path.startswith("/api/v1/"):
        return "seed002"
    if path.startswith("/tasks"):
        return "seed001"
    return "canonical"


def error_reason(body: dict[str, Any]) -> str | None:
    """The error code: ErrorInfo.reason when the server answered, else the gateway's reason
    (None on seed 002's surface, whose error body is only ``detail``)."""
    for detail in body.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == ERROR_INFO:
            return str(detail["reason"])
    if isinstance(body.get("error"), dict):
        return str(body["error"]["code"])
    return body.get("reason")


def json_once(text: str) -> Any:
    """The JSON document, asserting that no object in it repeats a key (json.loads would
    silently keep the last one; many clients refuse such a body or keep the first)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        assert not repeated, f"keys repeated in an error body: {repeated}: {text[:500]}"
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


def assert_json_error(
    response: httpx.Response, status: int, reason: str | None = None
) -> dict[str, Any]:
    """A JSON error body with the keys the path's seed document promises; returns it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = json_once(response.text)
    assert isinstance(body, dict), body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["code"], int)
    assert body["request_id"] == response.headers["x-request-id"] != ""
    path = response.request.url.path
    kind = surface(path)
    if kind == "seed001":
        # {"error": {"code", "message", "details": {"field", "reason"}}, "timestamp", ...}
        error = body["error"]
        assert isinstance(error, dict), body
        assert error["code"] == error_reason(body)
        assert error["message"] == body["message"]
        assert set(error["details"]) == {"field", "reason"}
        assert RFC3339.match(body["timestamp"]), body["timestamp"]
    elif kind == "seed002":
        assert body["detail"] == body["message"]
    else:
        assert body["error"] == body["message"]
        assert body["reason"] == error_reason(body)
    if reason is not None:
        found = error_reason(body)
        assert found == reason or (kind == "seed002" and found is None), body
    return body


def field_violations(body: dict[str, Any]) -> list[str]:
    return [
        violation["field"]
        for detail in body.get("details") or []
        for violation in detail.get("field_violations", [])
    ]


def wait_for_status(
    client: httpx.Client, task_id: str, statuses: set[str], timeout: float = 30.0
) -> dict[str, Any]:
    """Polls GET /v1/tasks/{id} until the task has one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/v1/tasks/{task_id}").json()
        if task["status"] in statuses:
            return dict(task)
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still {task['status']} after {timeout} s")
        time.sleep(0.05)


@dataclass
class SseStream:
    """One server-streamed response as read off the wire."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    # (wall-clock time of arrival, the JSON of one `data:` frame)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    # The chunked body ended with its last chunk (and trailers), not a dropped connection.
    complete: bool = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [event for _, event in self.events]


def read_sse(
    base_url: str,
    path: str,
    *,
    timeout: float = 30.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> SseStream:
    """GET ``path`` over HTTP/1.1 and read it to its end (bounded by ``timeout``).

    Frames must be exactly ``data: {json}\\n\\n``; ``on_event`` sees each as it arrives.
    """
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None
    stream = SseStream()
    connection = h11.Connection(our_role=h11.CLIENT)
    pending = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        request = h11.Request(
            method="GET",
            target=path,
            headers=[("host", url.netloc), ("accept", "text/event-stream"), ("te", "trailers")],
        )
        sock.sendall(connection.send(request) + connection.send(h11.EndOfMessage()))
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                return stream  # the connection ended mid-body
            if event is h11.NEED_DATA:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"stream {path} still open after {timeout} s")
                sock.settimeout(remaining)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                connection.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                stream.status = event.status_code
                stream.headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                stream.body += event.data
                pending += event.data
                while b"\n\n" in pending:
                    frame, pending = pending.split(b"\n\n", 1)
                    assert frame.startswith(b"data: ") and b"\n" not in frame, frame
                    message = json.loads(frame[len(b"data: ") :])
                    stream.events.append((time.time(), message))
                    if on_event is not None:
                        on_event(message)
            elif isinstance(event, h11.EndOfMessage):
                stream.trailers = {k.decode(): v.decode() for k, v in event.headers}
                stream.complete = pending == b""
                return stream
            elif isinstance(event, h11.ConnectionClosed):
                return stream
