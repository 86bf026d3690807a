"""Large inputs through Envoy (issue 22 item 4): read back whole by REST, lists leave them out
unless `view=TASK_VIEW_FULL`, and an input over the limit is a JSON 400 naming the field."""

from __future__ import annotations

import httpx
import pytest

from taskorch.domain.limits import MiB
from tests.gateway._http import TERMINAL, assert_json_error, field_violations, wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("gateway_large")

BIG = int(3.5 * MiB)


def test_a_large_task_is_read_back_by_rest_and_left_out_of_lists(
    gateway_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=gateway_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/v1/tasks", json={"task_type": "echo", "input_data": {"blob": "x" * BIG}}
        )
        assert created.status_code == 200, created.text[:500]
        task_id = created.json()["task_id"]
        done = wait_for_status(rest, task_id, TERMINAL, timeout=60)
        assert done["status"] == "COMPLETED"
        got = rest.get(f"/v1/tasks/{task_id}")
        assert got.status_code == 200
        assert len(got.json()["input_data"]["blob"]) == BIG
        assert len(got.json()["result"]["echo"]["blob"]) == BIG
        listed = rest.get("/v1/tasks", params={"limit": 100})
        assert listed.status_code == 200
        item = next(t for t in listed.json()["tasks"] if t["task_id"] == task_id)
        assert item["omitted_fields"] == ["input_data", "result"] and "input_data" not in item
        full = rest.get(
            "/v1/tasks", params={"limit": 1, "view": "TASK_VIEW_FULL", "task_type": "echo"}
        )
        assert full.status_code == 200, full.text[:500]
        first = full.json()["tasks"][0]
        assert first.get("omitted_fields", []) == [] and "input_data" in first


def test_an_input_over_the_limit_is_a_json_400_naming_the_field(
    gateway_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=gateway_server.http_url, timeout=60) as rest:
        response = rest.post(
            "/v1/tasks", json={"task_type": "echo", "input_data": {"blob": "x" * (5 * MiB)}}
        )
    body = assert_json_error(response, 400)
    assert field_violations(body) == ["input_data"]
