"""Seed 003 through Envoy: `/v1/tasks` text analysis, UUIDv4 ids, 404 body, page/limit lists."""

from __future__ import annotations

import math
import re
import uuid

import httpx
import pytest

from tests.gateway._http import RFC3339, UUID4, assert_json_error, field_violations, wait_for_status
from tests.gateway.expected import DIVERGES

pytestmark = pytest.mark.xdist_group("gateway_seed_003")

# The request payload of the seed document, verbatim.
SEED_TEXT = "Multimodal is building AI-powered tools to automate complex tasks."


def _submit(rest: httpx.Client, text: str = SEED_TEXT) -> dict[str, object]:
    response = rest.post("/v1/tasks", json={"text": text})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_submit_answers_a_uuid4_task_id_and_pending(rest: httpx.Client) -> None:
    response = rest.post("/v1/tasks", json={"text": SEED_TEXT})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert UUID4.match(body["task_id"]), body["task_id"]
    assert body["status"] == "PENDING"


def test_completed_task_carries_word_count_and_top_words(rest: httpx.Client) -> None:
    task_id = _submit(rest)["task_id"]
    done = wait_for_status(rest, str(task_id), {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    result = done["result"]
    assert result["text"] == SEED_TEXT
    assert result["word_count"] == len(SEED_TEXT.split())
    assert len(result["top_words"]) == 5 and "multimodal" in result["top_words"]
    # Whole numbers print as JSON integers (a typed client may read them as int).
    raw = rest.get(f"/v1/tasks/{task_id}").text
    assert re.search(rf'"word_count":{len(SEED_TEXT.split())}[,}}]', raw), raw


def test_text_of_4000_characters_is_accepted_and_4001_refused(rest: httpx.Client) -> None:
    assert _submit(rest, "a" * 4000)["status"] == "PENDING"
    body = assert_json_error(rest.post("/v1/tasks", json={"text": "a" * 4001}), 422)
    assert body["details"][0]["reason"] == "TEXT_TOO_LONG"
    assert field_violations(body) == ["text"]


@pytest.mark.parametrize("payload", [{}, {"text": ""}, {"text": "   "}])
def test_missing_or_empty_text_is_a_validation_error(
    rest: httpx.Client, payload: dict[str, str]
) -> None:
    assert_json_error(rest.post("/v1/tasks", json=payload), 400, "VALIDATION_ERROR")


def test_unknown_task_is_404_with_the_seed_error_string(rest: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    body = assert_json_error(rest.get(f"/v1/tasks/{missing}"), 404, "TASK_NOT_FOUND")
    assert body["error"] == f"Task with ID '{missing}' not found"


def test_the_seed_example_id_xyz_gets_a_json_error(rest: httpx.Client) -> None:
    expected = DIVERGES["seed003.get_malformed_id"]
    body = assert_json_error(rest.get("/v1/tasks/xyz"), expected.status, expected.reason)
    assert body["error"] == "Task with ID 'xyz' not found"  # word for word the seed's


def test_list_pages_with_the_seed_pagination_block(rest: httpx.Client) -> None:
    for n in range(12):
        _submit(rest, f"listing task {n}")
    first = rest.get("/v1/tasks").json()
    pagination = first["pagination"]
    assert pagination["page"] == 1 and pagination["limit"] == 10  # the seed's default
    assert pagination["total"] >= 12
    assert pagination["pages"] == math.ceil(pagination["total"] / 10)
    assert len(first["tasks"]) == 10
    for task in first["tasks"]:
        assert UUID4.match(task["task_id"])
        assert task["status"] in {"PENDING", "RUNNING", "COMPLETED"}
        assert RFC3339.match(task["created_at"]) and RFC3339.match(task["updated_at"])
    # Default sort: newest first.
    created = [t["created_at"] for t in first["tasks"]]
    assert created == sorted(created, reverse=True)
    second = rest.get("/v1/tasks", params={"page": 2, "limit": 5}).json()
    assert second["pagination"]["page"] == 2 and second["pagination"]["limit"] == 5
    assert [t["task_id"] for t in second["tasks"]] == [t["task_id"] for t in first["tasks"][5:]]


def test_list_filters_by_status_and_sorts(rest: httpx.Client) -> None:
    done = _submit(rest, "to be completed")
    wait_for_status(rest, str(done["task_id"]), {"COMPLETED"})
    for status in ("COMPLETED", "completed"):
        listed = rest.get("/v1/tasks", params={"status": status, "limit": 100}).json()
        assert listed["tasks"] and {t["status"] for t in listed["tasks"]} == {"COMPLETED"}
    ascending = rest.get(
        "/v1/tasks", params={"sort_by": "created_at", "order": "asc", "limit": 100}
    ).json()
    created = [t["created_at"] for t in ascending["tasks"]]
    assert created == sorted(created)
    # PROCESSING is the seed's word for RUNNING.
    processing = rest.get("/v1/tasks", params={"status": "PROCESSING"})
    assert processing.status_code == 200
    assert {t["status"] for t in processing.json()["tasks"]} <= {"RUNNING"}


def test_no_match_is_an_empty_page(rest: httpx.Client) -> None:
    body = rest.get("/v1/tasks", params={"status": "FAILED"}).json()
    assert body["tasks"] == []
    assert body["pagination"] == {"page": 1, "limit": 10, "total": 0, "pages": 0}


def test_bad_list_parameters_are_json_400s(rest: httpx.Client) -> None:
    assert_json_error(rest.get("/v1/tasks", params={"status": "bogus"}), 400, "VALIDATION_ERROR")
    assert_json_error(rest.get("/v1/tasks", params={"limit": "abc"}), 400, "VALIDATION_ERROR")
    assert_json_error(rest.get("/v1/tasks", params={"page": -1}), 400, "VALIDATION_ERROR")


def test_batch_create_over_rest_is_all_or_nothing(rest: httpx.Client) -> None:
    response = rest.post(
        "/v1/tasks:batchCreate",
        json={"requests": [{"text": "first of two"}, {"task_type": "echo", "priority": 7}]},
    )
    assert response.status_code == 200, response.text
    tasks = response.json()["tasks"]
    assert [t["text"] for t in tasks] == ["first of two", ""]
    assert tasks[1]["priority"] == 7 and all(UUID4.match(t["task_id"]) for t in tasks)
    bad = rest.post(
        "/v1/tasks:batchCreate", json={"requests": [{"text": "fine"}, {"text": "a" * 4001}]}
    )
    assert field_violations(assert_json_error(bad, 422, "TEXT_TOO_LONG")) == ["requests[1].text"]


@pytest.mark.parametrize("path", ["/v1/tasks", "/tasks", "/api/v1/tasks", "/task"])
def test_a_text_too_long_is_a_422_on_every_surface(rest: httpx.Client, path: str) -> None:
    """Seed 003 answers 422 for "text too long"; seeds 001 and 002 call 422 a validation
    error. A missing text stays 400 (bad request)."""
    body = assert_json_error(rest.post(path, json={"text": "a" * 4001}), 422)
    assert "4001 characters" in body["message"]
    assert_json_error(rest.post(path, json={"text": ""}), 400)
