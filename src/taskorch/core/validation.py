"""Checks of request fields shared by the services; each failure names its field."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from taskorch.domain.errors import InvalidArgument
from taskorch.domain.values import MAX_PRIORITY, MIN_PRIORITY, MODEL_KEY_PREFIX

# Seed 001 shows ids as "task_<uuid>"; accept that spelling for the same task.
_PREFIXES = ("task_", "task-")


def parse_id(value: str, field: str = "task_id") -> str:
    """The canonical (lower-case, hyphenated) form of a UUID id.

    Raises:
        InvalidArgument: ``value`` is empty or not a UUID.
    """
    text = value.strip()
    if not text:
        raise InvalidArgument(f"{field} is required", field=field)
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidArgument(f"{field} {value[:80]!r} is not a valid UUID", field=field) from None


def resource_id(value: str, not_found: Callable[[str], Exception]) -> str:
    """The canonical form of an id in a resource path; an id that cannot exist is simply
    not found (seed 003: ``GET /v1/tasks/xyz`` answers 404 "Task with ID 'xyz' not found")."""
    try:
        return parse_id(value)
    except InvalidArgument:
        raise not_found(value[:80]) from None


def priority(value: int, field: str = "priority", *, default: int | None = 5) -> int:
    if value == 0 and default is not None:
        return default
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidArgument(
            f"{field} must be between {MIN_PRIORITY} and {MAX_PRIORITY} (higher runs first); "
            f"got {value}",
            field=field,
        )
    return value


def bounded_int(value: int, field: str, *, low: int, high: int, default: int) -> int:
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low} and {high}; got {value}", field=field)
    return value


def seconds(value: float, field: str, *, high: float = 7 * 24 * 3600.0) -> float | None:
    """A non-negative duration; 0 means none."""
    if math.isnan(value) or value < 0 or value > high:
        raise InvalidArgument(f"{field} must be between 0 and {high:g} seconds", field=field)
    return value or None


# How far ahead a delayed task may be scheduled.
MAX_DELAY_SECONDS = 366 * 24 * 3600.0


def run_at(at: datetime | None, after_seconds: float, now: datetime) -> datetime | None:
    """When a task may start: ``at`` or ``after_seconds`` from ``now`` (None: at once)."""
    if at is not None and after_seconds:
        raise InvalidArgument(
            "give run_at or run_after_seconds, not both", field="run_after_seconds"
        )
    if at is None:
        delay = seconds(after_seconds, "run_after_seconds", high=MAX_DELAY_SECONDS)
        return now + timedelta(seconds=delay) if delay else None
    if at.tzinfo is None:
        raise InvalidArgument("run_at must carry a time zone (e.g. a Z suffix)", field="run_at")
    if at > now + timedelta(seconds=MAX_DELAY_SECONDS):
        raise InvalidArgument(
            f"run_at is more than {MAX_DELAY_SECONDS / 86400:g} days ahead", field="run_at"
        )
    return at


MAX_CONCURRENCY_LIMIT = 10_000


def concurrency(key: str, limit: int) -> tuple[str | None, int | None]:
    """A concurrency key and its limit (None: none given)."""
    key = short_text(key, "concurrency_key")
    if not key:
        if limit:
            raise InvalidArgument(
                "concurrency_limit needs a concurrency_key", field="concurrency_limit"
            )
        return None, None
    if key.startswith(MODEL_KEY_PREFIX):
        raise InvalidArgument(
            f"concurrency keys starting with {MODEL_KEY_PREFIX!r} are the server's own (an "
            "inference task gets its model's key, limited to what the model runs at once)",
            field="concurrency_key",
        )
    if limit == 0:
        return key, None
    return key, bounded_int(
        limit, "concurrency_limit", low=1, high=MAX_CONCURRENCY_LIMIT, default=1
    )


def short_text(value: str, field: str, *, limit: int = 200) -> str:
    if len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters", field=field)
    return value.strip()


# Offset paging deeper than this is refused: page tokens go anywhere at constant cost.
MAX_OFFSET = 1_000_000


def paging(
    limit: int, offset: int, page: int, *, default_limit: int, max_limit: int
) -> tuple[int, int]:
    """The page size and the offset of an offset- or page-numbered list request.

    A limit above ``max_limit`` is reduced, not refused (seed behaviour).

    Raises:
        InvalidArgument: a negative number, page and offset together, or too deep.
    """
    if limit < 0:
        raise InvalidArgument("limit must not be negative", field="limit")
    if offset < 0:
        raise InvalidArgument("offset must not be negative", field="offset")
    if page < 0:
        raise InvalidArgument("page must be 1 or more", field="page")
    if page and offset:
        raise InvalidArgument("give either page or offset, not both", field="page")
    limit = min(limit or default_limit, max_limit)
    offset = (page - 1) * limit if page else offset
    if offset > MAX_OFFSET:
        field = "page" if page else "offset"
        raise InvalidArgument(
            f"{field} reaches past item {MAX_OFFSET}; follow next_page_token to go deeper",
            field=field,
        )
    return limit, offset


def storable_json(value: object, field: str) -> None:
    """Refuses what no backend can store and no JSON can carry: a NaN or infinite number, or
    a NUL character (U+0000) in a string or key, anywhere in ``value``.

    Raises:
        InvalidArgument: naming the first such place (``result.scores[2]``).
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{field} must be a finite number; got {value}", field=field)
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(f"{field} must not contain a NUL character (U+0000)", field=field)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                raise InvalidArgument(
                    f"{field} has a key with a NUL character (U+0000)", field=field
                )
            storable_json(item, f"{field}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            storable_json(item, f"{field}[{index}]")


def lease_seconds(value: float, maximum: float, field: str = "lease_seconds") -> float:
    """A lease length: positive and finite; longer than ``maximum`` is cut to it.

    Raises:
        InvalidArgument: ``value`` is NaN, infinite, zero or negative.
    """
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgument(
            f"{field} must be a positive number of seconds (at most {maximum:g}); got {value}",
            field=field,
        )
    return min(value, maximum)
