"""Seed 002 through Envoy: `/api/v1` tasks with priority and depends_on, the bare JSON array,
tasks grouped by status, priority updates, 204 on delete, templates, and its `detail` errors."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.gateway._http import RFC3339, assert_json_error, field_violations, wait_for_status
from tests.gateway.expected import TODAY
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("gateway_seed_002")

# The request body of the seed document, verbatim; its depends_on ids are placeholders.
SEED_CREATE = {
    "template": "ollama-inference",
    "parameters": {"model": "llama3.1:8b", "prompt": "Explain quantum computing in simple terms"},
    "priority": 5,
    "depends_on": ["task-id-1", "task-id-2"],
}
SEED_VALIDATE = {"model": "llama3.1:8b", "prompt": "Explain quantum computing in simple terms"}
GROUPS = ("queued", "running", "completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def h2(gateway_server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP/2 (h2c, prior knowledge) client of the gateway."""
    with httpx.Client(
        base_url=gateway_server.http_url, http1=False, http2=True, timeout=15
    ) as client:
        yield client


def _create(rest: httpx.Client, **payload: Any) -> dict[str, Any]:
    payload.setdefault("task_type", "echo")
    response = rest.post("/api/v1/tasks", json=payload)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _blocked(rest: httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """A slow task and a task that waits for it (so stays queued)."""
    slow = _create(rest, input_data={"delay_seconds": 5, "progress_steps": 5})
    waiting = _create(rest, depends_on=[slow["id"]])
    return slow, waiting


def test_seed_create_example_with_real_dependencies(rest: httpx.Client) -> None:
    first, second = _create(rest), _create(rest)
    payload = {**SEED_CREATE, "depends_on": [first["id"], second["id"]]}
    expected = TODAY["seed002.create_from_template"]
    response = rest.post("/api/v1/tasks", json=payload)
    if expected.ok:
        assert response.status_code == expected.status, response.text
        body = response.json()
        assert body["template"] == "ollama-inference" and body["priority"] == 5
        assert body["parameters"] == SEED_CREATE["parameters"]
        assert body["depends_on"] == payload["depends_on"]
    else:
        body = assert_json_error(response, expected.status, expected.reason)
        assert SEED_CREATE["parameters"]["model"] in body["detail"]


def test_seed_create_example_with_its_placeholder_ids_is_refused(rest: httpx.Client) -> None:
    body = assert_json_error(rest.post("/api/v1/tasks", json=SEED_CREATE), 400)
    assert "depends_on" in field_violations(body)[0]
    assert "task-id-1" in body["detail"]


def test_create_answers_id_priority_and_dependencies(rest: httpx.Client) -> None:
    dependency = _create(rest)
    body = _create(rest, text="seed two", priority=8, depends_on=[dependency["id"]])
    assert body["id"] == body["task_id"]
    assert body["status"] == "queued" and body["priority"] == 8
    assert body["depends_on"] == [dependency["id"]]
    assert RFC3339.match(body["created_at"])
    assert _create(rest)["priority"] == 5  # the seed's default


def test_a_task_runs_only_after_its_dependencies_complete(rest: httpx.Client) -> None:
    slow = _create(rest, input_data={"delay_seconds": 1.0, "progress_steps": 2})
    waiting = _create(rest, depends_on=[slow["id"]])
    wait_for_status(rest, slow["id"], {"RUNNING"})
    assert rest.get(f"/api/v1/tasks/{waiting['id']}").json()["status"] == "queued"
    done = wait_for_status(rest, waiting["id"], {"COMPLETED"}, timeout=10)
    first = wait_for_status(rest, slow["id"], {"COMPLETED"})
    assert done["started_at"] >= first["completed_at"]


@pytest.mark.parametrize("priority", [0, 11, -1])
def test_priority_outside_1_to_10_is_refused(rest: httpx.Client, priority: int) -> None:
    response = rest.post("/api/v1/tasks", json={"task_type": "echo", "priority": priority})
    if priority == 0:  # 0 is proto3's "not given": the default
        assert response.status_code == 200 and response.json()["priority"] == 5
        return
    body = assert_json_error(response, 400, "VALIDATION_ERROR")
    assert field_violations(body) == ["priority"]


def test_list_is_a_bare_json_array_with_the_seed_default_limit(rest: httpx.Client) -> None:
    for _ in range(101):
        _create(rest)
    response = rest.get("/api/v1/tasks")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    tasks = response.json()
    assert isinstance(tasks, list) and len(tasks) == 100  # the seed's default limit
    for task in tasks:
        assert task["id"] == task["task_id"]
        assert {"status", "priority", "created_at", "template"} <= set(task)
    limited = rest.get("/api/v1/tasks", params={"limit": 3, "offset": 2}).json()
    assert [t["id"] for t in limited] == [t["id"] for t in tasks[2:5]]
    assert rest.get("/api/v1/tasks", params={"template": "git-script-execution"}).json() == []


def test_list_filters_by_the_seed_status_words(rest: httpx.Client) -> None:
    slow, waiting = _blocked(rest)
    queued = rest.get("/api/v1/tasks", params={"status": "queued", "limit": 1000}).json()
    assert waiting["id"] in {t["id"] for t in queued}
    assert {t["status"] for t in queued} == {"queued"}
    rest.delete(f"/api/v1/tasks/{slow['id']}")
    rest.delete(f"/api/v1/tasks/{waiting['id']}")


def test_array_items_are_printed_like_every_other_rest_answer(rest: httpx.Client) -> None:
    # The array is rendered by the server (HttpBody), everything else by Envoy: one format.
    task = _create(rest, task_type="text_analysis", input_data={"text": "one two two"})
    wait_for_status(rest, task["id"], {"COMPLETED"})
    single = rest.get(f"/api/v1/tasks/{task['id']}")
    listed = rest.get("/api/v1/tasks", params={"limit": 1})
    assert listed.json() == [single.json()]
    # Same JSON text for the same values, e.g. no "2.0" where GET prints 2.
    item = listed.text[1:-1]
    for key in ("word_count", "unique_words", "progress", "timeout_seconds"):
        pattern = re.compile(rf'"{key}":(-?[0-9.eE+-]+)[,}}]')
        assert pattern.search(item).group(1) == pattern.search(single.text).group(1), key


def test_tasks_by_status_has_the_five_seed_groups(rest: httpx.Client) -> None:
    slow, waiting = _blocked(rest)
    done = _create(rest)
    cancelled = _create(rest, input_data={"delay_seconds": 5})
    rest.delete(f"/api/v1/tasks/{cancelled['id']}")
    wait_for_status(rest, slow["id"], {"RUNNING"})
    wait_for_status(rest, done["id"], {"COMPLETED"})
    response = rest.get("/api/v1/tasks/status")
    assert response.status_code == 200
    groups = response.json()
    assert set(groups) == set(GROUPS)
    ids = {group: {t["id"] for t in groups[group]} for group in GROUPS}
    assert waiting["id"] in ids["queued"]
    assert slow["id"] in ids["running"]
    assert done["id"] in ids["completed"]
    assert cancelled["id"] in ids["cancelled"]
    for task in groups["running"]:
        assert task["status"] == "running" and RFC3339.match(task["started_at"])
    for group in GROUPS:  # each key names the status of the tasks under it
        assert {t["status"] for t in groups[group]} <= {group}
    rest.delete(f"/api/v1/tasks/{slow['id']}")
    rest.delete(f"/api/v1/tasks/{waiting['id']}")


def test_get_task_by_id(rest: httpx.Client) -> None:
    task = _create(rest, text="fetch me")
    body = rest.get(f"/api/v1/tasks/{task['id']}").json()
    assert body["id"] == task["id"] and body["text"] == "fetch me"
    missing = str(uuid.uuid4())
    error = assert_json_error(rest.get(f"/api/v1/tasks/{missing}"), 404, "TASK_NOT_FOUND")
    assert missing in error["detail"]


def test_patch_priority_of_a_queued_task(rest: httpx.Client) -> None:
    slow, waiting = _blocked(rest)
    response = rest.patch(f"/api/v1/tasks/{waiting['id']}/priority", params={"priority": 8})
    assert response.status_code == 200, response.text
    assert response.json()["priority"] == 8
    assert rest.get(f"/api/v1/tasks/{waiting['id']}").json()["priority"] == 8
    for bad in (0, 11):
        body = assert_json_error(
            rest.patch(f"/api/v1/tasks/{waiting['id']}/priority", params={"priority": bad}),
            400,
            "VALIDATION_ERROR",
        )
        assert field_violations(body) == ["priority"]
    assert_json_error(
        rest.patch(f"/api/v1/tasks/{waiting['id']}/priority", params={"priority": "high"}), 400
    )
    assert_json_error(
        rest.patch(f"/api/v1/tasks/{uuid.uuid4()}/priority", params={"priority": 3}),
        404,
        "TASK_NOT_FOUND",
    )
    rest.delete(f"/api/v1/tasks/{slow['id']}")
    rest.delete(f"/api/v1/tasks/{waiting['id']}")


def test_patch_priority_of_a_finished_task_is_a_conflict(rest: httpx.Client) -> None:
    done = _create(rest)
    wait_for_status(rest, done["id"], {"COMPLETED"})
    response = rest.patch(f"/api/v1/tasks/{done['id']}/priority", params={"priority": 9})
    assert_json_error(response, 409, "TASK_FINISHED")


def test_delete_answers_204_without_a_body_over_http_1_1(rest: httpx.Client) -> None:
    task = _create(rest, input_data={"delay_seconds": 5})
    response = rest.delete(f"/api/v1/tasks/{task['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers
    assert rest.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "cancelled"


def test_delete_answers_200_with_the_task_over_h2(h2: httpx.Client) -> None:
    task = h2.post("/api/v1/tasks", json={"task_type": "echo", "input_data": {"delay_seconds": 5}})
    assert task.http_version == "HTTP/2" and task.status_code == 200
    response = h2.delete(f"/api/v1/tasks/{task.json()['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


def test_delete_of_a_finished_task_is_409_with_detail(rest: httpx.Client) -> None:
    done = _create(rest)
    wait_for_status(rest, done["id"], {"COMPLETED"})
    body = assert_json_error(rest.delete(f"/api/v1/tasks/{done['id']}"), 409)
    assert "cannot be cancelled" in body["detail"]


@pytest.mark.parametrize(
    ("row", "method", "path", "kwargs"),
    [
        ("seed002.list_templates", "GET", "/api/v1/templates", {}),
        ("seed002.get_template", "GET", "/api/v1/templates/ollama-inference", {}),
        (
            "seed002.validate_template",
            "POST",
            "/api/v1/templates/validate?template_name=ollama-inference",
            {"json": SEED_VALIDATE},
        ),
    ],
)
def test_template_endpoints(
    rest: httpx.Client, row: str, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    expected = TODAY[row]
    response = rest.request(method, path, **kwargs)
    if expected.ok:
        assert response.status_code == expected.status, response.text
    else:
        assert_json_error(response, expected.status, expected.reason)


def test_api_key_header(rest: httpx.Client) -> None:
    expected = TODAY["seed002.missing_api_key"]
    assert rest.get("/api/v1/tasks", params={"limit": 1}).status_code == expected.status
    keyed = rest.get("/api/v1/tasks", params={"limit": 1}, headers={"X-API-Key": "k"})
    assert keyed.status_code == 200


def test_the_canonical_surface_keeps_the_enum_words(rest: httpx.Client) -> None:
    task = rest.post(
        "/api/v1/tasks", json={"template": "text-analysis", "parameters": {"text": "a"}}
    )
    task_id = task.json()["id"]
    wait_for_status(rest, task_id, {"COMPLETED"})
    assert rest.get(f"/api/v1/tasks/{task_id}").json()["status"] == "completed"
    assert rest.get(f"/v1/tasks/{task_id}").json()["status"] == "COMPLETED"
    for spelling in ("completed", "COMPLETED", "Completed"):
        listed = rest.get("/api/v1/tasks", params={"status": spelling, "limit": 1000}).json()
        assert task_id in {t["id"] for t in listed}
