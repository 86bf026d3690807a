"""Task templates: typed parameters, steps with placeholders, and their planner.

A template is a named recipe for a task (seed 002)::

    name: summarize-then-analyze
    parameters:
      - {name: text, type: string, required: true}
    steps:
      - {name: summarize, type: text_generation, prompt: "Summarize: {{text}}"}
      - {name: analyze, type: text_analysis, text: "{{steps.summarize.output.generated_text}}"}

Creating a task with ``{template, parameters}`` checks the parameters (types, required,
defaults, enum), fills ``{{parameter}}`` placeholders into the steps and plans one subtask per
step, chained: only the first is ready; each later one becomes ready when the one before it
completes, and its ``{{steps.NAME.output.FIELD}}`` placeholders are resolved then, from the
earlier steps' results (:func:`resolve_step_outputs`, called by the scheduler).

Placeholders: one that is a whole string keeps the value's JSON type (``"{{top_n}}"`` → 5);
one inside a longer string becomes text (numbers and booleans as JSON, objects and arrays
as compact JSON, a missing value as ""). An optional parameter that is not given and has no
default removes the object key it fills, so the step falls back to its own default.

Step types and the subtask kinds they become:

    text_analysis                     → text_analysis (word count, top words)
    inference                         → inference {task_type, model_name, input_data, parameters}
    text_generation, ollama_generate  → inference with task type text_generation
    echo                              → echo (diagnostics)
    git_script                        → git_script: run only by a remote worker that opts in

Built-in templates ship as YAML files in ``taskorch/templates/`` and are read-only; user
templates are stored per tenant.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml

from taskorch.core.planning import (
    ECHO,
    INFERENCE,
    TEXT_ANALYSIS,
    EchoPlanner,
    InferenceCatalog,
    InferencePlanner,
    Plan,
    Step,
    TaskSpec,
    TextAnalysisPlanner,
    normalise_type,
)
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    AlreadyExists,
    ErrorStatus,
    FieldViolation,
    InvalidArgument,
    ModelNotFound,
    TaskorchError,
    TemplateNotFound,
)
from taskorch.domain.errors import AlreadyStored as IntegrityError  # store/ translates it
from taskorch.domain.values import JSON
from taskorch.store import templates as template_store
from taskorch.store.database import Database, Transaction
from taskorch.store.schema import utcnow

TEMPLATE = "template"
GIT_SCRIPT = "git_script"

PARAMETER_TYPES = ("string", "integer", "number", "boolean", "array", "object")
MAX_PARAMETERS = 50
MAX_STEPS = 20
MAX_DESCRIPTION = 2000
MAX_DEFINITION_BYTES = 64 * 1024

TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
# {{name}}, {{ name }}, {{steps.summarize.output.generated_text}}
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
STEPS_PREFIX = "steps."


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

# Ollama's generation options under the names our text_generation pipeline uses.
_OLLAMA_OPTIONS = {
    "num_predict": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
}


class TemplateReadOnly(TaskorchError):
    """Built-in templates ship with the server and cannot be changed or deleted."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Template '{name}' is built in and read-only; create a template with another "
            "name instead",
            reason="TEMPLATE_READ_ONLY",
            status=ErrorStatus.PERMISSION_DENIED,
            metadata={"id": name},
        )


class StepOutputMissing(InvalidArgument):
    """A step refers to an output an earlier step did not produce."""

    def __init__(self, reference: str, detail: str) -> None:
        super().__init__(
            f"{{{{{reference}}}}} cannot be resolved: {detail}",
            field=reference,
            reason="STEP_OUTPUT_MISSING",
        )


# -- the definition ----------------------------------------------------------------------------


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
        if not _has_type(value, self.type):
            return f"must be {_ARTICLES[self.type]}, not {_json_type(value)}"
        if self.enum and not any(_same(value, allowed) for allowed in self.enum):
            return "must be one of " + ", ".join(json.dumps(v) for v in self.enum)
        return None


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
            if not _has_type(value, kind):
                problems.add(f"{at}.enum[{position}]", f"must be {_ARTICLES[kind]}")
        parameter = replace(parameter, enum=tuple(enum))
        default = item.get("default")
        if default is not None:
            reason = parameter.problem(default)
            if reason is not None:
                problems.add(f"{at}.default", reason)
            parameter = replace(parameter, default=_canonical(default, kind))
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
        for path, reference in _placeholders(body):
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


def _placeholders(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, reference) of every placeholder in a JSON value."""
    if isinstance(value, str):
        for match in PLACEHOLDER.finditer(value):
            yield path, match.group(1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _placeholders(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _placeholders(item, f"{path}[{index}]")


# -- parameters --------------------------------------------------------------------------------


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
        values[parameter.name] = _canonical(value, parameter.type)
    declared = {p.name for p in template.parameters}
    for name in sorted(set(given) - declared):
        known = ", ".join(sorted(declared)) or "none"
        reason = f"is not a parameter of template '{template.name}' (parameters: {known})"
        invalid.append(InvalidParameterValue(name, reason))
    return ParameterReport(tuple(missing), tuple(invalid), values)


_ARTICLES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "an array",
    "object": "an object",
}


def _has_type(value: Any, kind: str) -> bool:
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


def _canonical(value: Any, kind: str) -> Any:
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


# -- placeholders ------------------------------------------------------------------------------


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
    return any(ref.startswith(STEPS_PREFIX) for _path, ref in _placeholders(value))


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


# -- built-in templates ------------------------------------------------------------------------


def builtin_directory() -> Traversable:
    return resources.files("taskorch") / "templates"


def load_builtin_templates(directory: Traversable | None = None) -> dict[str, Template]:
    """Reads and checks every ``*.yaml`` template shipped with the package.

    Raises:
        ValueError: a file is not a valid template, or two share a name (a packaging bug).
    """
    found: dict[str, Template] = {}
    folder = directory or builtin_directory()
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        try:
            template = parse_template(
                yaml.safe_load(entry.read_text(encoding="utf-8")), builtin=True, where=entry.name
            )
        except (InvalidArgument, yaml.YAMLError) as exc:
            raise ValueError(f"built-in template {entry.name} is invalid: {exc}") from exc
        if template.name in found:
            raise ValueError(f"two built-in templates are named {template.name!r}")
        found[template.name] = template
    return found


# -- the service -------------------------------------------------------------------------------


class TemplateService:
    """Built-in templates and the user templates of each tenant."""

    def __init__(
        self,
        db: Database,
        builtins: Mapping[str, Template] | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.builtins = dict(load_builtin_templates() if builtins is None else builtins)
        self.clock = clock

    def builtin(self, name: str) -> Template | None:
        return self.builtins.get(name)

    async def list(self, caller: Caller) -> list[Template]:
        """Built-in templates and the caller's, by name."""
        records = await self.db.read(
            lambda conn: template_store.list_templates(conn, caller.tenant_id)
        )
        found = [*self.builtins.values(), *(_from_record(r) for r in records)]
        return sorted(found, key=lambda t: t.name)

    async def get(self, caller: Caller, name: str) -> Template:
        """Raises TemplateNotFound, also for another tenant's template."""
        name = _name(name)
        builtin = self.builtins.get(name)
        if builtin is not None:
            return builtin
        record = await self.db.read(
            lambda conn: template_store.get_template(conn, caller.tenant_id, name)
        )
        if record is None:
            known = ", ".join(t.name for t in await self.list(caller))
            raise TemplateNotFound(name, message=f"Template '{name}' not found; templates: {known}")
        return _from_record(record)

    async def create(self, caller: Caller, definition: Mapping[str, Any]) -> Template:
        """Stores a user template in the caller's tenant.

        Raises:
            InvalidArgument: the definition is invalid (naming the fields).
            AlreadyExists: a built-in template or one of the tenant's has that name.
        """
        template = parse_template(definition)
        self._refuse_builtin_name(template.name)
        now = self.clock()
        record = template_store.TemplateRecord(
            template_id=str(uuid.uuid4()),
            tenant_id=caller.tenant_id,
            name=template.name,
            description=template.description,
            parameters=template.to_json()["parameters"],
            steps=template.to_json()["steps"],
            created_at=now,
            updated_at=now,
        )

        def insert(tx: Transaction) -> None:
            if template_store.get_template(tx.conn, caller.tenant_id, template.name) is not None:
                raise _taken(template.name)
            template_store.insert_template(tx.conn, record)

        try:
            await self.db.write(insert)
        except IntegrityError:  # created by another replica meanwhile
            raise _taken(template.name) from None
        return _from_record(record)

    async def update(self, caller: Caller, name: str, definition: Mapping[str, Any]) -> Template:
        """Replaces a user template's description, parameters and steps.

        Raises:
            TemplateReadOnly: a built-in template.
            TemplateNotFound: the tenant has no template of that name.
            InvalidArgument: the definition is invalid, or names another template.
        """
        name = _name(name)
        if name in self.builtins:
            raise TemplateReadOnly(name)
        given = definition.get("name")
        if given and given != name:
            raise InvalidArgument(
                f"template.name {given!r} differs from the template being updated ({name!r}); "
                "templates cannot be renamed",
                field="template.name",
            )
        template = parse_template({**definition, "name": name})
        data = template.to_json()

        def change(tx: Transaction) -> template_store.TemplateRecord:
            record = template_store.update_template(
                tx.conn,
                caller.tenant_id,
                name,
                description=template.description,
                parameters=data["parameters"],
                steps=data["steps"],
                updated_at=self.clock(),
            )
            if record is None:
                raise TemplateNotFound(name)
            return record

        return _from_record(await self.db.write(change))

    async def delete(self, caller: Caller, name: str) -> None:
        """Raises TemplateReadOnly (a built-in template) or TemplateNotFound."""
        name = _name(name)
        if name in self.builtins:
            raise TemplateReadOnly(name)

        def remove(tx: Transaction) -> None:
            if not template_store.delete_template(tx.conn, caller.tenant_id, name):
                raise TemplateNotFound(name)

        await self.db.write(remove)

    def _refuse_builtin_name(self, name: str) -> None:
        if name in self.builtins:
            raise AlreadyExists(
                f"Template '{name}' is a built-in template; choose another name",
                reason="TEMPLATE_ALREADY_EXISTS",
            )


def _name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidArgument("template name is required", field="name")
    return name


def _taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"Template '{name}' already exists; update it or choose another name",
        reason="TEMPLATE_ALREADY_EXISTS",
    )


def _from_record(record: template_store.TemplateRecord) -> Template:
    # Checked when written; not checked again, so that a stored template a later release
    # would refuse can still be listed, read, fixed or deleted.
    return Template(
        name=record.name,
        description=record.description,
        parameters=tuple(
            Parameter(
                name=str(p.get("name", "")),
                type=str(p.get("type", "string")),
                required=bool(p.get("required", False)),
                description=str(p.get("description") or ""),
                default=p.get("default"),
                enum=tuple(p.get("enum") or ()),
            )
            for p in record.parameters
            if isinstance(p, Mapping)
        ),
        steps=tuple(dict(s) for s in record.steps if isinstance(s, Mapping)),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


# -- the planner -------------------------------------------------------------------------------


class TemplatePlanner:
    """Plans ``{template, parameters}`` create requests (seed 002) into chained subtasks.

    Inference steps are checked by the inference engine before anything is queued, exactly
    like direct inference tasks (an unknown model is MODEL_NOT_FOUND listing the models).

    Steps of a kind no connected worker runs (``git_script`` needs a remote worker that opts
    in) wait; the task says what it waits for (TaskService, through the worker directory).

    Args:
        templates: where templates are looked up (built-in, then the caller's tenant).
        engine: checks inference steps.
    """

    def __init__(self, templates: TemplateService, engine: InferenceCatalog) -> None:
        self.templates = templates
        self.engine = engine

    def task_types(self) -> Sequence[str]:
        return (TEMPLATE,)

    def canonical(self, task_type: str) -> str | None:
        return TEMPLATE if normalise_type(task_type) == TEMPLATE else None

    async def prepare(self, caller: Caller, spec: TaskSpec) -> TaskSpec:
        """Looks the template up for the caller (built-in or the tenant's own)."""
        if not spec.template.strip() or spec.template_definition is not None:
            return spec
        if spec.text is not None or spec.task_type:
            return spec  # not a templated request: Catalog.plan says what is wrong
        return replace(spec, template_definition=await self.templates.get(caller, spec.template))

    def plan(self, spec: TaskSpec, task_type: str) -> Plan:
        """Checks the parameters and every step, and plans one subtask per step.

        Raises:
            TemplateNotFound, InvalidArgument (``parameters.NAME``), ModelNotFound, ...
        """
        name = spec.template.strip()
        if not name:
            raise InvalidArgument("template is required for a templated task", field="template")
        for unused in ("input_data", "model_name"):
            if getattr(spec, unused):
                raise InvalidArgument(
                    f"{unused} is not used with a template; pass the template's parameters "
                    "in parameters",
                    field=unused,
                )
        template = spec.template_definition or self.templates.builtin(name)
        if not isinstance(template, Template):
            raise TemplateNotFound(name)
        report = check_parameters(template, spec.parameters)
        if not report.valid:
            raise report.error(template.name)
        steps = tuple(
            self._step(template, index, step, report.values)
            for index, step in enumerate(template.steps)
        )
        model = next((s.model_name for s in steps if s.model_name), "")
        return Plan(
            task_type=_task_type(steps) if len(steps) == 1 else TEMPLATE,
            steps=steps,
            model_name=model,
        )

    def validate(self, template: Template, given: Mapping[str, Any] | None) -> ParameterReport:
        """What creating a task would say about these parameters, without creating it.

        Beyond types and required parameters, the steps are checked too (an unknown model
        makes the parameter that names it invalid).
        """
        report = check_parameters(template, given)
        if not report.valid:
            return report
        try:
            for index, step in enumerate(template.steps):
                self._step(template, index, step, report.values)
        except InvalidArgument as exc:
            invalid = [
                InvalidParameterValue(v.field.removeprefix("parameters."), v.description)
                for v in exc.violations
            ] or [InvalidParameterValue("", exc.message)]
            return replace(report, invalid=tuple(invalid))
        except ModelNotFound as exc:
            source = _model_source(template)
            return replace(report, invalid=(InvalidParameterValue(source, exc.message),))
        return report

    # -- steps ---------------------------------------------------------------------------------

    def _step(self, template: Template, index: int, raw: JSON, values: Mapping[str, Any]) -> Step:
        step_type = str(raw.get("type", ""))
        name = str(raw.get("name", f"step{index + 1}"))
        if step_type not in STEP_TYPES:  # a stored template this release no longer runs
            raise InvalidArgument(
                f"template '{template.name}', step '{name}': type {step_type!r} is not one of "
                f"{', '.join(STEP_TYPES)}; update the template",
                field=f"template.steps[{index}].type",
            )
        raw = {**raw, "name": name, "type": step_type}
        fields = {k: v for k, v in raw.items() if k not in ("name", "type")}
        body = substitute_parameters(fields, values)
        try:
            step = self._build(step_type, body)
        except InvalidArgument as exc:
            raise _blame(exc, template, index, raw) from None
        return replace(step, name=name)

    def _build(self, step_type: str, body: JSON) -> Step:
        kind = STEP_TYPES[step_type].kind
        if kind == TEXT_ANALYSIS:
            return self._text_analysis(body)
        if kind == INFERENCE:
            return self._inference(step_type, body)
        if kind == ECHO:
            return EchoPlanner().plan(TaskSpec(input_data=body), ECHO).steps[0]
        return _git_script(body)

    def _text_analysis(self, body: JSON) -> Step:
        text = body.get("text")
        top_n = body.get("top_n", 5)
        if not isinstance(text, str):
            raise InvalidArgument("text must be a string", field="text")
        if has_step_outputs(text):  # checked when it runs, once the earlier output is known
            if not isinstance(top_n, int) or isinstance(top_n, bool) or not 1 <= top_n <= 100:
                raise InvalidArgument("top_n must be between 1 and 100", field="parameters.top_n")
            return Step(kind=TEXT_ANALYSIS, input={"text": text, "top_n": top_n})
        spec = TaskSpec(text=text, parameters={"top_n": top_n})
        return TextAnalysisPlanner().plan(spec, TEXT_ANALYSIS).steps[0]

    def _inference(self, step_type: str, body: JSON) -> Step:
        model = body.get("model", body.get("model_name", ""))
        if not isinstance(model, str):
            raise InvalidArgument("model must be a string", field="model_name")
        parameters = body.get("parameters", {})
        if not isinstance(parameters, Mapping):
            raise InvalidArgument("parameters must be an object", field="parameters")
        parameters = dict(parameters)
        if step_type == "inference":
            task_type = body.get("task_type")
            if not isinstance(task_type, str) or not task_type.strip():
                raise InvalidArgument("task_type must be a non-empty string", field="task_type")
            input_data = body.get("input_data", {})
            if not isinstance(input_data, Mapping):
                raise InvalidArgument("input_data must be an object", field="input_data")
            input_data = dict(input_data)
            if "inputs" in body:
                input_data["inputs"] = body["inputs"]
        else:
            task_type = "text_generation"
            input_data = _generation_input(body)
            options = body.get("options", {})
            if not isinstance(options, Mapping):
                raise InvalidArgument("options must be an object", field="options")
            for option, value in options.items():
                parameters.setdefault(_OLLAMA_OPTIONS.get(option, option), value)
        spec = TaskSpec(
            task_type=task_type, model_name=model, input_data=input_data, parameters=parameters
        )
        try:
            return InferencePlanner(self.engine).plan(spec, task_type).steps[0]
        except InvalidArgument as exc:
            # An input still waiting for an earlier step's output is checked when it runs
            # (the inference handler checks every request again); the model was found.
            if not has_step_outputs(input_data) or not _about_input(exc):
                raise
        canonical = self.engine.canonical_task_type(task_type)
        return Step(
            kind=INFERENCE,
            input={
                "task_type": str(canonical),
                "model_name": model,
                "input_data": input_data,
                "parameters": parameters,
            },
            model_name=model,
        )


def _generation_input(body: JSON) -> JSON:
    """A generation step's prompt (and optional system prompt) as pipeline input."""
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise InvalidArgument("system must be a string", field="input_data.messages")
    if "messages" in body:
        messages = body["messages"]
        if system and isinstance(messages, list):
            messages = [{"role": "system", "content": system}, *messages]
        return {"messages": messages}
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidArgument("prompt must be a string", field="input_data.prompt")
    if system:
        return {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ]
        }
    return {"prompt": prompt}


def _git_script(body: JSON) -> Step:
    for key in ("repo_url", "script_path"):
        value = body.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidArgument(f"{key} must be a non-empty string", field=key)
    output_path = body.get("output_path")
    if output_path is not None and not isinstance(output_path, str):
        raise InvalidArgument("output_path must be a string", field="output_path")
    return Step(kind=GIT_SCRIPT, input=body)


def _task_type(steps: Sequence[Step]) -> str:
    step = steps[0]
    if step.kind == INFERENCE and step.input:
        return str(step.input.get("task_type", INFERENCE))
    return step.kind


def _about_input(error: InvalidArgument) -> bool:
    return all(v.field.startswith("input_data") for v in error.violations)


def _blame(error: InvalidArgument, template: Template, index: int, raw: JSON) -> InvalidArgument:
    """The same error, naming the template parameter (or the step field) that caused it."""
    step = str(raw["name"])
    fields = [_source_field(raw, v.field, index) for v in error.violations]
    violations = [
        FieldViolation(f, v.description) for f, v in zip(fields, error.violations, strict=True)
    ]
    message = f"template '{template.name}', step '{step}': {error.message}"
    if not violations:
        return InvalidArgument(message, reason=error.reason)
    first, *rest = violations
    found = InvalidArgument(message, field=first.field, violations=rest, reason=error.reason)
    return found


def _source_field(raw: JSON, error_field: str, index: int) -> str:
    """``parameters.X`` when the step field an error names is filled from parameter X."""
    path = _step_path(raw, error_field.split(".") if error_field else [])
    value: Any = raw
    walked: list[str] = []
    for key in path:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
            walked.append(key)
        else:
            break
        if isinstance(value, str):
            break
    if isinstance(value, str):
        names = {ref for _p, ref in _placeholders(value) if not ref.startswith(STEPS_PREFIX)}
        if len(names) == 1:
            return f"parameters.{names.pop()}"
    return ".".join([f"template.steps[{index}]", *walked]) if walked else f"template.steps[{index}]"


def _step_path(raw: JSON, error_path: list[str]) -> list[str]:
    """The path in a template step of the field an inference or analysis error names."""
    if not error_path:
        return []
    head, rest = error_path[0], error_path[1:]
    step_type = raw["type"]
    if head == "model_name":
        return ["model" if "model" in raw else "model_name"]
    if head == "input_data":
        if step_type == "echo":
            return rest
        if step_type in ("text_generation", "ollama_generate"):
            return ["messages" if "messages" in raw else "prompt"]
        if rest[:1] == ["inputs"] and "inputs" in raw:
            return ["inputs", *rest[1:]]
        return ["input_data", *rest]
    if head == "parameters" and step_type == "text_analysis":
        return rest
    return [head, *rest]


def _model_source(template: Template) -> str:
    """The parameter that names the model of a template's inference step, if one does."""
    for step in template.steps:
        for key in ("model", "model_name"):
            value = step.get(key)
            if isinstance(value, str):
                names = [ref for _p, ref in _placeholders(value) if not ref.startswith("steps.")]
                if len(names) == 1:
                    return names[0]
    return "model"
