"""The shared checks of request fields: what each accepts, its defaults, and errors that name
the field a client got wrong."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from taskorch.core import validation
from taskorch.domain.errors import InvalidArgument, TaskNotFound

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
TASK_ID = "7a1c7f3e-5c55-4b8e-9a36-1c5bd0a4e1f1"


def _field(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.metadata.get("field", "")


@pytest.mark.parametrize(
    "given",
    [TASK_ID, TASK_ID.upper(), f"  {TASK_ID} ", f"task_{TASK_ID}", f"TASK-{TASK_ID}"],
)
def test_ids_in_any_accepted_spelling_are_one_canonical_id(given: str) -> None:
    assert validation.parse_id(given) == TASK_ID


@pytest.mark.parametrize("given", ["", "   ", "xyz", "task_", TASK_ID[:-1]])
def test_an_id_that_is_not_a_uuid_is_refused_naming_its_field(given: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.parse_id(given, "subtask_id")
    assert _field(caught) == "subtask_id"


def test_an_id_in_a_path_that_cannot_exist_is_simply_not_found() -> None:
    with pytest.raises(TaskNotFound) as caught:
        validation.resource_id("xyz", TaskNotFound)
    assert "xyz" in caught.value.message
    assert validation.resource_id(f"task_{TASK_ID}", TaskNotFound) == TASK_ID


def test_priority_defaults_to_five_and_must_be_one_to_ten() -> None:
    assert validation.priority(0) == 5
    assert [validation.priority(p) for p in (1, 10)] == [1, 10]
    for bad in (-1, 11):
        with pytest.raises(InvalidArgument) as caught:
            validation.priority(bad)
        assert _field(caught) == "priority" and str(bad) in caught.value.message


def test_durations_are_zero_or_more_and_zero_means_none() -> None:
    assert validation.seconds(0, "timeout_seconds") is None
    assert validation.seconds(2.5, "timeout_seconds") == 2.5
    for bad in (-1.0, math.nan, 8 * 24 * 3600.0):
        with pytest.raises(InvalidArgument) as caught:
            validation.seconds(bad, "timeout_seconds")
        assert _field(caught) == "timeout_seconds"


def test_run_at_is_the_given_time_or_a_delay_from_now() -> None:
    at = NOW + timedelta(hours=2)
    assert validation.run_at(at, 0, NOW) == at
    assert validation.run_at(None, 90, NOW) == NOW + timedelta(seconds=90)
    assert validation.run_at(None, 0, NOW) is None  # at once
    # A time in the past is kept: the task runs at once, and shows when it was asked for.
    assert validation.run_at(NOW - timedelta(minutes=5), 0, NOW) == NOW - timedelta(minutes=5)


@pytest.mark.parametrize(
    ("at", "after", "field"),
    [
        (NOW + timedelta(hours=1), 5.0, "run_after_seconds"),  # both
        (datetime(2026, 12, 4, 13, 0), 0.0, "run_at"),  # no time zone
        (NOW + timedelta(days=367), 0.0, "run_at"),  # too far ahead
        (None, 367 * 24 * 3600.0, "run_after_seconds"),
        (None, -1.0, "run_after_seconds"),
    ],
)
def test_bad_delays_are_refused_naming_the_field(
    at: datetime | None, after: float, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.run_at(at, after, NOW)
    assert _field(caught) == field, caught.value.message


def test_a_concurrency_key_keeps_its_limit_unless_one_is_given() -> None:
    assert validation.concurrency("", 0) == (None, None)
    assert validation.concurrency(" gpu ", 0) == ("gpu", None)
    assert validation.concurrency("gpu", 3) == ("gpu", 3)


@pytest.mark.parametrize(
    ("key", "limit", "field"),
    [
        ("", 2, "concurrency_limit"),  # a limit of no key
        ("model:smollm", 1, "concurrency_key"),  # the server's own keys
        ("k" * 201, 1, "concurrency_key"),
        ("gpu", -1, "concurrency_limit"),
        ("gpu", 10_001, "concurrency_limit"),
    ],
)
def test_bad_concurrency_keys_and_limits_are_refused_naming_the_field(
    key: str, limit: int, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.concurrency(key, limit)
    assert _field(caught) == field, caught.value.message


def test_paging_by_page_or_offset_with_a_capped_limit() -> None:
    assert validation.paging(0, 0, 0, default_limit=20, max_limit=100) == (20, 0)
    assert validation.paging(10, 0, 3, default_limit=20, max_limit=100) == (10, 20)
    assert validation.paging(10, 35, 0, default_limit=20, max_limit=100) == (10, 35)
    # Too large a limit is reduced, not refused (the seeds do so).
    assert validation.paging(5000, 0, 0, default_limit=20, max_limit=100) == (100, 0)


@pytest.mark.parametrize(
    ("limit", "offset", "page", "field"),
    [
        (-1, 0, 0, "limit"),
        (0, -1, 0, "offset"),
        (0, 0, -1, "page"),
        (0, 5, 2, "page"),  # both
        (100, 0, 10_002, "page"),  # deeper than offsets go
        (100, 1_000_001, 0, "offset"),
    ],
)
def test_bad_paging_is_refused_naming_the_field(
    limit: int, offset: int, page: int, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.paging(limit, offset, page, default_limit=20, max_limit=100)
    assert _field(caught) == field, caught.value.message


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"scores": [0.5, 1.0, math.nan]}, "result.scores[2]"),
        ({"a": {"b": math.inf}}, "result.a.b"),
        ({"text": "nul \x00 here"}, "result.text"),
        ({"bad\x00key": 1}, "result"),
        ([1, [2, -math.inf]], "result[1][1]"),
    ],
)
def test_unstorable_json_is_refused_naming_the_place(value: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validation.storable_json(value, "result")
    assert _field(caught) == field, caught.value.message


def test_storable_json_passes_ordinary_values() -> None:
    validation.storable_json({"a": [1, 2.5, "x", None, True, {"b": "ü"}]}, "result")


def test_a_lease_longer_than_the_maximum_is_cut_to_it() -> None:
    assert validation.lease_seconds(30, 3600) == 30
    assert validation.lease_seconds(7200, 3600) == 3600
    for bad in (0.0, -5.0, math.nan, math.inf):
        with pytest.raises(InvalidArgument) as caught:
            validation.lease_seconds(bad, 3600)
        assert _field(caught) == "lease_seconds"
