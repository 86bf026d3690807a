"""Between domain values and protobuf messages: times keep every microsecond, before and
after the Unix epoch, as protobuf's own conversion writes them; a Struct reads back as the
JSON that was put in (whole numbers as ints), with the values ``MessageToDict`` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from taskorch import structs
from taskorch.client._models import Task
from taskorch.server.convert import set_time
from taskorch.v1 import task_service_pb2 as pb


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


def test_a_timestamp_reads_back_in_the_sdk_as_the_same_aware_time() -> None:
    for value in (
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 6, 4, 5, 6, 789012, tzinfo=UTC),
    ):
        proto = pb.Task(task_id="t", status="PENDING")
        set_time(proto.created_at, value)
        read = Task.from_proto(proto).created_at
        assert read == value == proto.created_at.ToDatetime(tzinfo=UTC)
        assert read is not None and read.utcoffset() == timedelta(0)


JSON_VALUES = {
    "n": 5,
    "half": 2.5,
    "negative_zero": -0.0,
    "big": 2**60,  # past 2**53 a double is not an exact int: kept a float
    "huge": 1e300,
    "text": "",
    "flags": [True, False],
    "nothing": None,
    "nested": {"list": [1, "x", None, {"deep": [[]]}], "empty": {}},
}


def test_a_struct_reads_back_as_its_json_with_whole_numbers_as_ints() -> None:
    message = struct_pb2.Struct()
    message.update(JSON_VALUES)
    plain = structs.to_dict(message)
    assert plain == {**JSON_VALUES, "negative_zero": 0, "big": float(2**60)}
    assert type(plain["n"]) is int and type(plain["half"]) is float
    assert type(plain["big"]) is float and type(plain["nested"]["list"][0]) is int
    # The same values as protobuf's own reader gives, whole numbers made ints.
    assert plain == structs.to_dict_value(json_format.MessageToDict(message))


def test_a_struct_value_never_set_reads_as_null() -> None:
    message = struct_pb2.Struct()
    message.fields["unset"].CopyFrom(struct_pb2.Value())
    assert structs.to_dict(message) == {"unset": None}


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_a_struct_number_json_cannot_hold_raises(number: float) -> None:
    message = struct_pb2.Struct()
    message.update({"x": {"y": [number]}})
    with pytest.raises(ValueError, match="JSON cannot"):
        structs.to_dict(message)
