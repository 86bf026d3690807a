"""Chat over ``/ws/chat`` through the real Envoy: a message posted on the WebSocket streams its
reply as deltas that add up to the reply REST then stores; another tenant's session refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.web.conftest import CHAT_MODEL, WebServer

pytestmark = pytest.mark.xdist_group("web")


def _session(web: WebServer, key: str) -> str:
    response = httpx.post(
        web.http_url + "/chat",
        json={"model_name": CHAT_MODEL, "parameters": {"max_new_tokens": 8}},
        headers={"x-api-key": key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


async def _receive(ws: Any) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert isinstance(message, dict)
    return message


async def test_a_reply_streamed_over_the_websocket_equals_the_stored_reply(
    web: WebServer,
) -> None:
    session_id = _session(web, web.acme)
    headers = {"x-api-key": web.acme}
    async with websockets.connect(web.ws_url + "/ws/chat", additional_headers=headers) as ws:
        await ws.send(json.dumps({"action": "post", "session_id": session_id, "content": "hi"}))
        events = []
        while True:
            message = await _receive(ws)
            assert message["type"] == "chat", message
            assert message["session_id"] == session_id
            events.append(message)
            if message["event"] == "REPLY_FINISHED":
                break
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["MESSAGE_ADDED", "MESSAGE_ADDED", "REPLY_STARTED"], kinds
    assert "REPLY_DELTA" in kinds
    final = events[-1]["message"]
    assert final["status"] == "COMPLETED" and final["role"] == "ASSISTANT"
    streamed = "".join(e["delta"] for e in events if e["event"] == "REPLY_DELTA")
    stored = httpx.get(
        f"{web.http_url}/chat/{session_id}/message/{final['message_id']}",
        headers=headers,
        timeout=10,
    ).json()
    assert streamed == stored["content"] == final["content"] != ""


async def test_another_tenants_session_cannot_be_used(web: WebServer) -> None:
    session_id = _session(web, web.acme)
    headers = {"x-api-key": web.globex}
    async with websockets.connect(web.ws_url + "/ws/chat", additional_headers=headers) as ws:
        await ws.send(json.dumps({"action": "post", "session_id": session_id, "content": "hi"}))
        error = await _receive(ws)
        assert error["type"] == "error" and error["code"] == "SESSION_NOT_FOUND", error
        await ws.send(json.dumps({"action": "watch_session", "session_id": session_id}))
        while (message := await _receive(ws))["type"] != "error":
            assert message["type"] == "subscribed"
        assert message["code"] == "SESSION_NOT_FOUND"
