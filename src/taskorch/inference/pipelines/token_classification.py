"""token_classification (NER, PII): entities with Hugging Face's "simple" aggregation.

Input ``{"inputs": "..." | [...]}``; parameters ``ignore_labels`` (default ``["O"]``) and
``aggregation_strategy`` ("simple", the default, or "none" for one entry per token).

Result per input: ``{"entities": [{"entity_group", "score", "word", "start", "end"}, ...]}``
(``entity`` instead of ``entity_group`` with aggregation "none").
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.pipelines.base import OnText, one_or_many, softmax, text_inputs
from taskorch.inference.runtime import LoadedModel

STRATEGIES = ("simple", "none")


def _split_tag(label: str) -> tuple[str, str]:
    """("B", "PHONE") for "B-PHONE"; ("I", "PER") for "PER"."""
    if len(label) > 2 and label[1] in "-_" and label[0] in "BIESL":
        return label[0], label[2:]
    return "I", label


class TokenClassification:
    """Tag tokens and merge them into entities."""

    def _options(self, parameters: Mapping[str, Any]) -> tuple[str, set[str]]:
        strategy = parameters.get("aggregation_strategy", "simple")
        if strategy not in STRATEGIES:
            raise InvalidArgument(
                f"aggregation_strategy must be one of {', '.join(STRATEGIES)}",
                field="parameters.aggregation_strategy",
            )
        ignore = parameters.get("ignore_labels", ["O"])
        if not isinstance(ignore, list) or not all(isinstance(x, str) for x in ignore):
            raise InvalidArgument(
                "ignore_labels must be a list of labels", field="parameters.ignore_labels"
            )
        return str(strategy), set(ignore)

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        texts, _ = text_inputs(input_data)
        self._options(parameters)
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
        texts, many = text_inputs(input_data)
        strategy, ignore = self._options(parameters)
        feeds = model.tokenize(texts, field="input_data.inputs", offsets=True)
        offsets = [feed.pop("offset_mapping") for feed in feeds]
        outputs = await model.infer(feeds)
        results = []
        for text, spans, out in zip(texts, offsets, outputs, strict=True):
            probs = softmax(out["logits"])
            tokens = []
            for index, (start, end) in enumerate(spans.tolist()):
                if start == end:  # special token
                    continue
                best = int(np.argmax(probs[index]))
                label = model.labels[best] if best < len(model.labels) else f"LABEL_{best}"
                tokens.append((label, float(probs[index, best]), int(start), int(end)))
            if strategy == "none":
                entities = [
                    {"entity": lab, "score": s, "word": text[a:b], "start": a, "end": b}
                    for lab, s, a, b in tokens
                    if lab not in ignore
                ]
            else:
                entities = _group_simple(text, tokens, ignore)
            results.append({"entities": entities})
        return one_or_many(results, many)


def _group_simple(
    text: str, tokens: list[tuple[str, float, int, int]], ignore: set[str]
) -> list[dict[str, Any]]:
    """Adjacent tokens of one entity type form one entity; a "B-" tag starts a new one."""
    groups: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for label, score, start, end in tokens:
        if label in ignore:
            current = None
            continue
        tag, entity = _split_tag(label)
        if current is not None and current["entity_group"] == entity and tag != "B":
            current["scores"].append(score)
            current["end"] = end
            continue
        current = {"entity_group": entity, "scores": [score], "start": start, "end": end}
        groups.append(current)
    return [
        {
            "entity_group": g["entity_group"],
            "score": float(np.mean(g["scores"])),
            "word": text[g["start"] : g["end"]],
            "start": g["start"],
            "end": g["end"],
        }
        for g in groups
    ]
