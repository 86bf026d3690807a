"""feature_extraction (sentence embeddings) and sentence_similarity on text encoders.

feature_extraction input ``{"inputs": "..." | [...]}``; parameter ``normalize`` (default from
``model.yaml``). Result: ``{"embedding": [...], "dimensions": n}`` for one text,
``{"embeddings": [[...], ...], "dimensions": n}`` for a list, each with ``prompt_tokens`` (the
tokens the model read, special tokens included). Pooling (mean | cls | max over
real tokens) comes from ``model.yaml`` and runs in the model's batch (``LoadedModel``).

sentence_similarity input ``{"source_sentence": "...", "sentences": [...]}`` (also nested
under ``inputs``, as the Hugging Face API sends it). Result: ``{"scores": [cosine per
sentence]}``, in the order of ``sentences``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.inference.pipelines.base import (
    OnText,
    param_bool,
    string_field,
    string_list,
    text_inputs,
)
from taskorch.inference.runtime import LoadedModel, Outputs

Vector = npt.NDArray[np.float32]


def pool(out: Outputs, *, normalize: bool) -> Vector:
    """One input's sentence vector (the batch pooled it: ``LoadedModel`` runs the model's
    pooling over real tokens for the whole batch), L2-normalised if asked."""
    vector: Vector = out["sentence_embedding"]
    if normalize:
        norm = float(np.sqrt(np.dot(vector, vector)))
        vector = vector / max(norm, 1e-12)
    return vector


async def embed(
    model: LoadedModel, texts: Sequence[str], *, normalize: bool, field: str
) -> list[Vector]:
    """Embed ``texts`` through the model's dynamic batcher."""
    outputs = await model.infer(model.tokenize(texts, field=field))
    return [pool(out, normalize=normalize) for out in outputs]


class FeatureExtraction:
    """Sentence embeddings."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        texts, _ = text_inputs(input_data)
        param_bool(parameters, "normalize", model.config.normalize)
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
        normalize = param_bool(parameters, "normalize", model.config.normalize)
        feeds = model.tokenize(texts, field="input_data.inputs")
        tokens = sum(len(feed["input_ids"]) for feed in feeds)  # unpadded, special tokens too
        outputs = await model.infer(feeds)
        vectors = [pool(out, normalize=normalize) for out in outputs]
        dims = int(vectors[0].shape[0])
        if many:
            return {
                "embeddings": [v.tolist() for v in vectors],
                "dimensions": dims,
                "prompt_tokens": tokens,
            }
        return {"embedding": vectors[0].tolist(), "dimensions": dims, "prompt_tokens": tokens}


def _pair(input_data: Mapping[str, Any]) -> tuple[str, list[str], str]:
    nested = input_data.get("inputs")
    source, prefix = (
        (nested, "input_data.inputs") if isinstance(nested, Mapping) else (input_data, "input_data")
    )
    from taskorch.domain.errors import InvalidArgument

    try:
        return string_field(source, "source_sentence"), string_list(source, "sentences"), prefix
    except InvalidArgument as exc:
        if prefix != "input_data":  # name the nested field
            violation = exc.violations[0]
            raise InvalidArgument(
                exc.message, field=violation.field.replace("input_data", prefix, 1)
            ) from None
        raise


class SentenceSimilarity:
    """Cosine similarity of a source sentence with each of several sentences."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        source, sentences, prefix = _pair(input_data)
        model.check_length([source, *sentences], field=f"{prefix}.sentences")

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        source, sentences, prefix = _pair(input_data)
        vectors = await embed(
            model, [source, *sentences], normalize=True, field=f"{prefix}.sentences"
        )
        scores = [float(np.dot(vectors[0], v)) for v in vectors[1:]]
        return {"scores": scores}
