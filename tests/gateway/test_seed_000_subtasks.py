"""Seed 000's subtask routes through Envoy, end to end: a container task filled with custom
work, taken with `__take`, annotated, reported on and completed; and the canonical worker
paths under /v1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.gateway._http import assert_json_error
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("gateway_seed_000_subtasks")


@pytest.fixture
def rest(gateway_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_server.http_url, timeout=30) as client:
        yield client


def test_the_seed_000_work_assignment_flow(rest: httpx.Client) -> None:
    created = rest.post("/task", json={})
    assert created.status_code == 200, created.text
    task = created.json()
    assert task["task_type"] == "container" and task["status"] == "PENDING"
    task_id = task["task_id"]

    added = rest.post(f"/task/{task_id}/subtask", json={"kind": "resize", "name": "thumb"})
    assert added.status_code == 200, added.text
    subtask_id = added.json()["subtask_id"]
    assert added.json()["status"] == "PENDING" and added.json()["ready"] is True

    listed = rest.get(f"/task/{task_id}/subtask").json()
    assert [s["subtask_id"] for s in listed["subtasks"]] == [subtask_id] and listed["total"] == 1

    info = rest.put(f"/task/{task_id}/subtask/{subtask_id}", json={"info": {"owner": "ops"}})
    assert info.status_code == 200 and info.json()["info"] == {"owner": "ops"}

    taken = rest.post(
        f"/task/{task_id}/subtask/__take", json={"worker_id": "curl-worker", "kinds": ["resize"]}
    )
    assert taken.status_code == 200, taken.text
    lease = taken.json()
    assert lease["subtask_id"] == subtask_id and lease["lease_id"] and lease["attempt"] == 1
    assert lease["status"] == "RUNNING" and lease["worker_id"] == "curl-worker"

    nothing = rest.post(f"/task/{task_id}/subtask/__take", json={"kinds": ["resize"]})
    assert_json_error(nothing, 404, "NO_WORK_AVAILABLE")

    status = f"/task/{task_id}/subtask/{subtask_id}/status"
    beat = rest.put(
        status, json={"lease_id": lease["lease_id"], "status": "running", "progress": 40}
    )
    assert beat.status_code == 200, beat.text
    assert beat.json()["stop"] is False and beat.json()["subtask"]["progress"] == 40

    stale = rest.put(status, json={"lease_id": "a" * 8, "status": "COMPLETED"})
    assert_json_error(stale, 409, "LEASE_LOST")

    done = rest.put(
        status,
        json={"lease_id": lease["lease_id"], "status": "COMPLETED", "result": {"width": 128}},
    )
    assert done.status_code == 200, done.text
    final = rest.get(f"/task/{task_id}").json()
    assert final["status"] == "COMPLETED" and final["result"] == {"width": 128}
    got = rest.get(f"/task/{task_id}/subtask/{subtask_id}").json()
    assert got["status"] == "COMPLETED" and got["result"] == {"width": 128}


def test_canonical_worker_paths(rest: httpx.Client) -> None:
    task_id = rest.post("/v1/tasks", json={"task_type": "container"}).json()["task_id"]
    rest.post(f"/v1/tasks/{task_id}/subtasks", json={"kind": "canonical-kind"})
    take = {"worker_id": "w1", "kinds": ["canonical-kind"], "lease_seconds": 30}
    lease = rest.post("/v1/subtasks:take", json=take).json()
    assert lease["task_id"] == task_id
    beat = rest.post(
        f"/v1/subtasks/{lease['subtask_id']}:heartbeat",
        json={"lease_id": lease["lease_id"], "progress": 10, "output_delta": "partial "},
    )
    assert beat.status_code == 200 and beat.json()["stop"] is False
    complete = rest.post(
        f"/v1/subtasks/{lease['subtask_id']}:complete",
        json={"lease_id": lease["lease_id"], "result": {"ok": True}},
    )
    assert complete.status_code == 200 and complete.json()["status"] == "COMPLETED"
    assert rest.get(f"/v1/tasks/{task_id}").json()["status"] == "COMPLETED"
    assert_json_error(rest.post("/v1/subtasks:take", json=take), 404, "NO_WORK_AVAILABLE")


def test_a_failed_report_fails_the_task_and_a_cancel_stops_the_worker(
    rest: httpx.Client,
) -> None:
    task_id = rest.post("/task", json={}).json()["task_id"]
    rest.post(f"/task/{task_id}/subtask", json={"kind": "doomed"})
    lease = rest.post(f"/task/{task_id}/subtask/__take", json={"kinds": ["doomed"]}).json()
    failed = rest.put(
        f"/task/{task_id}/subtask/{lease['subtask_id']}/status",
        json={
            "lease_id": lease["lease_id"],
            "status": "FAILED",
            "error": "cannot decode image",
            "permanent": True,
        },
    )
    assert failed.status_code == 200, failed.text
    assert rest.get(f"/task/{task_id}").json()["status"] == "FAILED"

    other = rest.post("/task", json={}).json()["task_id"]
    rest.post(f"/task/{other}/subtask", json={"kind": "stoppable"})
    held = rest.post(f"/task/{other}/subtask/__take", json={"kinds": ["stoppable"]}).json()
    assert rest.delete(f"/task/{other}").json()["status"] == "CANCELLED"
    beat = rest.put(
        f"/task/{other}/subtask/{held['subtask_id']}/status",
        json={"lease_id": held["lease_id"], "status": "RUNNING"},
    )
    assert beat.json()["stop"] is True and beat.json()["reason"] == "cancelled"
