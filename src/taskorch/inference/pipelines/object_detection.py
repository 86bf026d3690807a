"""object_detection: an image in, labelled boxes out, from a DETR-style graph (DETR, YOLOS,
Table Transformer exported by optimum as ``object-detection``).

The model folder's own image processor (``preprocessor_config.json``: ``DetrImageProcessor``
for DETR and Table Transformer, ``YolosImageProcessor`` for YOLOS, which rounds the resized
image down to multiples of 16 pixels) makes ``pixel_values``; the graph takes any size.

The graph answers, per query, class logits whose last class is "no object" and a box as
normalised (center x, center y, width, height). As transformers'
``post_process_object_detection`` does: softmax over the classes, the best real class and its
probability, the box turned into corners and scaled to the image's pixels.

Input ``{"image": "<base64 or data URL>"}``; parameters ``threshold`` (0.5: the least score
kept) and ``top_k`` (100). Result: ``{"objects": [{"label", "score", "box": {"xmin", "ymin",
"xmax", "ymax"}}]}``, best first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np

from taskorch.inference.pipelines.base import OnText, param_float, param_int, softmax
from taskorch.inference.pipelines.media import decode_image, media_bytes
from taskorch.inference.runtime import LoadedModel


def detect_objects(
    model: LoadedModel, rgb: Any, threshold: float, top_k: int
) -> list[dict[str, Any]]:
    """The image's objects, best first (blocking; run it on a thread)."""
    encoded = model.image_processor(images=[rgb], return_tensors="np")
    feed = {
        name: np.asarray(encoded[name], dtype=np.float32 if name == "pixel_values" else np.int64)
        for name in model.session.input_names
        if name in encoded
    }
    out = model.session.run(feed)
    probs = softmax(out["logits"][0])[:, :-1]  # the last class is "no object"
    labels = probs.argmax(-1)
    scores = probs.max(-1)
    cx, cy, w, h = (out["pred_boxes"][0].astype(np.float64)[:, i] for i in range(4))
    width, height = rgb.size
    corners = np.stack(
        [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
        axis=-1,
    )
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold][:top_k]
    return [
        {
            "label": model.labels[labels[i]]
            if labels[i] < len(model.labels)
            else f"LABEL_{labels[i]}",
            "score": float(scores[i]),
            "box": dict(
                zip(("xmin", "ymin", "xmax", "ymax"), (float(v) for v in corners[i]), strict=True)
            ),
        }
        for i in order
    ]


def _params(parameters: Mapping[str, Any]) -> tuple[float, int]:
    return (
        param_float(parameters, "threshold", 0.5, low=0.0, high=1.0),
        param_int(parameters, "top_k", 100, low=1, high=10_000),
    )


class ObjectDetection:
    """Find the objects of an image."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        media_bytes(input_data, "image")
        _params(parameters)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        data, field = media_bytes(input_data, "image")
        rgb = decode_image(data, field)
        threshold, top_k = _params(parameters)
        objects = await asyncio.to_thread(detect_objects, model, rgb, threshold, top_k)
        return {"objects": objects}
