"""Schedules through Envoy: `/v1/schedules` with a CreateTask body, the :pause, :resume and
:trigger verbs, and the JSON error bodies of bad input and unknown names."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.gateway._http import RFC3339, UUID4, assert_json_error, field_violations

pytestmark = pytest.mark.xdist_group("gateway_schedules")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_an_interval_schedule_created_over_rest_fires(rest: httpx.Client) -> None:
    name = unique("rest-tick")
    response = rest.post(
        "/v1/schedules",
        json={"name": name, "interval_seconds": 1, "task": {"text": "Every second, a task."}},
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert UUID4.match(created["schedule_id"])
    assert created["task"]["text"] == "Every second, a task."
    assert created["catch_up"] == "one" and created["timezone"] == "UTC"
    assert RFC3339.match(created["next_fire_at"]), created
    deadline = time.monotonic() + 15
    while not (shown := rest.get(f"/v1/schedules/{name}").json()).get("last_task_id"):
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)
    task = rest.get(f"/v1/tasks/{shown['last_task_id']}").json()
    assert task["text"] == "Every second, a task."
    assert task["request_id"].startswith(f"schedule:{created['schedule_id']}:")
    assert rest.post(f"/v1/schedules/{name}:pause", json={}).json()["paused"] is True


def test_a_cron_schedule_is_paused_resumed_triggered_listed_and_deleted(
    rest: httpx.Client,
) -> None:
    name = unique("rest-cron")
    body = {
        "name": name,
        "cron": "15 4 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "catch_up": "none",
        "task": {"task_type": "echo", "priority": 7},
    }
    created = rest.post("/v1/schedules", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["cron"] == "15 4 * * MON-FRI"
    paused = rest.post(f"/v1/schedules/{name}:pause", json={}).json()
    assert paused["paused"] is True and "next_fire_at" not in paused
    resumed = rest.post(f"/v1/schedules/{name}:resume").json()  # a body is optional
    assert resumed["paused"] is False and RFC3339.match(resumed["next_fire_at"])
    triggered = rest.post(f"/v1/schedules/{name}:trigger", json={})
    assert triggered.status_code == 200, triggered.text
    answer = triggered.json()
    assert answer["schedule"]["fire_count"] == 1
    assert answer["task"]["task_id"] == answer["schedule"]["last_task_id"]
    assert answer["task"]["priority"] == 7
    listed = rest.get("/v1/schedules").json()["schedules"]
    assert name in [s["name"] for s in listed]
    deleted = rest.delete(f"/v1/schedules/{name}")
    assert deleted.status_code == 200, deleted.text
    assert_json_error(rest.get(f"/v1/schedules/{name}"), 404, "SCHEDULE_NOT_FOUND")
    assert_json_error(rest.post(f"/v1/schedules/{name}:trigger", json={}), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Paris"}, "timezone"),
        ({"cron": "0 9 * * *", "interval_seconds": 5}, "interval_seconds"),
        ({}, "cron"),
        ({"interval_seconds": 0.5}, "interval_seconds"),
        ({"interval_seconds": 5, "task": {"text": "a", "priority": 0.5}}, None),
        ({"interval_seconds": 5, "task": {"template": "no-such-template"}}, None),
        ({"interval_seconds": 5, "task": {"text": "a"}, "catch_up": "every"}, "catch_up"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    rest: httpx.Client, body: dict[str, object], field: str | None
) -> None:
    response = rest.post(
        "/v1/schedules", json={"name": unique("bad"), "task": {"text": "a"}, **body}
    )
    if body.get("task", {}).get("template"):  # type: ignore[union-attr]
        assert_json_error(response, 404, "TEMPLATE_NOT_FOUND")
        return
    error = assert_json_error(response, 400)
    if field is not None:
        assert field in field_violations(error), error
