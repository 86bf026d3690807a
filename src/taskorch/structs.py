"""JSON objects carried in google.protobuf.Struct fields, shared by the server and the SDK."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format, struct_pb2


def to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON. Struct stores every number as a double; integral values come
    back as ints, as the client most likely sent them (``5``, not ``5.0``)."""
    return _ints(json_format.MessageToDict(struct))  # type: ignore[no-any-return]


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
