"""Checking template definitions: every bad field named; step names."""

from __future__ import annotations

import pytest

from taskorch.core.templates.definition import parse_template
from taskorch.domain.errors import (
    InvalidArgument,
)
from tests.core.templates.fakes import fields


def test_invalid_definitions_name_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_template(
            {
                "name": "bad name!",
                "parameters": [
                    {"name": "n", "type": "integer", "default": "x"},
                    {"name": "n", "type": "string"},
                    {"name": "t", "type": "float"},
                ],
                "steps": [
                    {"type": "teleport"},
                    {"name": "a", "type": "text_analysis", "text": "{{nope}}"},
                    {"name": "b", "type": "text_analysis", "text": "{{steps.c.output.x}}"},
                    {"name": "c", "type": "text_analysis", "txt": "{{n}}"},
                ],
            }
        )
    found = fields(caught.value)
    assert found == [
        "template.name",
        "template.parameters[0].default",
        "template.parameters[1].name",
        "template.parameters[2].type",
        "template.steps[0].type",
        "template.steps[1].text",
        "template.steps[2].text",
        "template.steps[3]",
        "template.steps[3].text",
    ]
    message = caught.value.message
    assert "{{nope}} is not a parameter of the template (parameters: n)" in message
    assert "{{steps.c.output.x}} names no earlier step (earlier steps: a)" in message
    assert "has fields a text_analysis step does not take: txt" in message


def test_steps_are_named_step1_step2_unless_named() -> None:
    template = parse_template(
        {"name": "t", "steps": [{"type": "echo"}, {"type": "echo", "name": "last"}]}
    )
    assert [s["name"] for s in template.steps] == ["step1", "last"]
