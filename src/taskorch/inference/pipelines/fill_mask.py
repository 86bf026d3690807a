"""fill_mask: the most likely tokens for the mask token of a text.

Input ``{"inputs": "Paris is the [MASK] of France."}`` (the model's own mask token, exactly
once); parameter ``top_k`` (default 5). Result: ``{"predictions": [{"sequence", "score",
"token", "token_str"}, ...]}`` (best first), ``{"results": [...]}`` for a list of inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.pipelines.base import (
    OnText,
    one_or_many,
    param_int,
    softmax,
    text_inputs,
)
from taskorch.inference.runtime import LoadedModel


class FillMask:
    """Predict the masked token."""

    def _texts(self, model: LoadedModel, input_data: Mapping[str, Any]) -> tuple[list[str], bool]:
        texts, many = text_inputs(input_data)
        mask = model.tokenizer.mask_token
        for text in texts:
            if mask is None or text.count(mask) != 1:
                raise InvalidArgument(
                    f"each input must contain the mask token {mask!r} exactly once",
                    field="input_data.inputs",
                )
        return texts, many

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        texts, _ = self._texts(model, input_data)
        param_int(parameters, "top_k", 5, low=1, high=100)
        model.check_length(texts, field="input_data.inputs")

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        texts, many = self._texts(model, input_data)
        top_k = param_int(parameters, "top_k", 5, low=1, high=100)
        feeds = model.tokenize(texts, field="input_data.inputs")
        outputs = await model.infer(feeds)
        tokenizer = model.tokenizer
        results = []
        for text, feed, out in zip(texts, feeds, outputs, strict=True):
            positions = np.flatnonzero(feed["input_ids"] == tokenizer.mask_token_id)
            if positions.size == 0:  # truncated away
                raise InvalidArgument(
                    "the mask token fell outside the model's max_input_length",
                    field="input_data.inputs",
                )
            probs = softmax(out["logits"][positions[0]])
            order = np.argsort(-probs)[:top_k]
            predictions = []
            for token in order.tolist():
                word = tokenizer.decode([token]).strip()
                predictions.append(
                    {
                        "sequence": text.replace(tokenizer.mask_token, word, 1),
                        "score": float(probs[token]),
                        "token": int(token),
                        "token_str": word,
                    }
                )
            results.append({"predictions": predictions})
        return one_or_many(results, many)
