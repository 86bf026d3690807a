"""Seed 001 through Envoy: `/tasks` with 201 on create, filters, cancel with 409, `/health`,
`/metrics`, and its error body (`error` object with the code, `timestamp`, `request_id`)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.gateway._http import RFC3339, UUID4, assert_json_error, wait_for_status
from tests.gateway.expected import TODAY

pytestmark = pytest.mark.xdist_group("gateway_seed_001")

# The request bodies of the seed document, verbatim: the reference example and the curl one.
SEED_CREATE = {
    "task_type": "text_generation",
    "model_name": "microsoft/DialoGPT-medium",
    "input_data": {"prompt": "Hello, how are you today?"},
    "parameters": {"max_length": 100, "temperature": 0.8, "do_sample": True},
}
SEED_CURL_CREATE = {
    "task_type": "text_generation",
    "model_name": "microsoft/DialoGPT-medium",
    "input_data": {"prompt": "Hello world!"},
}
SEED_TASK_ID = "task_123e4567-e89b-12d3-a456-426614174000"
SLOW_ECHO = {"task_type": "echo", "input_data": {"delay_seconds": 5, "progress_steps": 5}}


def _create(rest: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    response = rest.post("/tasks", json=payload)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize("payload", [SEED_CREATE, SEED_CURL_CREATE], ids=["reference", "curl"])
def test_seed_create_examples(rest: httpx.Client, payload: dict[str, Any]) -> None:
    expected = TODAY["seed001.create_text_generation"]
    response = rest.post("/tasks", json=payload)
    if expected.ok:
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "pending" and body["task_type"] == "text_generation"
        assert body["model_name"] == payload["model_name"]
    else:
        body = assert_json_error(response, expected.status, expected.reason)
        assert payload["model_name"] in body["error"]["message"]


def test_create_answers_201_with_the_seed_fields(rest: httpx.Client) -> None:
    first = _create(rest, {"task_type": "text_analysis", "input_data": {"text": "warm up"}})
    wait_for_status(rest, first["task_id"], {"COMPLETED"})
    # With a run time observed, the next task of that type carries an estimate.
    body = _create(rest, {"task_type": "text_analysis", "input_data": {"text": "hello world"}})
    assert UUID4.match(body["task_id"])
    assert body["status"] == "pending"
    assert body["task_type"] == "text_analysis" and body["model_name"] == ""
    assert RFC3339.match(body["created_at"])
    assert RFC3339.match(body["estimated_completion"])
    assert body["estimated_completion"] >= body["created_at"]


def test_get_task_has_timings_worker_and_result(rest: httpx.Client) -> None:
    task_id = _create(rest, {"task_type": "text_analysis", "input_data": {"text": "a b a"}})[
        "task_id"
    ]
    wait_for_status(rest, task_id, {"COMPLETED"})
    response = rest.get(f"/tasks/{task_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == task_id and body["status"] == "completed"
    for key in ("created_at", "started_at", "completed_at"):
        assert RFC3339.match(body[key]), (key, body)
    assert body["worker_id"]
    assert body["result"]["word_count"] == 3


def test_seed_task_ids_with_the_task_prefix_are_understood(rest: httpx.Client) -> None:
    # The seed's own id (task_<uuid>) is a well-formed id of a task that does not exist.
    body = assert_json_error(rest.get(f"/tasks/{SEED_TASK_ID}"), 404, "TASK_NOT_FOUND")
    assert body["error"]["code"] == "TASK_NOT_FOUND"
    created = _create(rest, {"task_type": "echo"})
    assert rest.get(f"/tasks/task_{created['task_id']}").json()["task_id"] == created["task_id"]


def test_list_answers_total_limit_offset_with_the_seed_default(rest: httpx.Client) -> None:
    for n in range(3):
        _create(rest, {"task_type": "echo", "input_data": {"n": n}})
    body = rest.get("/tasks").json()
    assert body["limit"] == 50 and body["offset"] == 0  # the seed's defaults
    assert body["total"] >= 3 and len(body["tasks"]) == min(body["total"], 50)
    task = body["tasks"][0]
    for key in ("task_id", "status", "task_type", "model_name", "created_at"):
        assert key in task


def test_list_filters_and_sorts_like_the_seed_curl_example(rest: httpx.Client) -> None:
    done = _create(rest, {"task_type": "echo", "input_data": {"filter": True}})
    wait_for_status(rest, done["task_id"], {"COMPLETED"})
    # curl "http://localhost:8002/tasks?status=completed&limit=10"
    body = rest.get("/tasks", params={"status": "completed", "limit": 10}).json()
    assert body["limit"] == 10 and 1 <= len(body["tasks"]) <= 10
    assert {t["status"] for t in body["tasks"]} == {"completed"}
    by_type = rest.get(
        "/tasks",
        params={"task_type": "echo", "sort_by": "created_at", "sort_order": "asc", "limit": 100},
    ).json()
    assert {t["task_type"] for t in by_type["tasks"]} == {"echo"}
    created = [t["created_at"] for t in by_type["tasks"]]
    assert created == sorted(created)
    skipped = rest.get(
        "/tasks",
        params={"task_type": "echo", "sort_by": "created_at", "sort_order": "asc", "offset": 1},
    ).json()
    assert skipped["offset"] == 1
    assert skipped["tasks"][0]["task_id"] == by_type["tasks"][1]["task_id"]
    assert rest.get("/tasks", params={"model_name": "nope"}).json()["tasks"] == []


def test_cancel_answers_the_cancelled_task_then_409_once_finished(rest: httpx.Client) -> None:
    slow = _create(rest, SLOW_ECHO)
    response = rest.delete(f"/tasks/{slow['task_id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task_id"] == slow["task_id"] and body["status"] == "cancelled"
    assert RFC3339.match(body["cancelled_at"])
    # Cancelling a cancelled task answers it again.
    assert rest.delete(f"/tasks/{slow['task_id']}").json()["status"] == "cancelled"

    done = _create(rest, {"task_type": "echo"})
    wait_for_status(rest, done["task_id"], {"COMPLETED"})
    conflict = assert_json_error(rest.delete(f"/tasks/{done['task_id']}"), 409)
    assert conflict["error"]["code"] == "TASK_NOT_CANCELLABLE"
    assert "COMPLETED" in conflict["error"]["message"]


def test_cancel_of_an_unknown_task_is_404(rest: httpx.Client) -> None:
    assert_json_error(rest.delete(f"/tasks/{uuid.uuid4()}"), 404, "TASK_NOT_FOUND")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"task_type": "echo", "priority": 11}, "priority"),
        ({"task_type": "echo", "input_data": {"delay_seconds": -1}}, "input_data.delay_seconds"),
        ({"task_type": "text_analysis", "input_data": {"text": 5}}, "input_data.text"),
        ({}, "task_type"),
    ],
)
def test_invalid_parameters_are_validation_errors_naming_the_field(
    rest: httpx.Client, payload: dict[str, Any], field: str
) -> None:
    body = assert_json_error(rest.post("/tasks", json=payload), 400, "VALIDATION_ERROR")
    assert body["error"]["details"]["field"] == field


@pytest.mark.parametrize(
    "raw",
    [b'{"task_type": "echo", "input_data": "not an object"}', b'{"task_type": ', b"[]"],
)
def test_bodies_the_transcoder_refuses_get_the_seed_error_body(
    rest: httpx.Client, raw: bytes
) -> None:
    response = rest.post("/tasks", content=raw, headers={"content-type": "application/json"})
    body = assert_json_error(response, 400, "VALIDATION_ERROR")
    assert body["error"]["code"] == "VALIDATION_ERROR"


def test_health_has_the_seed_fields_and_counters(rest: httpx.Client) -> None:
    done = _create(rest, {"task_type": "echo"})
    wait_for_status(rest, done["task_id"], {"COMPLETED"})
    response = rest.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert RFC3339.match(body["timestamp"])
    assert re.match(r"^\d+\.\d+\.\d+", body["version"])
    assert isinstance(body["uptime"], int) and body["uptime"] >= 0
    for key in ("active_tasks", "pending_tasks", "completed_tasks", "failed_tasks"):
        assert isinstance(body[key], int) and body[key] >= 0, key
    assert body["completed_tasks"] >= 1
    assert rest.get("/v1/health").json()["status"] == "healthy"


def test_metrics_are_prometheus_text_with_the_seed_names(rest: httpx.Client) -> None:
    done = _create(rest, {"task_type": "echo"})
    wait_for_status(rest, done["task_id"], {"COMPLETED"})
    response = rest.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE task_manager_tasks_total counter" in text
    completed = re.search(r'^task_manager_tasks_total\{status="completed"\} (\S+)$', text, re.M)
    assert completed and float(completed.group(1)) >= 1
    assert "# TYPE task_manager_processing_time_seconds histogram" in text
    assert re.search(r'^task_manager_processing_time_seconds_bucket\{le="1.0"\} ', text, re.M)
    assert re.search(r"^task_manager_processing_time_seconds_count [1-9]", text, re.M)


def test_seed_001s_sdk_loop_ends_with_the_result(rest: httpx.Client) -> None:
    """Seed 001's own example: poll while the status is "pending" or "running"."""
    task = _create(rest, {"task_type": "echo", "input_data": {"delay_seconds": 0.3}})
    assert task["status"] == "pending"
    deadline = time.monotonic() + 30
    while task["status"] in ["pending", "running"]:
        assert time.monotonic() < deadline, task
        time.sleep(0.05)
        task = rest.get(f"/tasks/{task['task_id']}").json()
    assert task["status"] == "completed", task
    listed = rest.get("/tasks", params={"status": "completed", "limit": 1000}).json()["tasks"]
    assert {t["status"] for t in listed} == {"completed"}
