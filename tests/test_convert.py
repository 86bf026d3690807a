"""Between domain values and protobuf messages: times keep every microsecond, before and
after the Unix epoch, as protobuf's own conversion writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from taskorch.server.convert import set_time


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 6, 4, 5, 6, 789012, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # nanos stay non-negative
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 6, 9, 0, tzinfo=timezone(timedelta(hours=5))),
        datetime(2026, 12, 6, 4, 5, 6),  # naive: UTC
    ],
)
def test_set_time_writes_what_protobufs_from_datetime_writes(value: datetime) -> None:
    ours, theirs = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    set_time(ours, value)
    theirs.FromDatetime(value)
    assert (ours.seconds, ours.nanos) == (theirs.seconds, theirs.nanos)
    assert ours.ToDatetime(tzinfo=UTC) == (value if value.tzinfo else value.replace(tzinfo=UTC))


def test_set_time_leaves_the_field_unset_for_none() -> None:
    message = timestamp_pb2.Timestamp()
    set_time(message, None)
    assert message == timestamp_pb2.Timestamp()
