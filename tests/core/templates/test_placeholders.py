"""Placeholders: parameters filled at create, earlier steps' outputs resolved before a step runs."""

from __future__ import annotations

import copy

import pytest

from taskorch.core.templates.placeholders import (
    ABSENT,
    StepOutputMissing,
    find_placeholders,
    has_step_outputs,
    resolve_step_outputs,
    substitute_parameters,
)


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


@pytest.mark.parametrize(
    ("reference", "detail"),
    [
        ("steps.classify.output.labels.5", "the output.labels of step 'classify' has no '5'"),
        ("steps.classify.output.n.x", "the output.n of step 'classify' has no 'x'"),
        ("steps.classify.result", "it must read steps.NAME.output.FIELD"),
        ("steps.later.output", "no completed step 'later' (completed: classify)"),
    ],
)
def test_an_unresolvable_step_output_names_the_placeholder_as_its_field(
    reference: str, detail: str
) -> None:
    results = {"classify": {"labels": ["pos", "neg"], "n": 2}}
    with pytest.raises(StepOutputMissing) as caught:
        resolve_step_outputs({"input": {"text": f"see {{{{{reference}}}}}"}}, results)
    assert caught.value.metadata.get("field") == reference
    assert detail in caught.value.message, caught.value.message


def test_placeholders_are_found_with_the_path_of_the_field_holding_them() -> None:
    step = {"prompt": "{{a}} and {{ b }}", "inputs": [{"x": "{{steps.s.output}}"}], "n": 3}
    assert list(find_placeholders(step)) == [
        ("prompt", "a"),
        ("prompt", "b"),
        ("inputs[0].x", "steps.s.output"),
    ]
    assert has_step_outputs(step) and not has_step_outputs({"prompt": "{{a}}"})
