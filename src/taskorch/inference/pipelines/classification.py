"""text_classification and zero_shot_classification (NLI) on sequence-classification models.

text_classification input ``{"inputs": "..." | [...]}``; parameters ``top_k`` (labels listed,
default all) and ``function_to_apply`` (softmax | sigmoid | none). Result per input:
``{"label", "score", "labels": [{"label", "score"}, ...]}`` (best first).

zero_shot_classification input ``{"inputs": "...", "candidate_labels": [...]}``; parameters
``hypothesis_template`` (default "This example is {}.") and ``multi_label``. The model must be
an NLI model with an "entailment" label. Result per input, as the Hugging Face API:
``{"sequence", "labels", "scores"}`` (best first).
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
    param_bool,
    param_int,
    softmax,
    string_list,
    text_inputs,
)
from taskorch.inference.runtime import LoadedModel

FUNCTIONS = ("softmax", "sigmoid", "none")


class TextClassification:
    """Label each input text."""

    def _function(self, model: LoadedModel, parameters: Mapping[str, Any]) -> str:
        default = "sigmoid" if len(model.labels) == 1 else "softmax"
        if model.hf_config.get("problem_type") == "multi_label_classification":
            default = "sigmoid"
        value = parameters.get("function_to_apply", default)
        if value not in FUNCTIONS:
            raise InvalidArgument(
                f"function_to_apply must be one of {', '.join(FUNCTIONS)}",
                field="parameters.function_to_apply",
            )
        return str(value)

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        texts, _ = text_inputs(input_data)
        self._function(model, parameters)
        param_int(parameters, "top_k", len(model.labels) or 1, low=1, high=10_000)
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
        function = self._function(model, parameters)
        outputs = await model.infer(model.tokenize(texts, field="input_data.inputs"))
        results = []
        for out in outputs:
            logits = out["logits"].astype(np.float64)
            if function == "softmax":
                scores = softmax(logits)
            elif function == "sigmoid":
                scores = 1.0 / (1.0 + np.exp(-logits))
            else:
                scores = logits
            top_k = param_int(parameters, "top_k", scores.size, low=1, high=10_000)
            order = np.argsort(-scores)[:top_k]
            labels = [{"label": _label(model, int(i)), "score": float(scores[i])} for i in order]
            results.append(
                {"label": labels[0]["label"], "score": labels[0]["score"], "labels": labels}
            )
        return one_or_many(results, many)


def _label(model: LoadedModel, index: int) -> str:
    return model.labels[index] if index < len(model.labels) else f"LABEL_{index}"


def _nli_indices(model: LoadedModel) -> tuple[int, int | None]:
    entail = contra = None
    for index, label in enumerate(model.labels):
        lower = label.lower()
        if lower.startswith("entail"):
            entail = index
        elif lower.startswith("contra"):
            contra = index
    if entail is None:
        raise InvalidArgument(
            f"model {model.name!r} has no 'entailment' label, so it cannot do zero-shot "
            f"classification (labels: {', '.join(model.labels) or 'none'})",
            field="model_name",
        )
    return entail, contra


class ZeroShotClassification:
    """Score candidate labels by NLI entailment of "This example is {label}."."""

    def _prepare(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> tuple[list[str], bool, list[str], str, bool]:
        _nli_indices(model)
        texts, many = text_inputs(input_data, ("inputs", "text", "sequences"))
        labels = string_list(input_data, "candidate_labels")
        template = parameters.get("hypothesis_template", "This example is {}.")
        if not isinstance(template, str) or "{}" not in template:
            raise InvalidArgument(
                "hypothesis_template must be a string containing {}",
                field="parameters.hypothesis_template",
            )
        multi = param_bool(parameters, "multi_label", False)
        return texts, many, labels, template, multi

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        texts, _, labels, template, _ = self._prepare(model, input_data, parameters)
        model.check_length(
            texts,
            pairs=[template.format(labels[0])] * len(texts),
            field="input_data.inputs",
            truncate_side="only_first",
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
        texts, many, labels, template, multi = self._prepare(model, input_data, parameters)
        entail, contra = _nli_indices(model)
        premises = [t for t in texts for _ in labels]
        hypotheses = [template.format(label) for _ in texts for label in labels]
        feeds = model.tokenize(
            premises, pairs=hypotheses, field="input_data.inputs", truncate_side="only_first"
        )
        outputs = await model.infer(feeds)
        logits = np.stack([o["logits"] for o in outputs]).reshape(len(texts), len(labels), -1)
        results = []
        for text, rows in zip(texts, logits, strict=True):
            if multi or len(labels) == 1:
                pair = [contra, entail] if contra is not None else None
                if pair is not None:
                    scores = softmax(rows[:, pair])[:, 1]
                else:
                    scores = 1.0 / (1.0 + np.exp(-rows[:, entail].astype(np.float64)))
            else:
                scores = softmax(rows[:, entail])
            order = np.argsort(-scores)
            results.append(
                {
                    "sequence": text,
                    "labels": [labels[i] for i in order],
                    "scores": [float(scores[i]) for i in order],
                }
            )
        return one_or_many(results, many)
