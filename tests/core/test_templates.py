"""Templates without a server: definitions, parameter checks, placeholders, planning."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from taskorch.core.planning import INFERENCE, TEXT_ANALYSIS, TaskSpec
from taskorch.core.templates import (
    ABSENT,
    GIT_SCRIPT,
    StepOutputMissing,
    Template,
    TemplatePlanner,
    TemplateService,
    check_parameters,
    has_step_outputs,
    load_builtin_templates,
    parse_template,
    resolve_step_outputs,
    substitute_parameters,
)
from taskorch.domain.errors import (
    InvalidArgument,
    ModelNotFound,
    TemplateNotFound,
    UnsupportedTaskType,
)
from taskorch.store.database import Database

SMOLLM = "smollm2-135m-instruct"
BUILTINS = load_builtin_templates()


@dataclass(frozen=True)
class Checked:
    task_type: str
    model_name: str
    input_data: Mapping[str, Any]
    parameters: Mapping[str, Any]


class FakeEngine:
    """The InferenceCatalog planning needs: one text generation model, one encoder."""

    models = {SMOLLM: "text_generation", "minilm": "feature_extraction"}

    def supported_task_types(self) -> list[str]:
        return ["feature_extraction", "text_generation"]

    def capacity_of(self, model_name: str) -> int | None:
        return None

    def canonical_task_type(self, task_type: str) -> str:
        canonical = task_type.strip().lower().replace("-", "_")
        if canonical not in self.supported_task_types():
            raise UnsupportedTaskType(task_type, self.supported_task_types())
        return canonical

    def check(
        self,
        task_type: str,
        model_name: str,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
    ) -> Checked:
        canonical = self.canonical_task_type(task_type)
        name = model_name or next(m for m, t in self.models.items() if t == canonical)
        if name not in self.models:
            raise ModelNotFound(name, available=self.models)
        if "prompt" in input_data and not input_data["prompt"]:
            raise InvalidArgument("prompt must not be empty", field="input_data.prompt")
        tokens = parameters.get("max_new_tokens")
        if tokens is not None and not (isinstance(tokens, int) and tokens > 0):
            raise InvalidArgument(
                "max_new_tokens must be a positive integer", field="parameters.max_new_tokens"
            )
        return Checked(canonical, name, input_data, parameters)


def planner(templates: TemplateService | None = None) -> TemplatePlanner:
    service = templates or TemplateService(Database("sqlite:///unused.db"), BUILTINS)
    return TemplatePlanner(service, FakeEngine())


def plan(template: str, parameters: dict[str, Any] | None = None) -> Any:
    spec = TaskSpec(template=template, parameters=parameters)
    return planner().plan(spec, "template")


def fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


# -- built-in templates ------------------------------------------------------------------------


def test_builtin_templates_ship_with_the_package() -> None:
    assert set(BUILTINS) >= {
        "text-analysis",
        "model-inference",
        "ollama-inference",
        "summarize-then-analyze",
        "git-script-execution",
    }
    assert all(t.builtin for t in BUILTINS.values())


def test_seed_002_templates_take_the_seed_parameters() -> None:
    ollama = BUILTINS["ollama-inference"]
    assert [p.name for p in ollama.parameters][:3] == ["model", "prompt", "system_prompt"]
    assert ollama.parameter("prompt").required  # type: ignore[union-attr]
    assert ollama.parameter("model").default == SMOLLM  # type: ignore[union-attr]
    assert ollama.steps[0]["type"] == "ollama_generate"
    assert ollama.steps[0]["model"] == "{{model}}"
    git = BUILTINS["git-script-execution"]
    assert [(p.name, p.type, p.required) for p in git.parameters] == [
        ("repo_url", "string", True),
        ("script_path", "string", True),
        ("output_path", "string", True),
    ]
    assert git.description == "Clone repository, run script, store results"


def test_a_definition_survives_its_json_round_trip() -> None:
    for template in BUILTINS.values():
        again = parse_template(template.to_json(), builtin=True)
        assert again == template


# -- parameters --------------------------------------------------------------------------------


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


# -- definitions -------------------------------------------------------------------------------


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


# -- placeholders ------------------------------------------------------------------------------


def test_whole_string_placeholders_keep_their_type_embedded_ones_become_text() -> None:
    step = {
        "count": "{{n}}",
        "flags": ["{{flag}}", "{{obj}}"],
        "text": "n={{n}} flag={{ flag }} obj={{obj}} name={{name}}",
        "later": "{{steps.first.output.x}}",
    }
    values = {"n": 3, "flag": True, "obj": {"a": [1, 2]}, "name": "Zoë"}
    filled = substitute_parameters(step, values)
    assert filled == {
        "count": 3,
        "flags": [True, {"a": [1, 2]}],
        "text": 'n=3 flag=true obj={"a":[1,2]} name=Zoë',
        "later": "{{steps.first.output.x}}",
    }
    assert has_step_outputs(filled) and not has_step_outputs(filled["text"])


def test_an_optional_parameter_not_given_removes_the_key_it_fills() -> None:
    filled = substitute_parameters(
        {"system": "{{system_prompt}}", "note": "[{{system_prompt}}]", "list": ["{{x}}"]}, {}
    )
    assert filled == {"note": "[]", "list": [None]}
    assert ABSENT not in filled.values()


def test_step_outputs_resolve_by_dotted_path() -> None:
    step_input = {
        "text": "{{steps.summarize.output.generated_text}}",
        "first_label": "{{steps.classify.output.labels.0}}",
        "all": "{{steps.classify.output}}",
        "line": "Summary: {{steps.summarize.output.generated_text}} ({{steps.classify.output.n}})",
        "param": "{{untouched}}",
    }
    original = copy.deepcopy(step_input)
    results = {
        "summarize": {"generated_text": "Short.", "tokens_generated": 2},
        "classify": {"labels": ["pos", "neg"], "n": 2},
    }
    resolved = resolve_step_outputs(step_input, results)
    assert resolved == {
        "text": "Short.",
        "first_label": "pos",
        "all": {"labels": ["pos", "neg"], "n": 2},
        "line": "Summary: Short. (2)",
        "param": "{{untouched}}",
    }
    assert step_input == original


def test_a_missing_step_output_is_a_clear_error() -> None:
    results = {"summarize": {"generated_text": "Short.", "tokens_generated": 2}}
    with pytest.raises(StepOutputMissing) as caught:
        resolve_step_outputs({"text": "{{steps.summarize.output.summary}}"}, results)
    assert caught.value.reason == "STEP_OUTPUT_MISSING"
    assert str(caught.value) == (
        "{{steps.summarize.output.summary}} cannot be resolved: the output of step "
        "'summarize' has no 'summary' (it has: generated_text, tokens_generated)"
    )
    with pytest.raises(StepOutputMissing, match="no completed step 'other'"):
        resolve_step_outputs("{{steps.other.output.x}}", results)


# -- planning ----------------------------------------------------------------------------------


def test_ollama_inference_plans_a_text_generation_step_on_the_model() -> None:
    planned = plan("ollama-inference", {"prompt": "Hi", "max_tokens": 8})
    assert planned.task_type == "text_generation"
    assert planned.model_name == SMOLLM
    [step] = planned.steps
    assert (step.kind, step.name, step.model_name) == (INFERENCE, "generate", SMOLLM)
    assert step.input == {
        "task_type": "text_generation",
        "model_name": SMOLLM,
        "input_data": {"prompt": "Hi"},
        "parameters": {"max_new_tokens": 8},
    }
    with_system = plan("ollama-inference", {"prompt": "Hi", "system_prompt": "Be brief."})
    assert with_system.steps[0].input["input_data"] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ]
    }
    assert with_system.steps[0].input["parameters"] == {}


def test_an_unknown_model_is_model_not_found_before_anything_is_queued() -> None:
    with pytest.raises(ModelNotFound) as caught:
        plan("ollama-inference", {"model": "llama3.1:8b", "prompt": "Hi"})
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert "available models: minilm, smollm2-135m-instruct" in caught.value.message


def test_planning_errors_name_the_parameter_that_caused_them() -> None:
    with pytest.raises(InvalidArgument) as caught:
        plan("ollama-inference", {"prompt": "", "max_tokens": 0})
    assert fields(caught.value)[0] in ("parameters.prompt", "parameters.max_tokens")
    assert "template 'ollama-inference', step 'generate'" in caught.value.message
    with pytest.raises(InvalidArgument) as too_long:
        plan("text-analysis", {"text": "x" * 4001})
    assert too_long.value.reason == "TEXT_TOO_LONG"
    assert fields(too_long.value) == ["parameters.text"]
    with pytest.raises(InvalidArgument) as bad_type:
        plan("model-inference", {"task_type": "teleportation", "inputs": "x"})
    assert bad_type.value.reason == "UNSUPPORTED_TASK_TYPE"
    assert fields(bad_type.value) == ["parameters.task_type"]


def test_two_steps_become_chained_steps_the_second_waiting_for_the_first() -> None:
    planned = plan("summarize-then-analyze", {"text": "A long story."})
    assert planned.task_type == "template"
    first, second = planned.steps
    assert (first.kind, first.name) == (INFERENCE, "summarize")
    assert first.input["parameters"] == {"max_new_tokens": 64}
    assert first.input["input_data"]["prompt"].endswith("\n\nA long story.")
    assert (second.kind, second.name) == (TEXT_ANALYSIS, "analyze")
    assert second.input == {"text": "{{steps.summarize.output.generated_text}}", "top_n": 5}


def test_git_script_steps_become_git_script_subtasks() -> None:
    parameters = {"repo_url": "https://example.invalid/r.git", "script_path": "run.sh"}
    with pytest.raises(InvalidArgument) as caught:
        plan("git-script-execution", parameters)
    assert fields(caught.value) == ["parameters.output_path"]
    planned = plan("git-script-execution", {**parameters, "output_path": "out/result.json"})
    [step] = planned.steps
    assert planned.task_type == GIT_SCRIPT == step.kind
    assert step.input == {**parameters, "output_path": "out/result.json"}


def test_unknown_templates_and_stray_fields_are_refused() -> None:
    with pytest.raises(TemplateNotFound):
        plan("no-such-template", {})
    with pytest.raises(InvalidArgument, match="input_data is not used with a template"):
        planner().plan(
            TaskSpec(template="text-analysis", input_data={"text": "x"}, parameters={}),
            "template",
        )


def test_validate_reports_an_unknown_model_on_the_parameter_naming_it() -> None:
    report = planner().validate(
        BUILTINS["ollama-inference"], {"model": "llama3.1:8b", "prompt": "Hi"}
    )
    assert not report.valid and report.missing == ()
    [invalid] = report.invalid
    assert invalid.name == "model"
    assert invalid.reason.startswith("Model 'llama3.1:8b' not found; available models:")
    fine = planner().validate(BUILTINS["ollama-inference"], {"model": SMOLLM, "prompt": "Hi"})
    assert fine.valid


def test_a_templates_own_definition_is_used_when_it_was_looked_up() -> None:
    mine = parse_template(
        {
            "name": "mine",
            "parameters": [{"name": "m", "type": "string", "required": True}],
            "steps": [{"type": "echo", "message": "{{m}}"}],
        }
    )
    assert isinstance(mine, Template)
    spec = TaskSpec(template="mine", parameters={"m": "hi"}, template_definition=mine)
    [step] = planner().plan(spec, "template").steps
    assert (step.kind, step.input) == ("echo", {"message": "hi"})


def test_a_stored_template_with_a_step_type_no_longer_supported_is_refused_clearly() -> None:
    stale = Template(
        name="old",
        description="",
        parameters=(),
        steps=({"name": "beam", "type": "teleport"},),
    )
    spec = TaskSpec(template="old", parameters={}, template_definition=stale)
    with pytest.raises(InvalidArgument) as caught:
        planner().plan(spec, "template")
    assert fields(caught.value) == ["template.steps[0].type"]
    assert "type 'teleport' is not one of" in caught.value.message
