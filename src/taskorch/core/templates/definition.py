"""A template's definition: its schema, the step types it may use, and checking it.

A template is a named recipe for a task (seed 002)::

    name: summarize-then-analyze
    parameters:
      - {name: text, type: string, required: true}
    steps:
      - {name: summarize, type: text_generation, prompt: "Summarize: {{text}}"}
      - {name: analyze, type: text_analysis, text: "{{steps.summarize.output.generated_text}}"}

Step types and the subtask kinds they become:

    text_analysis                     → text_analysis (word count, top words)
    inference                         → inference {task_type, model_name, input_data, parameters}
    text_generation, ollama_generate  → inference with task type text_generation
    echo                              → echo (diagnostics)
    git_script                        → git_script: run only by a remote worker that opts in
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from taskorch.core.planning import ECHO, INFERENCE, TEXT_ANALYSIS, normalise_type
from taskorch.core.templates.parameters import (
    PARAMETER_TYPES,
    TYPE_PHRASES,
    Parameter,
    canonical_value,
    has_type,
)
from taskorch.core.templates.placeholders import STEPS_PREFIX, find_placeholders
from taskorch.domain.errors import FieldViolation, InvalidArgument
from taskorch.domain.values import JSON

GIT_SCRIPT = "git_script"

MAX_PARAMETERS = 50
MAX_STEPS = 20
MAX_DESCRIPTION = 2000
MAX_DEFINITION_BYTES = 64 * 1024

TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class StepType:
    """What a template step of one ``type`` becomes, and which fields it takes."""

    kind: str
    required: tuple[str, ...] = ()
    # None: any field (the input is passed through to the handler).
    allowed: frozenset[str] | None = None


_GENERATION = StepType(
    INFERENCE,
    allowed=frozenset(
        {"model", "model_name", "prompt", "system", "messages", "parameters", "options"}
    ),
)
STEP_TYPES: Mapping[str, StepType] = {
    "text_analysis": StepType(TEXT_ANALYSIS, ("text",), frozenset({"text", "top_n"})),
    "inference": StepType(
        INFERENCE,
        ("task_type",),
        frozenset({"task_type", "model", "model_name", "input_data", "inputs", "parameters"}),
    ),
    "text_generation": _GENERATION,
    "ollama_generate": _GENERATION,
    "echo": StepType(ECHO),
    GIT_SCRIPT: StepType(GIT_SCRIPT, ("repo_url", "script_path")),
}


@dataclass(frozen=True)
class Template:
    """A checked template definition; ``steps`` carry their ``name`` and ``type``."""

    name: str
    description: str
    parameters: tuple[Parameter, ...]
    steps: tuple[JSON, ...]
    builtin: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def to_json(self) -> JSON:
        """The definition, in the shape :func:`parse_template` reads."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [p.to_json() for p in self.parameters],
            "steps": [dict(s) for s in self.steps],
        }


def parse_template(data: Any, *, builtin: bool = False, where: str = "template") -> Template:
    """Checks a template definition (from YAML or a create request) and normalises it.

    Raises:
        InvalidArgument: naming every bad field (``template.steps[1].type``, ...).
    """
    problems = _Problems(where)
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{where} must be an object", field=where)
    unknown = sorted(set(data) - {"name", "description", "parameters", "steps"})
    if unknown:
        problems.add("", f"has unknown fields: {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not TEMPLATE_NAME.match(name):
        problems.add(
            "name",
            "must be 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit",
        )
        name = str(name)
    description = data.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problems.add("description", f"must be a string of at most {MAX_DESCRIPTION} characters")
        description = ""
    if len(json.dumps(data, default=str)) > MAX_DEFINITION_BYTES:
        problems.add("", f"is larger than {MAX_DEFINITION_BYTES} bytes")
    parameters = _parse_parameters(data.get("parameters"), problems)
    steps = _parse_steps(data.get("steps"), {p.name for p in parameters}, problems)
    problems.raise_if_any()
    return Template(
        name=name,
        description=description,
        parameters=tuple(parameters),
        steps=tuple(steps),
        builtin=builtin,
    )


class _Problems:
    def __init__(self, where: str) -> None:
        self.where = where
        self.found: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        if path and not path.startswith("["):
            path = "." + path
        self.found.append(FieldViolation(f"{self.where}{path}", description))

    def raise_if_any(self) -> None:
        if self.found:
            text = "; ".join(f"{v.field} {v.description}" for v in self.found)
            raise InvalidArgument(f"invalid template: {text}", violations=self.found)


def _parse_parameters(raw: Any, problems: _Problems) -> list[Parameter]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_PARAMETERS:
        problems.add("parameters", f"must be a list of at most {MAX_PARAMETERS} parameters")
        return []
    found: list[Parameter] = []
    for index, item in enumerate(raw):
        at = f"parameters[{index}]"
        if not isinstance(item, Mapping):
            problems.add(at, "must be an object")
            continue
        unknown = sorted(set(item) - {"name", "type", "required", "description", "default", "enum"})
        if unknown:
            problems.add(at, f"has unknown fields: {', '.join(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not PARAMETER_NAME.match(name) or name == "steps":
            problems.add(
                f"{at}.name",
                "must be an identifier (letters, digits, '_'; not 'steps'), at most 64 long",
            )
            continue
        if any(p.name == name for p in found):
            problems.add(f"{at}.name", f"repeats parameter {name!r}")
            continue
        kind = item.get("type", "string")
        if kind not in PARAMETER_TYPES:
            problems.add(f"{at}.type", f"must be one of {', '.join(PARAMETER_TYPES)}")
            continue
        required = item.get("required", False)
        if not isinstance(required, bool):
            problems.add(f"{at}.required", "must be true or false")
            required = False
        description = item.get("description") or ""
        if not isinstance(description, str):
            problems.add(f"{at}.description", "must be a string")
            description = ""
        enum = item.get("enum") or []
        if not isinstance(enum, list):
            problems.add(f"{at}.enum", "must be a list")
            enum = []
        parameter = Parameter(name, kind, required, description, None, ())
        for position, value in enumerate(enum):
            if not has_type(value, kind):
                problems.add(f"{at}.enum[{position}]", f"must be {TYPE_PHRASES[kind]}")
        parameter = replace(parameter, enum=tuple(enum))
        default = item.get("default")
        if default is not None:
            reason = parameter.problem(default)
            if reason is not None:
                problems.add(f"{at}.default", reason)
            parameter = replace(parameter, default=canonical_value(default, kind))
        found.append(parameter)
    return found


def _parse_steps(raw: Any, parameters: set[str], problems: _Problems) -> list[JSON]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STEPS:
        problems.add("steps", f"must be a list of 1 to {MAX_STEPS} steps")
        return []
    steps: list[JSON] = []
    for index, item in enumerate(raw):
        at = f"steps[{index}]"
        if not isinstance(item, Mapping):
            problems.add(at, "must be an object")
            continue
        step_type = item.get("type")
        spec = STEP_TYPES.get(normalise_type(step_type)) if isinstance(step_type, str) else None
        if spec is None or not isinstance(step_type, str):
            problems.add(f"{at}.type", f"must be one of {', '.join(STEP_TYPES)}")
            continue
        step_type = normalise_type(step_type)
        name = item.get("name", f"step{index + 1}")
        if not isinstance(name, str) or not STEP_NAME.match(name):
            problems.add(
                f"{at}.name", "must be an identifier (letters, digits, '_', '-'), at most 64 long"
            )
            continue
        if any(s["name"] == name for s in steps):
            problems.add(f"{at}.name", f"repeats step {name!r}")
            continue
        body = {k: v for k, v in item.items() if k not in ("name", "type")}
        if spec.allowed is not None:
            unknown = sorted(set(body) - spec.allowed)
            if unknown:
                problems.add(
                    at,
                    f"has fields a {step_type} step does not take: {', '.join(unknown)} "
                    f"(it takes {', '.join(sorted(spec.allowed))})",
                )
        for needed in spec.required:
            if needed not in body:
                problems.add(f"{at}.{needed}", f"is required for a {step_type} step")
        if spec is _GENERATION and "prompt" not in body and "messages" not in body:
            problems.add(f"{at}.prompt", f"is required for a {step_type} step (or messages)")
        earlier = {s["name"] for s in steps}
        for path, reference in find_placeholders(body):
            problem = _reference_problem(reference, parameters, earlier)
            if problem:
                problems.add(f"{at}.{path}", problem)
        steps.append({"name": name, "type": step_type, **body})
    return steps


def _reference_problem(reference: str, parameters: set[str], earlier: set[str]) -> str | None:
    if reference.startswith(STEPS_PREFIX):
        parts = reference.split(".")
        if len(parts) < 3 or parts[2] != "output":
            return f"{{{{{reference}}}}} must read steps.NAME.output or steps.NAME.output.FIELD"
        if parts[1] not in earlier:
            known = ", ".join(sorted(earlier)) or "none"
            return f"{{{{{reference}}}}} names no earlier step (earlier steps: {known})"
        return None
    if reference not in parameters:
        known = ", ".join(sorted(parameters)) or "none"
        return f"{{{{{reference}}}}} is not a parameter of the template (parameters: {known})"
    return None
