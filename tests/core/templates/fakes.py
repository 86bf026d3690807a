"""What the template tests share: a fake inference catalog, the built-in templates, and a
planner over them (no database is opened)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskorch.core.planning import TaskSpec
from taskorch.core.templates.builtin import load_builtin_templates
from taskorch.core.templates.planner import TemplatePlanner
from taskorch.core.templates.service import TemplateService
from taskorch.domain.errors import (
    InvalidArgument,
    ModelNotFound,
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
