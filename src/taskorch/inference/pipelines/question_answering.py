"""question_answering: extractive answers from a context.

Input ``{"question": "...", "context": "..."}`` (also nested under ``inputs``, as the Hugging
Face API sends it); parameter ``max_answer_len`` (tokens, default 30). Contexts longer than
the model's ``max_input_length`` are truncated (or refused, per the model's policy).

Result: ``{"answer", "score", "start", "end"}`` with character offsets into the context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np

from taskorch.inference.pipelines.base import OnText, param_int, softmax, string_field
from taskorch.inference.runtime import LoadedModel


def _fields(input_data: Mapping[str, Any]) -> tuple[str, str]:
    nested = input_data.get("inputs")
    source = nested if isinstance(nested, Mapping) else input_data
    return string_field(source, "question"), string_field(source, "context")


class QuestionAnswering:
    """Find the span of the context that answers the question."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        question, context = _fields(input_data)
        param_int(parameters, "max_answer_len", 30, low=1, high=512)
        model.check_length(
            [question], pairs=[context], field="input_data.context", truncate_side="only_second"
        )

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        question, context = _fields(input_data)
        max_len = param_int(parameters, "max_answer_len", 30, low=1, high=512)
        feed = model.tokenize(
            [question],
            pairs=[context],
            field="input_data.context",
            truncate_side="only_second",
            offsets=True,
        )[0]
        spans = feed.pop("offset_mapping")
        segment = feed.pop("sequence_ids")
        out = (await model.infer([feed]))[0]
        in_context = segment == 1
        start_logits = np.where(in_context, out["start_logits"], -np.inf)
        end_logits = np.where(in_context, out["end_logits"], -np.inf)
        start_p, end_p = softmax(start_logits), softmax(end_logits)
        scores = np.triu(np.outer(start_p, end_p))
        scores = np.tril(scores, max_len - 1)
        best = int(np.argmax(scores))
        first, last = divmod(best, scores.shape[1])
        begin, finish = int(spans[first][0]), int(spans[last][1])
        return {
            "answer": context[begin:finish],
            "score": float(scores[first, last]),
            "start": begin,
            "end": finish,
        }
