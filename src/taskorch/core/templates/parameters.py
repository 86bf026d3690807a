"""Typed template parameters: their declaration, and checking a create request's values.

Types are JSON's (string, integer, number, boolean, array, object); a parameter may be
required, have a default and an enum. JSON numbers arrive as floats through protobuf Structs,
so an integer parameter accepts 5.0 and stores 5.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskorch.domain.errors import FieldViolation, InvalidArgument
from taskorch.domain.values import JSON

if TYPE_CHECKING:
    from taskorch.core.templates.definition import Template

PARAMETER_TYPES = ("string", "integer", "number", "boolean", "array", "object")


@dataclass(frozen=True)
class Parameter:
    """One typed parameter of a template."""

    name: str
    type: str
    required: bool = False
    description: str = ""
    # None means no default (JSON null is "not given").
    default: Any = None
    enum: tuple[Any, ...] = ()

    def to_json(self) -> JSON:
        data: JSON = {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "description": self.description,
        }
        if self.default is not None:
            data["default"] = self.default
        if self.enum:
            data["enum"] = list(self.enum)
        return data

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable for this parameter, or None."""
        if not has_type(value, self.type):
            return f"must be {TYPE_PHRASES[self.type]}, not {_json_type(value)}"
        if self.enum and not any(_same(value, allowed) for allowed in self.enum):
            return "must be one of " + ", ".join(json.dumps(v) for v in self.enum)
        return None


@dataclass(frozen=True)
class InvalidParameterValue:
    name: str
    reason: str


@dataclass(frozen=True)
class ParameterReport:
    """What checking parameters against a template found."""

    missing: tuple[str, ...] = ()
    invalid: tuple[InvalidParameterValue, ...] = ()
    # The given values with defaults applied; optional parameters without a value are absent.
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.missing and not self.invalid

    def error(self, template: str) -> InvalidArgument:
        violations = [FieldViolation(f"parameters.{n}", "is required") for n in self.missing]
        violations += [FieldViolation(f"parameters.{p.name}", p.reason) for p in self.invalid]
        text = "; ".join(f"{v.field} {v.description}" for v in violations)
        return InvalidArgument(
            f"invalid parameters for template '{template}': {text}", violations=violations
        )


def check_parameters(template: Template, given: Mapping[str, Any] | None) -> ParameterReport:
    """Checks a create request's parameters: required, types, enum; applies defaults.

    A parameter given as null counts as not given. Parameters the template does not declare
    are invalid (a typo would otherwise be silently ignored).
    """
    given = given or {}
    missing: list[str] = []
    invalid: list[InvalidParameterValue] = []
    values: dict[str, Any] = {}
    for parameter in template.parameters:
        value = given.get(parameter.name)
        if value is None:
            if parameter.default is not None:
                values[parameter.name] = parameter.default
            elif parameter.required:
                missing.append(parameter.name)
            continue
        reason = parameter.problem(value)
        if reason is not None:
            invalid.append(InvalidParameterValue(parameter.name, reason))
            continue
        values[parameter.name] = canonical_value(value, parameter.type)
    declared = {p.name for p in template.parameters}
    for name in sorted(set(given) - declared):
        known = ", ".join(sorted(declared)) or "none"
        reason = f"is not a parameter of template '{template.name}' (parameters: {known})"
        invalid.append(InvalidParameterValue(name, reason))
    return ParameterReport(tuple(missing), tuple(invalid), values)


# What a value of each parameter type is called in an error ("must be an integer").
TYPE_PHRASES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "an array",
    "object": "an object",
}


def has_type(value: Any, kind: str) -> bool:
    """Whether a JSON value is of a parameter type (booleans are not numbers; 5.0 is an
    integer, as protobuf Structs send every number as a float)."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, Mapping)
    return False


def canonical_value(value: Any, kind: str) -> Any:
    """JSON numbers arrive as floats through protobuf Structs: integers become ints."""
    if kind == "integer" and isinstance(value, float):
        return int(value)
    return value


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return "null"
