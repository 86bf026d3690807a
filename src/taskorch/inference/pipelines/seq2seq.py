"""text2text_generation, summarization and translation on encoder-decoder models.

Input ``{"inputs": "..."}`` (or ``text`` / ``prompt``). Generation parameters as for
text_generation. Translation takes ``src_lang`` / ``tgt_lang`` parameters; summarization and
translation use the model's ``task_specific_params`` prefix (T5's "summarize: ") when it has one.

Result: ``{"generated_text": ...}`` plus ``summary_text`` (summarization) or
``translation_text`` (translation), with ``tokens_generated`` and ``finish_reason``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.pipelines.base import OnText, text_inputs
from taskorch.inference.pipelines.text_generation import generation_settings
from taskorch.inference.runtime import LoadedModel
from taskorch.inference.task_types import TaskType


class Seq2Seq:
    """One pipeline object per task type; they differ in prefix and result key."""

    def __init__(self, task: TaskType) -> None:
        self.task = task

    def _source_text(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> str:
        texts, many = text_inputs(input_data)
        if many:
            raise InvalidArgument("one input text per request", field="input_data.inputs")
        text = texts[0]
        specific = model.hf_config.get("task_specific_params") or {}
        if self.task is TaskType.SUMMARIZATION:
            prefix = (specific.get("summarization") or {}).get("prefix", "")
            return f"{prefix}{text}"
        if self.task is TaskType.TRANSLATION:
            src, tgt = parameters.get("src_lang"), parameters.get("tgt_lang")
            if src is not None or tgt is not None:
                if not isinstance(src, str) or not isinstance(tgt, str):
                    raise InvalidArgument(
                        "src_lang and tgt_lang go together", field="parameters.tgt_lang"
                    )
                return f"translate {src} to {tgt}: {text}"
        return text

    def _prepare(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> tuple[list[int], Any]:
        text = self._source_text(model, input_data, parameters)
        feeds = model.tokenize([text], field="input_data.inputs")
        settings, _ = generation_settings(
            parameters, default_new_tokens=model.config.max_new_tokens, context_window=4096
        )
        return [int(i) for i in feeds[0]["input_ids"]], settings

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        self._prepare(model, input_data, parameters)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        ids, settings = self._prepare(model, input_data, parameters)
        assert model.seq2seq is not None
        outcome = await model.seq2seq.generate(ids, settings, on_output=on_output, cancel=cancel)
        result: dict[str, Any] = {
            "generated_text": outcome.text,
            "tokens_generated": outcome.tokens_generated,
            "prompt_tokens": outcome.prompt_tokens,
            "finish_reason": outcome.finish_reason,
        }
        if self.task is TaskType.SUMMARIZATION:
            result["summary_text"] = outcome.text
        elif self.task is TaskType.TRANSLATION:
            result["translation_text"] = outcome.text
        return result
