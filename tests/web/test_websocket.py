"""``/ws/tasks`` through the real Envoy with a real client (the ``websockets`` package): seed
001's subscribe protocol, every change in order up to the terminal one, resuming after a
dropped connection without loss, credentials in a header or the first message, tenancy,
bad messages answered with an error on a connection that stays up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.web.conftest import SLOW_ECHO, WebServer

pytestmark = pytest.mark.xdist_group("web")

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
UPDATE_KEYS = {"task_id", "status", "progress", "message", "sequence"}


def _create(web: WebServer, key: str, payload: dict[str, Any] = SLOW_ECHO) -> str:
    response = httpx.post(
        web.http_url + "/v1/tasks", json=payload, headers={"x-api-key": key}, timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["task_id"])


async def _receive(ws: ClientConnection, timeout: float = 30) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert isinstance(message, dict)
    return message


async def _until(ws: ClientConnection, kind: str, timeout: float = 30) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await _receive(ws, max(deadline - loop.time(), 0.01))
        if message["type"] == kind:
            return message


async def _updates_to_terminal(ws: ClientConnection) -> list[dict[str, Any]]:
    updates = []
    while True:
        message = await _until(ws, "update")
        updates.append(message)
        if message["status"] in TERMINAL:  # (a snapshot, when it had ended already)
            return updates


async def _wait_for_sequence(
    web: WebServer, key: str, task_id: str, sequence: int, timeout: float = 30
) -> None:
    """Polls the task over REST until its event sequence reaches ``sequence``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        task = httpx.get(
            f"{web.http_url}/v1/tasks/{task_id}", headers={"x-api-key": key}, timeout=10
        ).json()
        if task["sequence"] >= sequence:
            return
        assert loop.time() < deadline, f"task {task_id} stayed at sequence {task['sequence']}"
        await asyncio.sleep(0.02)


def _connect(web: WebServer, key: str | None = None, **kwargs: Any) -> Any:
    headers = {"x-api-key": key} if key else None
    return websockets.connect(web.ws_url + "/ws/tasks", additional_headers=headers, **kwargs)


async def test_a_subscriber_gets_every_change_in_order_up_to_the_final_task(
    web: WebServer,
) -> None:
    task_id = _create(web, web.acme)
    async with _connect(web, web.acme) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        assert (await _receive(ws)) == {
            "type": "subscribed",
            "task_id": task_id,
            "after_sequence": 0,
        }
        updates = await _updates_to_terminal(ws)
    for update in updates:
        assert set(update) >= UPDATE_KEYS and update["task_id"] == task_id
    sequences = [u["sequence"] for u in updates]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), sequences
    progress = [u["progress"] for u in updates if u["event"] == "PROGRESS"]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    final = updates[-1]
    assert final["status"] == "COMPLETED"
    assert final["task"]["task_id"] == task_id and final["task"]["status"] == "COMPLETED"
    assert final["task"]["result"]["echo"] == SLOW_ECHO["input_data"]
    # The same final state as REST's.
    stored = httpx.get(
        f"{web.http_url}/v1/tasks/{task_id}", headers={"x-api-key": web.acme}, timeout=10
    ).json()
    assert stored["result"] == final["task"]["result"]


async def test_a_dropped_connection_resumes_after_its_last_sequence_without_loss(
    web: WebServer,
) -> None:
    task_id = _create(
        web,
        web.acme,
        {"task_type": "echo", "input_data": {"delay_seconds": 2, "progress_steps": 8}},
    )
    async with _connect(web, web.acme) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        first = [await _until(ws, "update"), await _until(ws, "update")]
    # Dropped (closed without unsubscribing) while the task goes on: wait until it has had
    # events this connection missed, so a resume that lost them would show.
    last = first[-1]["sequence"]
    await _wait_for_sequence(web, web.acme, task_id, last + 2)
    async with _connect(web, web.acme) as ws:
        await ws.send(
            json.dumps({"action": "subscribe", "task_id": task_id, "after_sequence": last})
        )
        rest = await _updates_to_terminal(ws)
    sequences = [u["sequence"] for u in first + rest]
    assert sequences == list(range(sequences[0], sequences[-1] + 1)), sequences
    assert rest[0]["sequence"] == last + 1 and rest[-1]["status"] == "COMPLETED"


async def test_credentials_may_come_in_the_first_message(web: WebServer) -> None:
    task_id = _create(web, web.acme, {"text": "over a websocket"})
    async with _connect(web) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        refused = await _receive(ws)
        assert refused["type"] == "error" and refused["code"] == "UNAUTHENTICATED"
        await ws.send(json.dumps({"action": "auth", "api_key": "tko_not-a-key"}))
        refused = await _receive(ws)
        assert refused["type"] == "error" and refused["code"] == "UNAUTHENTICATED"
        await ws.send(json.dumps({"action": "auth", "api_key": web.acme}))
        assert (await _receive(ws)) == {"type": "authenticated", "tenant_id": "acme"}
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        updates = await _updates_to_terminal(ws)
        assert updates[-1]["task"]["result"]["word_count"] == 3


async def test_a_wrong_key_in_the_header_is_refused_before_the_upgrade(web: WebServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with _connect(web, "tko_wrong"):
            pass
    assert refused.value.response.status_code == 401


async def test_another_tenants_task_cannot_be_subscribed(web: WebServer) -> None:
    task_id = _create(web, web.acme, {"text": "acme only"})
    async with _connect(web, web.globex) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        await _until(ws, "subscribed")
        error = await _until(ws, "error")
        assert error["code"] == "TASK_NOT_FOUND" and error["task_id"] == task_id


async def test_all_of_the_callers_tasks_and_none_of_another_tenants(web: WebServer) -> None:
    async with _connect(web, web.globex) as globex, _connect(web, web.acme) as acme:
        for ws in (globex, acme):
            await ws.send(json.dumps({"action": "subscribe", "task_id": "*"}))
            assert (await _receive(ws)) == {"type": "subscribed", "task_id": "*"}
        ours = _create(web, web.acme, {"text": "one of acme's"})
        seen: set[str] = set()
        while True:
            update = await _until(acme, "update")
            seen.add(update["task_id"])
            if update["task_id"] == ours and update["status"] == "COMPLETED":
                break
        assert ours in seen
        await globex.send(json.dumps({"action": "ping"}))
        # Nothing of acme's reached globex before its pong.
        assert (await _receive(globex)) == {"type": "pong"}


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "VALIDATION_ERROR"),
        ("[1, 2]", "VALIDATION_ERROR"),
        ('{"action": "dance"}', "VALIDATION_ERROR"),
        ('{"action": "subscribe"}', "VALIDATION_ERROR"),
        ('{"action": "subscribe", "task_id": "x", "after_sequence": -1}', "VALIDATION_ERROR"),
        ('{"action": "subscribe", "task_id": "not-a-uuid"}', "TASK_NOT_FOUND"),
        ('{"action": "post", "session_id": "s"}', "VALIDATION_ERROR"),
    ],
)
async def test_bad_messages_get_an_error_and_the_connection_stays_up(
    web: WebServer, message: str, code: str
) -> None:
    async with _connect(web, web.acme) as ws:
        await ws.send(message)
        error = await _until(ws, "error")
        assert error["code"] == code and error["message"], error
        await ws.send(json.dumps({"action": "ping"}))
        assert (await _until(ws, "pong")) == {"type": "pong"}


async def test_unsubscribing_stops_the_updates(web: WebServer) -> None:
    task_id = _create(web, web.acme)
    async with _connect(web, web.acme) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        await _until(ws, "update")
        await ws.send(json.dumps({"action": "unsubscribe", "task_id": task_id}))
        while (message := await _receive(ws))["type"] != "unsubscribed":
            assert message["type"] == "update"
        assert message == {"type": "unsubscribed", "task_id": task_id, "found": True}
        await ws.send(json.dumps({"action": "ping"}))
        # The task runs on for another second; nothing of it comes after the pong.
        assert (await _receive(ws)) == {"type": "pong"}
        with pytest.raises(TimeoutError):
            await _receive(ws, timeout=1.5)


async def test_a_page_of_another_origin_cannot_open_a_websocket(web: WebServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with _connect(web, web.acme, origin=web.other_origin):
            pass
    assert refused.value.response.status_code == 403
    async with _connect(web, web.acme, origin=web.allowed_origin) as ws:
        await ws.send(json.dumps({"action": "ping"}))
        assert (await _receive(ws)) == {"type": "pong"}


async def test_websocket_pings_are_answered_through_envoy(web: WebServer) -> None:
    """The keepalive: protocol pings and pongs pass the gateway (the server pings every 20 s)."""
    async with _connect(web, web.acme, ping_interval=None) as ws:
        for _ in range(3):
            pong = await ws.ping()
            latency = await asyncio.wait_for(pong, 5)
            assert latency < 5
