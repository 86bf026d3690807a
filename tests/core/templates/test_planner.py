"""Planning templated create requests into chained subtasks; errors name the parameter."""

from __future__ import annotations

import pytest

from taskorch.core.planning import INFERENCE, TEXT_ANALYSIS, TaskSpec
from taskorch.core.templates.definition import GIT_SCRIPT, Template, parse_template
from taskorch.domain.errors import (
    InvalidArgument,
    ModelNotFound,
    TemplateNotFound,
)
from tests.core.templates.fakes import BUILTINS, SMOLLM, fields, plan, planner


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
