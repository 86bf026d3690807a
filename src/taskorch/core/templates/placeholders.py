"""Placeholders in template steps: finding, filling and resolving ``{{...}}`` references.

``{{name}}`` reads a template parameter and is filled when the task is created
(:func:`substitute_parameters`); ``{{steps.NAME.output.FIELD}}`` reads an earlier step's result
and is filled when the step is about to run (:func:`resolve_step_outputs`, called by the
scheduler in core/engine.py).

A placeholder that is a whole string keeps the value's JSON type (``"{{top_n}}"`` → 5); one
inside a longer string becomes text (numbers and booleans as JSON, objects and arrays as compact
JSON, a missing value as ""). An optional parameter that is not given and has no default removes
the object key it fills, so the step falls back to its own default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from taskorch.domain.errors import InvalidArgument

# {{name}}, {{ name }}, {{steps.summarize.output.generated_text}}
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
STEPS_PREFIX = "steps."


class StepOutputMissing(InvalidArgument):
    """A step refers to an output an earlier step did not produce."""

    def __init__(self, reference: str, detail: str) -> None:
        super().__init__(
            f"{{{{{reference}}}}} cannot be resolved: {detail}",
            field=reference,
            reason="STEP_OUTPUT_MISSING",
        )


def find_placeholders(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, reference) of every placeholder in a JSON value."""
    if isinstance(value, str):
        for match in PLACEHOLDER.finditer(value):
            yield path, match.group(1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from find_placeholders(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_placeholders(item, f"{path}[{index}]")


class _Absent:
    """An optional parameter that was not given: removes the object key it fills."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()

# Given a placeholder's reference: (True, value) to replace it, (False, None) to keep it.
Lookup = Callable[[str], tuple[bool, Any]]


def _substitute(value: Any, lookup: Lookup) -> Any:
    if isinstance(value, str):
        return _substitute_text(value, lookup)
    if isinstance(value, Mapping):
        filled = {key: _substitute(item, lookup) for key, item in value.items()}
        return {key: item for key, item in filled.items() if item is not ABSENT}
    if isinstance(value, list):
        filled_items = [_substitute(item, lookup) for item in value]
        return [None if item is ABSENT else item for item in filled_items]
    return value


def _substitute_text(text: str, lookup: Lookup) -> Any:
    whole = PLACEHOLDER.fullmatch(text)
    if whole is not None:
        found, value = lookup(whole.group(1))
        return value if found else text

    def one(match: re.Match[str]) -> str:
        found, value = lookup(match.group(1))
        return _as_text(value) if found else match.group(0)

    return PLACEHOLDER.sub(one, text)


def _as_text(value: Any) -> str:
    if value is None or value is ABSENT:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def substitute_parameters(value: Any, values: Mapping[str, Any]) -> Any:
    """Fills ``{{parameter}}`` placeholders; ``{{steps...}}`` ones are left for later.

    Args:
        value: a step (any JSON).
        values: checked parameter values (see :func:`check_parameters`); a declared
            parameter missing from it is "not given".
    """

    def lookup(reference: str) -> tuple[bool, Any]:
        if reference.startswith(STEPS_PREFIX):
            return False, None
        return True, values.get(reference, ABSENT)

    return _substitute(value, lookup)


def has_step_outputs(value: Any) -> bool:
    """True when ``value`` has ``{{steps.NAME.output...}}`` placeholders left to resolve."""
    return any(ref.startswith(STEPS_PREFIX) for _path, ref in find_placeholders(value))


def resolve_step_outputs(step_input: Any, results_by_step_name: Mapping[str, Any]) -> Any:
    """Fills ``{{steps.NAME.output.FIELD}}`` placeholders from earlier steps' results.

    ``FIELD`` is a dotted path into the step's result (``output.labels.0`` indexes a list);
    ``{{steps.NAME.output}}`` is the whole result. A placeholder that is the whole string
    keeps the value's JSON type; one inside a longer string becomes text. Other
    placeholders are left as they are.

    Args:
        step_input: the stored input of the step about to run (any JSON).
        results_by_step_name: the results of the task's completed steps, by step name.

    Returns:
        The input with the references filled in (``step_input`` is not changed).

    Raises:
        StepOutputMissing: a reference names no completed step, or a field its result lacks.
    """

    def lookup(reference: str) -> tuple[bool, Any]:
        if not reference.startswith(STEPS_PREFIX):
            return False, None
        parts = reference.split(".")
        if len(parts) < 3 or parts[2] != "output":
            raise StepOutputMissing(reference, "it must read steps.NAME.output.FIELD")
        name, path = parts[1], parts[3:]
        if name not in results_by_step_name:
            done = ", ".join(sorted(results_by_step_name)) or "none"
            raise StepOutputMissing(reference, f"no completed step {name!r} (completed: {done})")
        value = results_by_step_name[name]
        for depth, key in enumerate(path):
            parent, value = value, _child(value, key)
            if value is ABSENT:
                where = ".".join(["output", *path[:depth]])
                has = ""
                if isinstance(parent, Mapping):
                    has = f" (it has: {', '.join(sorted(str(k) for k in parent)) or 'nothing'})"
                raise StepOutputMissing(
                    reference, f"the {where} of step {name!r} has no {key!r}{has}"
                )
        return True, value

    return _substitute(step_input, lookup)


def _child(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, ABSENT)
    if isinstance(value, list) and key.isdigit() and int(key) < len(value):
        return value[int(key)]
    return ABSENT
