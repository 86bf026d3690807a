"""Checks of request fields shared by the services; each failure names its field."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable

from taskorch.core.errors import InvalidArgument
from taskorch.core.model import MAX_PRIORITY, MIN_PRIORITY

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


def short_text(value: str, field: str, *, limit: int = 200) -> str:
    if len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters", field=field)
    return value.strip()
