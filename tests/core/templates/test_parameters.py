"""Checking a create request's parameters: required, types, enum, defaults."""

from __future__ import annotations

from typing import Any

import pytest

from taskorch.core.templates.definition import parse_template
from taskorch.core.templates.parameters import check_parameters
from tests.core.templates.fakes import BUILTINS, fields


def test_missing_and_mistyped_parameters_are_reported_together() -> None:
    report = check_parameters(BUILTINS["text-analysis"], {"top_n": "five", "colour": "red"})
    assert not report.valid
    assert report.missing == ("text",)
    reasons = {p.name: p.reason for p in report.invalid}
    assert reasons["top_n"] == "must be an integer, not a string"
    assert "is not a parameter of template 'text-analysis'" in reasons["colour"]
    error = report.error("text-analysis")
    assert fields(error) == ["parameters.text", "parameters.top_n", "parameters.colour"]
    assert "parameters.text is required" in error.message


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("string", "x", 1),
        ("integer", 3, True),
        ("integer", 3.0, 3.5),
        ("number", 2.5, "2.5"),
        ("boolean", False, 0),
        ("array", [1], {"a": 1}),
        ("object", {"a": 1}, [1]),
    ],
)
def test_parameter_types_are_checked(kind: str, good: Any, bad: Any) -> None:
    template = parse_template(
        {
            "name": "typed",
            "parameters": [{"name": "p", "type": kind, "required": True}],
            "steps": [{"type": "echo", "value": "{{p}}"}],
        }
    )
    assert check_parameters(template, {"p": good}).valid
    report = check_parameters(template, {"p": bad})
    assert [p.name for p in report.invalid] == ["p"]


def test_defaults_fill_in_and_null_counts_as_not_given() -> None:
    report = check_parameters(BUILTINS["text-analysis"], {"text": "hi", "top_n": None})
    assert report.valid
    assert report.values == {"text": "hi", "top_n": 5}
    integral = check_parameters(BUILTINS["text-analysis"], {"text": "hi", "top_n": 3.0})
    assert integral.values["top_n"] == 3 and isinstance(integral.values["top_n"], int)


def test_enum_restricts_the_values() -> None:
    template = parse_template(
        {
            "name": "colours",
            "parameters": [{"name": "c", "type": "string", "enum": ["red", "blue"]}],
            "steps": [{"type": "echo", "c": "{{c}}"}],
        }
    )
    assert check_parameters(template, {"c": "red"}).valid
    [invalid] = check_parameters(template, {"c": "green"}).invalid
    assert invalid.reason == 'must be one of "red", "blue"'
