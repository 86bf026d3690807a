"""image_segmentation: an image in, the labels it holds out, each with its mask as a PNG artifact.

For semantic-segmentation graphs exported by optimum (SegFormer, DPT, BEiT, ...): the graph
answers class logits per pixel of a reduced grid. As transformers'
``post_process_semantic_segmentation`` does: the logits are resized bilinearly
(``align_corners=False``) to the image's size, and each pixel takes its best class. Our own
numpy code, no torch.

Input ``{"image": "<base64 or data URL>"}``; parameter ``top_k`` (16, at most 16: one artifact
per label): the labels covering most pixels are kept. Result: ``{"segments": [{"label",
"score", "pixels", "mask"}], "width", "height", "artifacts": [...]}``, largest first; ``score``
is the mean probability of the label over its pixels, ``mask`` the name of its PNG artifact
(8-bit grayscale, 255 on the label's pixels, 0 elsewhere, the image's size), served at
``GET /v1/tasks/{task_id}/artifacts/{mask}``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.artifacts import MAX_ARTIFACTS, Artifact
from taskorch.domain.errors import InvalidArgument
from taskorch.inference.pipelines.base import OnText, param_int
from taskorch.inference.pipelines.media import decode_image, media_bytes
from taskorch.inference.runtime import LoadedModel

# The largest image taken (its label map is 8 bytes a pixel); the resized logits are built a
# band of rows at a time, at most BAND_BYTES each (150 classes x 4096 columns: 13 rows).
MAX_PIXELS = 4096 * 4096
BAND_BYTES = 64 << 20


def resize_weights(size_in: int, size_out: int) -> npt.NDArray[np.float64]:
    """The (size_out, size_in) matrix of 1-D bilinear resizing with ``align_corners=False``
    (PyTorch's ``interpolate(mode="bilinear")``: half-pixel centres, clamped at the edges)."""
    scale = size_in / size_out
    src = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = src - low
    weights = np.zeros((size_out, size_in), dtype=np.float64)
    rows = np.arange(size_out)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def segment(
    logits: npt.NDArray[Any], width: int, height: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each pixel's class and that class's probability, at the image's size.

    Args:
        logits: (classes, h, w) of the graph.
        width: the image's width.
        height: the image's height.
    """
    classes, h, w = logits.shape
    wy = resize_weights(h, height)
    # Columns first, once: (C, h, w) -> (C, h, W); then each band of rows: (C, band, W).
    wide = np.einsum("chw,Xw->chX", logits.astype(np.float64), resize_weights(w, width))
    labels = np.empty((height, width), dtype=np.int64)
    probability = np.empty((height, width), dtype=np.float64)
    band = max(1, BAND_BYTES // (8 * classes * width))
    for top in range(0, height, band):
        resized = np.einsum("Yh,chX->cYX", wy[top : top + band], wide)
        best_class = resized.argmax(axis=0)
        best = np.take_along_axis(resized, best_class[None], axis=0)[0]
        labels[top : top + band] = best_class
        probability[top : top + band] = 1.0 / np.exp(resized - best[None]).sum(axis=0)
    return labels, probability


def mask_png(mask: npt.NDArray[np.bool_]) -> bytes:
    """An 8-bit grayscale PNG: 255 where ``mask`` holds, 0 elsewhere."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(out, "PNG")
    return out.getvalue()


def segments_of(
    model: LoadedModel,
    labels: npt.NDArray[np.int64],
    probability: npt.NDArray[np.float64],
    top_k: int,
) -> tuple[list[dict[str, Any]], list[Artifact]]:
    """The labels present, largest first, each with its mask artifact."""
    ids, counts = np.unique(labels, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-int(counts[i]), int(ids[i])))[:top_k]
    segments: list[dict[str, Any]] = []
    artifacts: list[Artifact] = []
    for i in order:
        label_id = int(ids[i])
        mask = labels == label_id
        name = f"mask_{label_id}.png"
        artifacts.append(Artifact(name, "image/png", mask_png(mask)))
        segments.append(
            {
                "label": model.labels[label_id]
                if label_id < len(model.labels)
                else f"LABEL_{label_id}",
                "score": float(probability[mask].mean()),
                "pixels": int(counts[i]),
                "mask": name,
            }
        )
    return segments, artifacts


def _top_k(parameters: Mapping[str, Any]) -> int:
    return param_int(parameters, "top_k", MAX_ARTIFACTS, low=1, high=MAX_ARTIFACTS)


class ImageSegmentation:
    """Label every pixel of an image."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        media_bytes(input_data, "image")
        _top_k(parameters)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        top_k = _top_k(parameters)
        data, field = media_bytes(input_data, "image")
        rgb = decode_image(data, field)
        width, height = rgb.size
        if width * height > MAX_PIXELS:
            raise InvalidArgument(
                f"image is {width}x{height}; image_segmentation takes at most {MAX_PIXELS} pixels",
                field=field,
            )
        pixels = model.image_processor(images=[rgb], return_tensors="np")["pixel_values"][0]
        out = (await model.infer([{"pixel_values": np.asarray(pixels, dtype=np.float32)}]))[0]

        def post_process() -> tuple[list[dict[str, Any]], list[Artifact]]:
            labels, probability = segment(out["logits"], width, height)
            return segments_of(model, labels, probability, top_k)

        segments, artifacts = await asyncio.to_thread(post_process)
        return {
            "segments": segments,
            "width": width,
            "height": height,
            "artifacts": [a.to_transport() for a in artifacts],
        }
