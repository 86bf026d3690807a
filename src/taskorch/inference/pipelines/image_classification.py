"""image_classification: a base64 image in, labels with scores out.

Input ``{"image": "<base64>"}`` (or ``inputs``; a ``data:image/...;base64,`` prefix is
accepted); parameter ``top_k`` (default 5). Result: ``{"label", "score", "labels": [{"label",
"score"}, ...]}`` (best first).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from taskorch.core.errors import InvalidArgument
from taskorch.inference.pipelines.base import OnText, param_int, softmax
from taskorch.inference.runtime import Feed, LoadedModel

MAX_IMAGE_BYTES = 20 * 1024 * 1024


def _image_bytes(input_data: Mapping[str, Any]) -> tuple[bytes, str]:
    key = "image" if "image" in input_data else "inputs"
    field = f"input_data.{key}"
    value = input_data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidArgument("image must be a base64-encoded image", field=field)
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidArgument(f"image is larger than {MAX_IMAGE_BYTES} bytes", field=field)
    try:
        return base64.b64decode(value, validate=True), field
    except (binascii.Error, ValueError):
        raise InvalidArgument("image is not valid base64", field=field) from None


def _pixels(model: LoadedModel, input_data: Mapping[str, Any]) -> Feed:
    from PIL import Image, UnidentifiedImageError

    data, field = _image_bytes(input_data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise InvalidArgument("image could not be decoded (PNG, JPEG, ...)", field=field) from None
    pixels = model.image_processor(images=[rgb], return_tensors="np")["pixel_values"][0]
    return {"pixel_values": np.asarray(pixels, dtype=np.float32)}


class ImageClassification:
    """Classify one image."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        _image_bytes(input_data)
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
