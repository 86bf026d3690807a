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
from collections.abc import Iterator

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
    for field, problem in _problems(message, ""):
        raise InvalidArgument(f"{field} {problem}", field=field)


def _problems(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        yield from _struct(message, prefix)
        return
    if name == "google.protobuf.Value":
        yield from _value(message, prefix)
        return
    if name == "google.protobuf.ListValue":
        yield from _list(message, prefix)
        return
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                entry = f"{path}[{_quote(key)}]"
                if isinstance(key, str) and "\x00" in key:
                    yield entry, "has a key with a NUL character (U+0000)"
                yield from _scalar_or_message(item, entry)
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _scalar_or_message(item, f"{path}[{index}]")
        else:
            yield from _scalar_or_message(value, path)


def _scalar_or_message(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Message):
        yield from _problems(value, f"{path}.")
    elif isinstance(value, str):
        if "\x00" in value:
            yield path, "must not contain a NUL character (U+0000)"
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, f"must be a finite number; got {value}"


def _struct(struct: Message, prefix: str) -> Iterator[tuple[str, str]]:
    base = prefix[:-1] if prefix.endswith(".") else prefix
    for key, item in struct.fields.items():  # type: ignore[attr-defined]
        path = f"{base}.{key}" if base else key
        if "\x00" in key:
            yield f"{base}[{_quote(key)}]", "has a key with a NUL character (U+0000)"
            continue
        yield from _value(item, path)


def _list(values: Message, prefix: str) -> Iterator[tuple[str, str]]:
    base = prefix[:-1] if prefix.endswith(".") else prefix
    for index, item in enumerate(values.values):  # type: ignore[attr-defined]
        yield from _value(item, f"{base}[{index}]")


def _value(value: Message, path: str) -> Iterator[tuple[str, str]]:
    path = path[:-1] if path.endswith(".") else path
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        if "\x00" in value.string_value:  # type: ignore[attr-defined]
            yield path, "must not contain a NUL character (U+0000)"
    elif kind == "number_value":
        number = value.number_value  # type: ignore[attr-defined]
        if not math.isfinite(number):
            yield path, f"must be a finite number; got {number}"
    elif kind == "struct_value":
        yield from _struct(value.struct_value, f"{path}.")  # type: ignore[attr-defined]
    elif kind == "list_value":
        yield from _list(value.list_value, f"{path}.")  # type: ignore[attr-defined]


def _quote(key: object) -> str:
    text = repr(key)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."
