"""Seed 000 through Envoy: `/task` create, list, get and delete; its subtask and chat routes
with ids that name nothing (and no model to chat with) answer clear JSON errors."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.gateway._http import assert_json_error, wait_for_status
from tests.gateway.expected import TODAY

pytestmark = pytest.mark.xdist_group("gateway_seed_000")

TASK = "11111111-2222-4333-8444-555555555555"
SUBTASK = "66666666-7777-4888-9999-000000000000"


def test_create_get_list_and_delete_a_task(rest: httpx.Client) -> None:
    created = rest.post("/task", json={"task_type": "echo", "input_data": {"delay_seconds": 5}})
    assert created.status_code == 200, created.text
    task_id = created.json()["task_id"]
    assert rest.get(f"/task/{task_id}").json()["task_id"] == task_id
    listed = rest.get("/task", params={"limit": 100}).json()
    assert task_id in {t["task_id"] for t in listed["tasks"]}
    assert listed["pagination"]["total"] == listed["total"] >= 1
    deleted = rest.delete(f"/task/{task_id}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "CANCELLED"


def test_get_and_delete_of_unknown_tasks_are_404(rest: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    body = assert_json_error(rest.get(f"/task/{missing}"), 404, "TASK_NOT_FOUND")
    assert body["error"] == f"Task with ID '{missing}' not found"
    assert_json_error(rest.delete(f"/task/{missing}"), 404, "TASK_NOT_FOUND")


def test_delete_of_a_finished_task_is_409(rest: httpx.Client) -> None:
    task_id = rest.post("/task", json={"text": "done soon"}).json()["task_id"]
    wait_for_status(rest, task_id, {"COMPLETED"})
    assert_json_error(rest.delete(f"/task/{task_id}"), 409, "TASK_NOT_CANCELLABLE")


@pytest.mark.parametrize(
    ("row", "method", "path", "body"),
    [
        ("seed000.create_subtask", "POST", f"/task/{TASK}/subtask", {"name": "step"}),
        ("seed000.list_subtasks", "GET", f"/task/{TASK}/subtask", None),
        ("seed000.take_subtask", "POST", f"/task/{TASK}/subtask/__take", {}),
        ("seed000.get_subtask", "GET", f"/task/{TASK}/subtask/{SUBTASK}", None),
        ("seed000.put_subtask", "PUT", f"/task/{TASK}/subtask/{SUBTASK}", {"name": "x"}),
        (
            "seed000.put_subtask_status",
            "PUT",
            f"/task/{TASK}/subtask/{SUBTASK}/status",
            {"status": "COMPLETED"},
        ),
        ("seed000.create_chat", "POST", "/chat", {}),
        ("seed000.list_chats", "GET", "/chat", None),
        ("seed000.get_chat", "GET", f"/chat/{TASK}", None),
        ("seed000.delete_chat", "DELETE", f"/chat/{TASK}", None),
        ("seed000.post_message", "POST", f"/chat/{TASK}/message", {"content": "hello"}),
        ("seed000.get_message", "GET", f"/chat/{TASK}/message/{SUBTASK}", None),
        ("seed000.delete_message", "DELETE", f"/chat/{TASK}/message/{SUBTASK}", None),
    ],
)
def test_subtask_and_chat_routes(
    rest: httpx.Client, row: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    expected = TODAY[row]
    response = rest.request(method, path, json=body)
    if expected.ok:
        assert response.status_code == expected.status, response.text
        assert response.headers["content-type"].startswith("application/json")
    else:
        assert_json_error(response, expected.status, expected.reason)
