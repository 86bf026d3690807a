"""JSON objects carried in google.protobuf.Struct fields, shared by the server and the SDK."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2


def to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON. Struct stores every number as a double; integral values come
    back as ints, as the client most likely sent them (``5``, not ``5.0``).

    What ``json_format.MessageToDict`` gives (an unset value is null; a NaN or infinite
    number raises ValueError, as JSON has none), read field by field: several times faster,
    and every task's input and result pass here on the server and in the SDK.

    Raises:
        ValueError: a number is NaN or infinite.
    """
    return {key: _plain(value) for key, value in struct.fields.items()}


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise ValueError(f"a Struct holds the number {number}, which JSON cannot")
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        return to_dict(value.struct_value)
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or no value set


def to_dict_value(value: Any) -> Any:
    """Plain JSON from a google.protobuf.Value already turned into Python, integral numbers
    as ints."""
    return _ints(value)


def depth(value: Any) -> int:
    """How deeply nested ``value`` is (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def _ints(value: Any) -> Any:
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
