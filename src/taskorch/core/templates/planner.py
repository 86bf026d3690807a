"""The template planner: a ``{template, parameters}`` create request -> one subtask per step.

Creating a task with a template checks the parameters (types, required, defaults, enum), fills
``{{parameter}}`` placeholders into the steps and plans one subtask per step, chained: only the
first is ready; each later one becomes ready when the one before it completes, and its
``{{steps.NAME.output.FIELD}}`` placeholders are resolved then (see placeholders.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

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
from taskorch.core.templates.definition import GIT_SCRIPT, STEP_TYPES, Template
from taskorch.core.templates.parameters import (
    InvalidParameterValue,
    ParameterReport,
    check_parameters,
)
from taskorch.core.templates.placeholders import (
    STEPS_PREFIX,
    find_placeholders,
    has_step_outputs,
    substitute_parameters,
)
from taskorch.core.templates.service import TemplateService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import FieldViolation, InvalidArgument, ModelNotFound, TemplateNotFound
from taskorch.domain.values import JSON

TEMPLATE = "template"

# Ollama's generation options under the names our text_generation pipeline uses.
_OLLAMA_OPTIONS = {
    "num_predict": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
}


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
        names = {ref for _p, ref in find_placeholders(value) if not ref.startswith(STEPS_PREFIX)}
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
                names = [
                    ref for _p, ref in find_placeholders(value) if not ref.startswith("steps.")
                ]
                if len(names) == 1:
                    return names[0]
    return "model"
