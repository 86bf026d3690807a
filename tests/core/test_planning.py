"""Planning create requests into subtasks: which planner a request goes to, what each built-in
planner checks (errors name the field), and inference tasks sharing their model's key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from taskorch.core.planning import (
    CONTAINER,
    ECHO,
    INFERENCE,
    TEXT_ANALYSIS,
    Catalog,
    ContainerPlanner,
    EchoPlanner,
    InferencePlanner,
    TaskSpec,
    TextAnalysisPlanner,
    check_step_input,
    normalise_type,
)
from taskorch.domain.errors import InvalidArgument, ModelNotFound, UnsupportedTaskType


@dataclass(frozen=True)
class Checked:
    task_type: str
    model_name: str
    input_data: Mapping[str, Any]
    parameters: Mapping[str, Any]


class Models:
    """The InferenceCatalog planning needs: a local encoder that runs 4 at once, a remote
    generator of unknown capacity."""

    types = {"minilm": "feature_extraction", "remote-llm": "text_generation"}
    defaults = {"feature_extraction": "minilm", "text_generation": "remote-llm"}

    def supported_task_types(self) -> list[str]:
        return sorted(self.defaults)

    def capacity_of(self, model_name: str) -> int | None:
        return 4 if model_name == "minilm" else None

    def canonical_task_type(self, task_type: str) -> str:
        canonical = normalise_type(task_type)
        if canonical not in self.defaults:
            raise UnsupportedTaskType(task_type, self.supported_task_types())
        return canonical

    def check(
        self,
        task_type: str,
        model_name: str,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
    ) -> Checked:
        model = model_name or self.defaults[task_type]
        if self.types.get(model) != task_type:
            raise ModelNotFound(model, available=self.types)
        if not isinstance(input_data.get("inputs"), str):
            raise InvalidArgument("input_data.inputs must be a string", field="input_data.inputs")
        return Checked(task_type, model, input_data, parameters)


CATALOG = Catalog(
    [TextAnalysisPlanner(), EchoPlanner(), ContainerPlanner(), InferencePlanner(Models())]
)


def _field(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.metadata.get("field", "")


def test_text_alone_is_the_built_in_text_analysis() -> None:
    plan = CATALOG.plan(TaskSpec(text="Hello world", parameters={"top_n": 3.0}))
    assert plan.task_type == TEXT_ANALYSIS
    [step] = plan.steps
    assert step.kind == TEXT_ANALYSIS and step.input == {"text": "Hello world", "top_n": 3}


@pytest.mark.parametrize("spelling", ["Text-Analysis", " text analysis ", "TEXT_ANALYSIS"])
def test_task_types_are_matched_in_any_spelling(spelling: str) -> None:
    plan = CATALOG.plan(TaskSpec(task_type=spelling, input_data={"text": "some words"}))
    assert plan.task_type == TEXT_ANALYSIS
    assert plan.steps[0].input["text"] == "some words"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (TaskSpec(), "task_type"),  # nothing to do
        (TaskSpec(text="x", template="summarize"), "template"),  # several at once
        (TaskSpec(text="   "), "text"),
        (TaskSpec(text="x" * 4001), "text"),
        (TaskSpec(text="x", parameters={"top_n": 0}), "parameters.top_n"),
        (TaskSpec(text="x", parameters={"top_n": True}), "parameters.top_n"),
        (TaskSpec(task_type="text_analysis", input_data={"text": 5}), "input_data.text"),
        (TaskSpec(task_type="echo", input_data={"delay_seconds": 601}), "input_data.delay_seconds"),
        (TaskSpec(task_type="echo", input_data={"fail_attempts": 1.5}), "input_data.fail_attempts"),
        (TaskSpec(task_type="container", text="x"), "text"),
        (TaskSpec(task_type="feature_extraction", input_data={"inputs": 1}), "input_data.inputs"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(spec: TaskSpec, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        CATALOG.plan(spec)
    assert _field(caught) == field, caught.value.message


def test_a_long_text_says_it_is_too_long() -> None:
    with pytest.raises(InvalidArgument) as caught:
        CATALOG.plan(TaskSpec(text="x" * 4001))
    assert caught.value.reason == "TEXT_TOO_LONG" and "4001" in caught.value.message


def test_an_unknown_task_type_lists_the_ones_there_are() -> None:
    with pytest.raises(UnsupportedTaskType) as caught:
        CATALOG.plan(TaskSpec(task_type="image_generation"))
    for known in (TEXT_ANALYSIS, ECHO, CONTAINER, "feature_extraction", "text_generation"):
        assert known in caught.value.message
    assert CATALOG.task_types() == sorted(
        [TEXT_ANALYSIS, ECHO, CONTAINER, "feature_extraction", "text_generation"]
    )


def test_echo_passes_its_input_through_and_a_container_has_no_steps() -> None:
    echo = CATALOG.plan(TaskSpec(task_type="echo", input_data={"n": 1, "delay_seconds": 2}))
    assert echo.task_type == ECHO and echo.steps[0].input == {"n": 1, "delay_seconds": 2}
    container = CATALOG.plan(TaskSpec(task_type="container", input_data={"label": "batch"}))
    assert container.steps == () and container.input_data == {"label": "batch"}


def test_inference_shares_its_models_key_limited_to_what_the_model_runs_at_once() -> None:
    plan = CATALOG.plan(TaskSpec(task_type="feature-extraction", text="hello"))
    assert plan.task_type == "feature_extraction" and plan.model_name == "minilm"
    assert (plan.concurrency_key, plan.concurrency_limit) == ("model:minilm", 4)
    [step] = plan.steps
    assert step.kind == INFERENCE and step.model_name == "minilm"
    assert step.input["input_data"] == {"inputs": "hello"}  # text alone is the input
    # A model whose capacity is not known here (remote) gets no key.
    remote = CATALOG.plan(TaskSpec(task_type="text_generation", input_data={"inputs": "hi"}))
    assert (remote.concurrency_key, remote.concurrency_limit) == ("", 0)


@pytest.mark.parametrize(
    ("kind", "data", "field"),
    [
        (ECHO, {"progress_steps": 0}, "input.progress_steps"),
        (ECHO, {"delay_seconds": None}, "input.delay_seconds"),  # never null
        (TEXT_ANALYSIS, {}, "input.text"),
        (TEXT_ANALYSIS, {"text": "ok", "top_n": 101}, "input.top_n"),
    ],
)
def test_subtask_inputs_of_built_in_kinds_are_checked_naming_the_field(
    kind: str, data: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_step_input(kind, data)
    assert _field(caught) == field, caught.value.message


def test_subtask_inputs_of_other_kinds_belong_to_their_workers() -> None:
    check_step_input("interval", {"seconds": "anything"})
    check_step_input(ECHO, {"delay_seconds": 4.0, "progress_steps": 4.0})  # JSON floats
