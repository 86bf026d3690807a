"""Every chat route of seed 000 through Envoy (REST), with a real model behind it: create and
list sessions, read one with its messages, post, read and delete a message, end the session;
the canonical /v1 paths, a streamed reply as Server-Sent Events, and JSON errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway._http import RFC3339, UUID4, assert_json_error, field_violations
from tests.servers import ServerProcess, sqlite_url

from .test_chat import TINY, chat_repository
from .tiny_models import TinyModels

pytestmark = pytest.mark.xdist_group("chat-gateway")


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny: TinyModels, default_models_dir: Path
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("chat-gateway")
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=chat_repository(workdir / "models", tiny, default_models_dir),
        gateway=True,
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def rest(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.http_url, timeout=60) as client:
        yield client


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    return body


def test_the_seed_000_chat_flow(rest: httpx.Client) -> None:
    session = _ok(
        rest.post(
            "/chat",
            json={
                "model_name": TINY,
                "system_prompt": "You are a test.",
                "title": "REST",
                "parameters": {"max_new_tokens": 6},
            },
        )
    )
    session_id = session["session_id"]
    assert UUID4.match(session_id) and RFC3339.match(session["created_at"])
    assert session["model_name"] == TINY and session["parameters"] == {"max_new_tokens": 6}
    assert session["message_count"] == 1

    listed = _ok(rest.get("/chat", params={"limit": 100}))
    assert session_id in {s["session_id"] for s in listed["sessions"]}
    assert listed["pagination"]["total"] == listed["total"]

    posted = _ok(rest.post(f"/chat/{session_id}/message", json={"content": "hello", "wait": True}))
    message, reply = posted["message"], posted["reply"]
    assert message["role"] == "USER" and message["status"] == "COMPLETED"
    assert message["content"] == "hello" and UUID4.match(message["message_id"])
    assert reply["role"] == "ASSISTANT" and reply["status"] == "COMPLETED"
    assert reply["reply_to"] == message["message_id"] and reply["tokens_generated"] >= 1
    assert UUID4.match(reply["task_id"])

    queued = _ok(rest.post(f"/chat/{session_id}/message", json={"content": "and then?"}))
    assert queued["reply"]["status"] in ("PENDING", "RUNNING", "COMPLETED")

    got = _ok(rest.get(f"/chat/{session_id}"))
    assert [m["role"] for m in got["messages"][:3]] == ["SYSTEM", "USER", "ASSISTANT"]
    assert got["messages"][2]["content"] == reply["content"]

    one = _ok(rest.get(f"/chat/{session_id}/message/{reply['message_id']}"))
    assert one == reply

    deleted = _ok(rest.delete(f"/chat/{session_id}/message/{message['message_id']}"))
    assert deleted["message_id"] == message["message_id"]
    assert_json_error(
        rest.get(f"/chat/{session_id}/message/{message['message_id']}"), 404, "MESSAGE_NOT_FOUND"
    )

    ended = _ok(rest.delete(f"/chat/{session_id}"))
    assert ended["session_id"] == session_id
    assert_json_error(rest.get(f"/chat/{session_id}"), 404, "SESSION_NOT_FOUND")


def test_the_canonical_paths(rest: httpx.Client) -> None:
    session_id = _ok(rest.post("/v1/chat/sessions", json={"model_name": TINY}))["session_id"]
    assert _ok(rest.get(f"/v1/chat/sessions/{session_id}"))["session_id"] == session_id
    posted = _ok(
        rest.post(
            f"/v1/chat/sessions/{session_id}/messages",
            json={"content": "hi", "parameters": {"max_new_tokens": 3}, "wait": True},
        )
    )
    page = _ok(rest.get(f"/v1/chat/sessions/{session_id}/messages", params={"limit": 1}))
    assert page["total"] == 2 and len(page["messages"]) == 1 and page["next_page_token"]
    reply_id = posted["reply"]["message_id"]
    path = f"/v1/chat/sessions/{session_id}/messages/{reply_id}"
    assert _ok(rest.get(path))["content"] == posted["reply"]["content"]
    assert _ok(rest.delete(path))["message_id"] == reply_id
    assert _ok(rest.get("/v1/chat/sessions", params={"model_name": TINY}))["total"] >= 1
    assert _ok(rest.delete(f"/v1/chat/sessions/{session_id}"))["session_id"] == session_id


def test_a_reply_streams_as_server_sent_events(gateway: ServerProcess, rest: httpx.Client) -> None:
    session_id = _ok(rest.post("/chat", json={"model_name": TINY}))["session_id"]
    events = []
    with rest.stream(
        "POST",
        f"/v1/chat/sessions/{session_id}/messages:stream",
        json={"content": "stream please", "parameters": {"max_new_tokens": 8}},
        headers={"accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["MESSAGE_ADDED", "MESSAGE_ADDED", "REPLY_STARTED"]
    assert kinds[-1] == "REPLY_FINISHED"
    final = events[-1]["message"]
    assert final["status"] == "COMPLETED"
    assert "".join(e["delta"] for e in events) == final["content"]

    # The session's watch replays the same events (after_sequence=0: from the first one).
    watch = f"/v1/chat/sessions/{session_id}:watch?after_sequence=0"
    replay = _read_until(gateway, watch, len(events))
    assert [e["sequence"] for e in replay] == [e["sequence"] for e in events]
    assert [e["type"] for e in replay] == kinds


def _read_until(gateway: ServerProcess, path: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of an SSE stream that stays open."""
    seen: list[dict[str, Any]] = []
    headers = {"accept": "text/event-stream"}
    with (
        httpx.Client(base_url=gateway.http_url, timeout=30) as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[len("data: ") :]))
                if len(seen) == count:
                    break
    return seen


def test_bad_requests_are_json_errors_naming_the_field(rest: httpx.Client) -> None:
    assert_json_error(rest.post("/chat", json={"model_name": "nope"}), 404, "MODEL_NOT_FOUND")
    session_id = _ok(rest.post("/chat", json={"model_name": TINY}))["session_id"]
    empty = assert_json_error(
        rest.post(f"/chat/{session_id}/message", json={"content": ""}), 400, "VALIDATION_ERROR"
    )
    assert field_violations(empty) == ["content"]
    long = assert_json_error(
        rest.post(f"/chat/{session_id}/message", json={"content": "x" * 32_001}),
        422,
        "MESSAGE_TOO_LONG",
    )
    assert field_violations(long) == ["content"]
    missing = str(uuid.uuid4())
    assert_json_error(
        rest.post(f"/chat/{missing}/message", json={"content": "hi"}), 404, "SESSION_NOT_FOUND"
    )
    assert_json_error(rest.get(f"/chat/{session_id}/message/{missing}"), 404, "MESSAGE_NOT_FOUND")
