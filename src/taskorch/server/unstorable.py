"""Refuses, at the edge, request values that a backend cannot store or JSON cannot carry.

A NUL character (U+0000) is valid in a protobuf string and SQLite stores it, but PostgreSQL's
text and JSON types refuse it; NaN and the infinities fit a protobuf double but no JSON
document (PostgreSQL refuses them, and the REST surface could not answer them). Checking every
field of every request here, before any service runs, gives both backends the same rule and
keeps such a value out of the group commit, where it would fail the operations batched with
it. Each refusal names the field (``input_data.prompt``, ``result.scores[2]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from taskorch.domain.errors import InvalidArgument

# Bytes that the wire form of a NUL character or a non-finite float must contain: the NUL
# itself; a double/float whose exponent bits are all ones has a 0x7f or 0xff byte. A request
# with none of them (most) is not walked.
_SUSPECT_BYTES = (b"\x00", b"\x7f", b"\xff")
_MAX_QUOTED = 60


def refuse_unstorable(message: Message, raw: bytes | None = None) -> None:
    """Raises InvalidArgument naming the first field holding a NUL character or a non-finite number.

    Args:
        message: the parsed request.
        raw: its wire bytes, when known: a request that cannot hold such a value is skipped.

    Raises:
        InvalidArgument: a string (or map key) with U+0000, or a NaN/Infinity number.
    """
    if raw is not None and not any(b in raw for b in _SUSPECT_BYTES):
        return
    found = _message(message)
    if found is not None:
        steps, problem = found
        field = _path(steps)
        raise InvalidArgument(f"{field} {problem}", field=field)


# The walk runs on most requests and finds nothing in almost all of them, so it builds no
# paths on the way: a problem comes back with its path's steps innermost first (a field name
# or a Struct key, a map key as a _Key, a list index as an int), joined only then.
class _Key(str):
    """A map key's step of a path, quoted: ``['a b']``."""


_Found = tuple[list[str | int], str]
_NUL = "must not contain a NUL character (U+0000)"
_NUL_KEY = "has a key with a NUL character (U+0000)"

# How the walk treats a field, found once per field descriptor: only strings, floating-point
# numbers and messages can hold what is refused; every other kind is skipped without a look.
# (_item tells a message from a string or a number by its value.)
_SKIP, _LOOK, _MAP = range(3)
_FIELD_KINDS: dict[FieldDescriptor, int] = {}
_MAY_HOLD = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def _kind(field: FieldDescriptor) -> int:
    kind = _FIELD_KINDS.get(field)
    if kind is None:
        if field.message_type is not None:
            kind = _MAP if field.message_type.GetOptions().map_entry else _LOOK
        else:
            kind = _LOOK if field.type in _MAY_HOLD else _SKIP
        _FIELD_KINDS[field] = kind
    return kind


def _message(message: Message) -> _Found | None:
    well_known = _WELL_KNOWN.get(message.DESCRIPTOR.full_name)
    if well_known is not None:
        return well_known(message)
    for field, value in message.ListFields():
        kind = _kind(field)
        if kind == _SKIP:
            continue
        found: _Found | None = None
        if kind == _MAP:
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    return [_Key(f"[{_quote(key)}]"), field.name], _NUL_KEY
                found = _item(item)
                if found is not None:
                    found[0].append(_Key(f"[{_quote(key)}]"))
                    break
        elif field.is_repeated:
            for index, item in enumerate(value):
                found = _item(item)
                if found is not None:
                    found[0].append(index)
                    break
        else:
            found = _item(value)
        if found is not None:
            found[0].append(field.name)
            return found
    return None


def _item(value: object) -> _Found | None:
    if isinstance(value, Message):
        return _message(value)
    if isinstance(value, str):
        return ([], _NUL) if "\x00" in value else None
    if isinstance(value, float) and not math.isfinite(value):
        return [], f"must be a finite number; got {value}"
    return None


def _struct(struct: Message) -> _Found | None:
    fields = struct.fields  # type: ignore[attr-defined]
    for key in fields:  # keys, then lookups: a map's items() runs in Python, slower
        if "\x00" in key:
            return [_Key(f"[{_quote(key)}]")], _NUL_KEY
        found = _value(fields[key])
        if found is not None:
            found[0].append(key)
            return found
    return None


def _list(values: Message) -> _Found | None:
    for index, item in enumerate(values.values):  # type: ignore[attr-defined]
        found = _value(item)
        if found is not None:
            found[0].append(index)
            return found
    return None


def _value(value: Message) -> _Found | None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return ([], _NUL) if "\x00" in value.string_value else None  # type: ignore[attr-defined]
    if kind == "number_value":
        number = value.number_value  # type: ignore[attr-defined]
        return None if math.isfinite(number) else ([], f"must be a finite number; got {number}")
    if kind == "struct_value":
        return _struct(value.struct_value)  # type: ignore[attr-defined]
    if kind == "list_value":
        return _list(value.list_value)  # type: ignore[attr-defined]
    return None


_WELL_KNOWN: dict[str, Callable[[Any], _Found | None]] = {
    "google.protobuf.Struct": _struct,
    "google.protobuf.Value": _value,
    "google.protobuf.ListValue": _list,
}


def _path(steps: list[str | int]) -> str:
    """``input_data.prompt``, ``result.scores[2]``, ``labels['a b']`` from innermost-first steps."""
    path = ""
    for step in reversed(steps):
        if isinstance(step, int):
            path += f"[{step}]"
        elif isinstance(step, _Key):
            path += step
        else:
            path += f".{step}" if path else step
    return path


def _quote(key: object) -> str:
    text = repr(key)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."
