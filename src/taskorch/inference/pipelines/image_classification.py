"""image_classification: a base64 image in, labels with scores out.

Input ``{"image": "<base64>"}`` (or ``inputs``; a ``data:image/...;base64,`` prefix is
accepted); parameter ``top_k`` (default 5). Result: ``{"label", "score", "labels": [{"label",
"score"}, ...]}`` (best first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np

from taskorch.inference.pipelines.base import OnText, param_int, softmax
from taskorch.inference.pipelines.media import decode_image, media_bytes
from taskorch.inference.runtime import Feed, LoadedModel


def _pixels(model: LoadedModel, input_data: Mapping[str, Any]) -> Feed:
    data, field = media_bytes(input_data, "image")
    rgb = decode_image(data, field)
    pixels = model.image_processor(images=[rgb], return_tensors="np")["pixel_values"][0]
    return {"pixel_values": np.asarray(pixels, dtype=np.float32)}


class ImageClassification:
    """Classify one image."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        media_bytes(input_data, "image")
        param_int(parameters, "top_k", 5, low=1, high=10_000)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        top_k = param_int(parameters, "top_k", 5, low=1, high=10_000)
        out = (await model.infer([_pixels(model, input_data)]))[0]
        probs = softmax(out["logits"])
        order = np.argsort(-probs)[:top_k]
        labels = [
            {
                "label": model.labels[i] if i < len(model.labels) else f"LABEL_{i}",
                "score": float(probs[i]),
            }
            for i in order.tolist()
        ]
        return {"label": labels[0]["label"], "score": labels[0]["score"], "labels": labels}
