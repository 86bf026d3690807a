"""From a create request to the subtasks that do the work.

A :class:`TaskSpec` is what a client asked for, already checked for shape. The
:class:`Catalog` finds the :class:`Planner` for its task type, which validates the payload
(before anything is queued) and returns a :class:`Plan`: the task type to record and the
subtasks to run, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from taskorch.domain.caller import Caller
from taskorch.domain.errors import InvalidArgument, UnsupportedTaskType
from taskorch.domain.limits import MAX_TEXT_LENGTH
from taskorch.domain.values import JSON, MODEL_KEY_PREFIX

TEXT_ANALYSIS = "text_analysis"
ECHO = "echo"
INFERENCE = "inference"
CONTAINER = "container"
MAX_ECHO_DELAY = 600.0


@dataclass(frozen=True)
class TaskSpec:
    """A create request, transport-neutral. Empty strings mean "not given"."""

    text: str | None = None
    task_type: str = ""
    model_name: str = ""
    input_data: JSON | None = None
    parameters: JSON | None = None
    template: str = ""
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    request_id: str = ""
    max_attempts: int = 0
    timeout_seconds: float = 0.0
    # Run later: at this time, or this many seconds after the create (not both).
    run_at: datetime | None = None
    run_after_seconds: float = 0.0
    # At most concurrency_limit tasks of the key run at once (0: keep the key's limit).
    concurrency_key: str = ""
    concurrency_limit: int = 0
    # The definition of ``template`` for the caller's tenant, looked up before planning
    # (see Catalog.plan_for and core/templates/planner.py); None until then.
    template_definition: Any = None


@dataclass(frozen=True)
class Step:
    """One subtask to create: ``kind`` selects the worker handler that runs it."""

    kind: str
    input: JSON
    name: str = ""
    model_name: str = ""


@dataclass(frozen=True)
class Plan:
    task_type: str
    steps: tuple[Step, ...]
    model_name: str = ""
    input_data: JSON | None = None
    extra: JSON = field(default_factory=dict)
    # The concurrency key and limit the task gets when its request names no key.
    concurrency_key: str = ""
    concurrency_limit: int = 0


class Planner(Protocol):
    """Turns the specs of some task types into plans."""

    def task_types(self) -> Sequence[str]:
        """The canonical task types this planner accepts."""
        ...

    def canonical(self, task_type: str) -> str | None:
        """The canonical spelling of ``task_type`` if this planner accepts it."""
        ...

    def plan(self, spec: TaskSpec, task_type: str) -> Plan:
        """Validates ``spec`` and plans it. Raises InvalidArgument, ModelNotFound, ..."""
        ...


@runtime_checkable
class PreparingPlanner(Planner, Protocol):
    """A planner that must read something for the caller before it can plan (a template of
    the caller's tenant): planning itself stays synchronous and free of I/O."""

    async def prepare(self, caller: Caller, spec: TaskSpec) -> TaskSpec:
        """``spec`` with what ``plan`` will need filled in. Raises TemplateNotFound, ..."""
        ...


class Catalog:
    """Every task type the server accepts, each with the planner that plans it."""

    def __init__(self, planners: Iterable[Planner] = ()) -> None:
        self._planners: list[Planner] = []
        # Checked once here: an isinstance() on a runtime protocol costs ~10 µs per planner,
        # which every create paid.
        self._preparing: list[PreparingPlanner] = []
        for planner in planners:
            self.add(planner)

    def add(self, planner: Planner) -> None:
        self._planners.append(planner)
        if isinstance(planner, PreparingPlanner):
            self._preparing.append(planner)

    def task_types(self) -> list[str]:
        return sorted({t for p in self._planners for t in p.task_types()})

    async def plan_for(self, caller: Caller, spec: TaskSpec) -> Plan:
        """Plans ``spec`` for ``caller``, letting planners look up what they need first."""
        for planner in self._preparing:
            spec = await planner.prepare(caller, spec)
        return self.plan(spec)

    def plan(self, spec: TaskSpec) -> Plan:
        if spec.template:
            if spec.text is not None or spec.task_type:
                raise InvalidArgument(
                    "give either template, or text, or task_type, not several", field="template"
                )
            return self._plan_type(spec, "template")
        task_type = spec.task_type.strip()
        if not task_type:
            if spec.text is None:
                raise InvalidArgument(
                    "one of text, task_type or template is required", field="task_type"
                )
            task_type = TEXT_ANALYSIS
        return self._plan_type(spec, task_type)

    def _plan_type(self, spec: TaskSpec, task_type: str) -> Plan:
        for planner in self._planners:
            canonical = planner.canonical(task_type)
            if canonical is not None:
                return planner.plan(spec, canonical)
        raise UnsupportedTaskType(task_type, self.task_types())


def normalise_type(task_type: str) -> str:
    """``Text-Generation`` → ``text_generation``."""
    return task_type.strip().lower().replace("-", "_").replace(" ", "_")


class TextAnalysisPlanner:
    """Seed 003's ``{text}`` task: word count and top words, at most 4000 characters."""

    def task_types(self) -> Sequence[str]:
        return (TEXT_ANALYSIS,)

    def canonical(self, task_type: str) -> str | None:
        return TEXT_ANALYSIS if normalise_type(task_type) == TEXT_ANALYSIS else None

    def plan(self, spec: TaskSpec, task_type: str) -> Plan:
        text = spec.text
        field_name = "text"
        if text is None and spec.input_data is not None:
            value = spec.input_data.get("text", spec.input_data.get("inputs"))
            field_name = "input_data.text"
            if not isinstance(value, str):
                raise InvalidArgument("input_data.text must be a string", field=field_name)
            text = value
        if text is None or not text.strip():
            raise InvalidArgument("text must not be empty", field=field_name)
        if len(text) > MAX_TEXT_LENGTH:
            raise InvalidArgument(
                f"text is {len(text)} characters long; the limit is {MAX_TEXT_LENGTH}",
                field=field_name,
                reason="TEXT_TOO_LONG",
            )
        top_n = (spec.parameters or {}).get("top_n", 5)
        if not isinstance(top_n, int | float) or isinstance(top_n, bool) or not 1 <= top_n <= 100:
            raise InvalidArgument(
                "parameters.top_n must be between 1 and 100", field="parameters.top_n"
            )
        return Plan(
            task_type=TEXT_ANALYSIS,
            steps=(Step(kind=TEXT_ANALYSIS, input={"text": text, "top_n": int(top_n)}),),
        )


class EchoPlanner:
    """A diagnostic task that returns its input, optionally after a delay with progress.

    ``input_data``: anything; ``delay_seconds`` (<= 600) to take that long, reporting progress
    ``progress_steps`` times; ``fail_attempts`` to fail that many first attempts (to see
    retries and backoff at work). Useful to smoke-test a deployment and its workers.
    """

    def task_types(self) -> Sequence[str]:
        return (ECHO,)

    def canonical(self, task_type: str) -> str | None:
        return ECHO if normalise_type(task_type) == ECHO else None

    def plan(self, spec: TaskSpec, task_type: str) -> Plan:
        data = dict(spec.input_data or {})
        check_echo_input(data, "input_data")
        return Plan(task_type=ECHO, steps=(Step(kind=ECHO, input=data),))


# What the built-in handlers read from their input, checked when the work is created (a task
# or a subtask of a built-in kind), so a wrong type is INVALID_ARGUMENT naming the field instead
# of a handler's TypeError on every attempt.


def check_echo_input(data: Mapping[str, Any], prefix: str = "input") -> None:
    """``delay_seconds`` (0-600), ``progress_steps`` (1-1000) and ``fail_attempts`` (0-100),
    each optional but never null."""
    _number(data, prefix, "delay_seconds", 0.0, MAX_ECHO_DELAY)
    _number(data, prefix, "progress_steps", 1, 1000, whole=True)
    _number(data, prefix, "fail_attempts", 0, 100, whole=True)


def check_text_analysis_input(data: Mapping[str, Any], prefix: str = "input") -> None:
    """``text`` (a non-empty string of at most 4000 characters) and ``top_n`` (1-100)."""
    text = data.get("text")
    if not isinstance(text, str):
        raise InvalidArgument(f"{prefix}.text must be a string", field=f"{prefix}.text")
    if not text.strip():
        raise InvalidArgument("text must not be empty", field=f"{prefix}.text")
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidArgument(
            f"text is {len(text)} characters long; the limit is {MAX_TEXT_LENGTH}",
            field=f"{prefix}.text",
            reason="TEXT_TOO_LONG",
        )
    _number(data, prefix, "top_n", 1, 100, whole=True)


STEP_INPUT_CHECKS: Mapping[str, Callable[[Mapping[str, Any], str], None]] = {
    ECHO: check_echo_input,
    TEXT_ANALYSIS: check_text_analysis_input,
}


def check_step_input(kind: str, data: Mapping[str, Any] | None, prefix: str = "input") -> None:
    """Checks the input of work of a built-in ``kind`` (others belong to their workers).

    Raises:
        InvalidArgument: naming the field, e.g. ``input.delay_seconds``.
    """
    check = STEP_INPUT_CHECKS.get(kind)
    if check is not None:
        check(data or {}, prefix)


def _number(
    data: Mapping[str, Any],
    prefix: str,
    name: str,
    low: float,
    high: float,
    *,
    whole: bool = False,
) -> None:
    if name not in data:
        return
    value = data[name]
    # JSON numbers arrive as floats (protobuf Struct): 4.0 is a whole number.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value <= high
        or (whole and not float(value).is_integer())
    ):
        what = "a whole number" if whole else "a number"
        raise InvalidArgument(
            f"{prefix}.{name} must be {what} between {low:g} and {high:g}",
            field=f"{prefix}.{name}",
        )


class CheckedInference(Protocol):
    @property
    def task_type(self) -> str: ...

    @property
    def model_name(self) -> str: ...

    @property
    def input_data(self) -> Mapping[str, Any]: ...

    @property
    def parameters(self) -> Mapping[str, Any]: ...


class InferenceCatalog(Protocol):
    """What planning needs of the inference engine (taskorch.inference.InferenceEngine)."""

    def supported_task_types(self) -> list[str]: ...

    def capacity_of(self, model_name: str) -> int | None:
        """How many requests the model runs at once (None: not known here, e.g. remote)."""
        ...

    def canonical_task_type(self, task_type: str) -> str:
        """Raises UnsupportedTaskType for a type the engine cannot run."""
        ...

    def check(
        self,
        task_type: str,
        model_name: str,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
    ) -> CheckedInference:
        """Raises ModelNotFound, InvalidArgument (naming the field), Unavailable."""
        ...


class InferencePlanner:
    """Seed 001's ``task_type`` + ``model_name`` + ``input_data`` + ``parameters`` tasks.

    The engine checks the model and the input before anything is queued; a missing
    ``model_name`` selects the task type's default model. ``text`` alone stands for
    ``input_data: {"inputs": text}``.
    """

    def __init__(self, engine: InferenceCatalog) -> None:
        self.engine = engine

    def task_types(self) -> Sequence[str]:
        return self.engine.supported_task_types()

    def canonical(self, task_type: str) -> str | None:
        try:
            return self.engine.canonical_task_type(task_type)
        except UnsupportedTaskType:
            return None

    def plan(self, spec: TaskSpec, task_type: str) -> Plan:
        input_data = spec.input_data
        if input_data is None and spec.text is not None:
            input_data = {"inputs": spec.text}
        checked = self.engine.check(
            task_type, spec.model_name, input_data or {}, spec.parameters or {}
        )
        step_input = {
            "task_type": str(checked.task_type),
            "model_name": checked.model_name,
            "input_data": dict(checked.input_data),
            "parameters": dict(checked.parameters),
        }
        # At most what the model runs at once, across tenants (its key is shared): the other
        # tasks wait in line instead of holding worker slots while they wait for the model.
        capacity = self.engine.capacity_of(checked.model_name)
        return Plan(
            task_type=str(checked.task_type),
            model_name=checked.model_name,
            input_data=dict(checked.input_data),
            steps=(Step(kind=INFERENCE, input=step_input, model_name=checked.model_name),),
            concurrency_key=f"{MODEL_KEY_PREFIX}{checked.model_name}" if capacity else "",
            concurrency_limit=capacity or 0,
        )


class ContainerPlanner:
    """Seed 000's ``POST /task`` with no built-in work: a task that clients fill with
    subtasks of their own kinds (CreateSubtask); it completes when they all have."""

    def task_types(self) -> Sequence[str]:
        return (CONTAINER,)

    def canonical(self, task_type: str) -> str | None:
        return CONTAINER if normalise_type(task_type) == CONTAINER else None

    def plan(self, spec: TaskSpec, task_type: str) -> Plan:
        if spec.text is not None:
            raise InvalidArgument("a container task takes no text", field="text")
        return Plan(task_type=CONTAINER, steps=(), input_data=spec.input_data)
