"""What chat sessions ask of the engine (core.chat.ChatModels): which text-generation model a
session uses, and whether a message can fit that model's prompt at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskorch.inference.engine import InferenceEngine
from taskorch.inference.pipelines.text_generation import build_prompt, generation_settings
from taskorch.inference.task_types import TaskType

# A one-message conversation: checks a model and parameters without a real prompt.
_PROBE: dict[str, Any] = {"messages": [{"role": "user", "content": "hello"}]}
_UNBOUNDED = 1 << 30


class EngineChatModels:
    """Checks sessions and messages against the models of an :class:`InferenceEngine`."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine

    def check_session(self, model_name: str, parameters: Mapping[str, Any]) -> str:
        """The model a session will use ("" = the default text-generation model).

        Raises:
            ModelNotFound: no such model (the message lists the models).
            InvalidArgument: not a text-generation model (``model_name``) or a bad parameter
                (``parameters.<name>``).
            Unavailable: the model is loading or failed to load.
        """
        request = self.engine.check(TaskType.TEXT_GENERATION, model_name, _PROBE, parameters)
        return request.model_name

    def prompt_size(
        self, model_name: str, messages: Sequence[Mapping[str, str]], parameters: Mapping[str, Any]
    ) -> tuple[int, int]:
        """Tokens of ``messages`` as the model's prompt (chat template applied, nothing cut),
        and how many tokens a prompt may have with these parameters."""
        conversation = {"messages": [dict(m) for m in messages]}
        request = self.engine.check(TaskType.TEXT_GENERATION, model_name, _PROBE, parameters)
        if self.engine.is_remote(request.model_name):
            return 0, _UNBOUNDED  # its server's tokenizer decides; it refuses what is too long
        model = self.engine._serving(request.model_name)
        window = model.context_window
        settings, _ = generation_settings(
            parameters,
            default_new_tokens=min(model.config.max_new_tokens, window - 1),
            context_window=window,
        )
        budget = min(window - settings.max_new_tokens, model.config.max_input_length)
        template = parameters.get("use_chat_template")
        prompt = build_prompt(
            model,
            conversation,
            budget=_UNBOUNDED,
            use_chat_template=template if isinstance(template, bool) else None,
        )
        return len(prompt.token_ids), budget
