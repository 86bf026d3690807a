"""image_to_text (OCR): an image in, its text lines with boxes and confidences out; or its
caption, from an image captioner (``taskorch.inference.pipelines.image_captioning``), as the
model's family says.

Runs PaddleOCR's (PP-OCR) graphs in our own sessions: the detection graph gives a text
probability map, turned into boxes by DB post-processing written here with numpy (threshold,
connected regions, box score, the box grown by area * unclip_ratio / perimeter); each box is
cropped, resized to the recognition graph's height and decoded by CTC (best path, repeats and
blanks removed) with the dictionary the graph carries in its metadata (or ``files.dict``).
Boxes are axis-aligned: text is read as upright and horizontal (the angle classifier is not
used).

Input ``{"image": "<base64 or data URL>"}``; parameters ``box_threshold`` (0.5),
``text_threshold`` (0.5, lines read with less confidence are left out). Result: ``{"text",
"confidence", "lines": [{"text", "confidence", "box": [[x, y] x 4, clockwise from top left]}]}``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.pipelines.base import OnText, param_float
from taskorch.inference.pipelines.image_captioning import caption, caption_settings
from taskorch.inference.pipelines.media import decode_image, media_bytes
from taskorch.inference.runtime import LoadedModel
from taskorch.inference.task_types import ModelFamily

Array = npt.NDArray[Any]

DET_LIMIT_SIDE = 736  # the shorter side is scaled up to this (PP-OCR's "min" limit)
DET_MAX_SIDE = 2400  # ... and the longer one down to at most this
BINARY_THRESHOLD = 0.3
UNCLIP_RATIO = 1.6
MIN_BOX_SIDE = 3
REC_HEIGHT = 48
REC_MIN_WIDTH = 320
REC_BATCH = 6
MAX_PIXELS = 40_000_000


def _regions(
    mask: npt.NDArray[np.bool_],
) -> list[tuple[int, int, int, int, list[tuple[int, int, int]]]]:
    """Connected regions (8-connected) of a binary map, from runs of each row joined to the
    overlapping runs of the row above (union-find over runs, so the work is per run, not per
    pixel). Returns each region's bounding box (x0, y0, x1, y1) and runs (row, start, end)."""
    runs: list[tuple[int, int, int]] = []
    row_start: list[int] = []
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    for y in range(mask.shape[0]):
        row_start.append(len(runs))
        starts = np.flatnonzero(edges[y] == 1)
        ends = np.flatnonzero(edges[y] == -1)
        runs.extend((y, int(s), int(e)) for s, e in zip(starts, ends, strict=True))
    row_start.append(len(runs))
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for y in range(1, mask.shape[0]):
        above = range(row_start[y - 1], row_start[y])
        j0 = row_start[y - 1]
        for i in range(row_start[y], row_start[y + 1]):
            _, s, e = runs[i]
            for j in range(j0, above.stop):
                _, ps, pe = runs[j]
                if pe < s:  # entirely left (8-connected: touching diagonally counts)
                    j0 = j + 1
                    continue
                if ps > e:
                    break
                a, b = find(i), find(j)
                if a != b:
                    parent[a] = b
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(find(i), []).append(run)
    regions = []
    for members in groups.values():
        ys = [r[0] for r in members]
        regions.append(
            (min(r[1] for r in members), min(ys), max(r[2] for r in members), max(ys) + 1, members)
        )
    return regions


def detect(
    model: LoadedModel, bgr: npt.NDArray[np.uint8], box_threshold: float
) -> list[tuple[float, float, float, float]]:
    """Text boxes (x0, y0, x1, y1) in the image's pixels, top to bottom, left to right."""
    from PIL import Image

    h, w = bgr.shape[:2]
    ratio = DET_LIMIT_SIDE / min(h, w) if min(h, w) < DET_LIMIT_SIDE else 1.0
    ratio = min(ratio, DET_MAX_SIDE / max(h, w)) if max(h, w) * ratio > DET_MAX_SIDE else ratio
    rh = max(32, round(h * ratio / 32) * 32)
    rw = max(32, round(w * ratio / 32) * 32)
    resized = np.asarray(Image.fromarray(bgr).resize((rw, rh), Image.Resampling.BILINEAR))
    x = (resized.astype(np.float32) / 255.0 - 0.5) / 0.5
    feed = {model.session.input_names[0]: x.transpose(2, 0, 1)[np.newaxis]}
    prob = next(iter(model.session.run(feed).values()))[0, 0]
    mask = prob > BINARY_THRESHOLD
    dilated = mask.copy()  # PP-OCR dilates with a 2x2 kernel
    dilated[1:, :] |= mask[:-1, :]
    dilated[:, 1:] |= mask[:, :-1]
    dilated[1:, 1:] |= mask[:-1, :-1]
    sx, sy = w / rw, h / rh
    boxes: list[tuple[float, float, float, float]] = []
    for x0, y0, x1, y1, runs in _regions(dilated):
        bw, bh = x1 - x0, y1 - y0
        if min(bw, bh) < MIN_BOX_SIDE:
            continue
        score = float(np.mean(np.concatenate([prob[r, s:e] for r, s, e in runs])))
        if score < box_threshold:
            continue
        grow = bw * bh * UNCLIP_RATIO / (2 * (bw + bh))
        box = (
            max(0.0, (x0 - grow) * sx),
            max(0.0, (y0 - grow) * sy),
            min(float(w), (x1 + grow) * sx),
            min(float(h), (y1 + grow) * sy),
        )
        if box[2] - box[0] > MIN_BOX_SIDE and box[3] - box[1] > MIN_BOX_SIDE:
            boxes.append(box)
    boxes.sort(key=lambda b: (round(b[1] / 10), b[0]))
    return boxes


def dictionary(model: LoadedModel) -> list[str]:
    """The recognition graph's characters: CTC blank, the dictionary in its metadata, space."""
    chars = model.media.get("characters")
    if chars is None:
        file = model.config.file("dict")
        if file is not None:
            lines = (model.path / file).read_text(encoding="utf-8").splitlines()
        else:
            meta = model.extra_sessions["rec"].session.get_modelmeta().custom_metadata_map
            lines = meta["character"].splitlines()
        chars = ["", *lines, " "]
        model.media["characters"] = chars
    assert isinstance(chars, list)
    return chars


def recognize(model: LoadedModel, crops: list[npt.NDArray[np.uint8]]) -> list[tuple[str, float]]:
    """Each crop's text and confidence (mean probability of its characters)."""
    from PIL import Image

    chars = dictionary(model)
    session = model.extra_sessions["rec"]
    results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
    order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
    for start in range(0, len(order), REC_BATCH):
        batch = order[start : start + REC_BATCH]
        ratios = [crops[i].shape[1] / crops[i].shape[0] for i in batch]
        width = max(REC_MIN_WIDTH, int(REC_HEIGHT * max(ratios)))
        x = np.zeros((len(batch), 3, REC_HEIGHT, width), dtype=np.float32)
        for row, (i, ratio) in enumerate(zip(batch, ratios, strict=True)):
            rw = min(width, math.ceil(REC_HEIGHT * ratio))
            img = Image.fromarray(crops[i]).resize((rw, REC_HEIGHT), Image.Resampling.BILINEAR)
            x[row, :, :, :rw] = (np.asarray(img, dtype=np.float32) / 255.0 - 0.5).transpose(
                2, 0, 1
            ) / 0.5
        probs = next(iter(session.run({session.input_names[0]: x}).values()))
        best = probs.argmax(axis=2)
        confidence = probs.max(axis=2)
        for row, i in enumerate(batch):
            ids = best[row]
            keep = ids != 0
            keep[1:] &= ids[1:] != ids[:-1]
            text = "".join(chars[k] for k in ids[keep] if k < len(chars))
            score = float(confidence[row][keep].mean()) if keep.any() else 0.0
            results[i] = (text, score)
    return results


def read_image(
    model: LoadedModel, rgb: Any, box_threshold: float, text_threshold: float
) -> dict[str, Any]:
    """Detection then recognition of one image (blocking; run it on a thread)."""
    bgr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])
    boxes = detect(model, bgr, box_threshold)
    crops = [bgr[int(b[1]) : math.ceil(b[3]), int(b[0]) : math.ceil(b[2])] for b in boxes]
    read = recognize(model, crops) if crops else []
    lines = [
        {
            "text": text,
            "confidence": round(score, 6),
            "box": [
                [round(b[0], 1), round(b[1], 1)],
                [round(b[2], 1), round(b[1], 1)],
                [round(b[2], 1), round(b[3], 1)],
                [round(b[0], 1), round(b[3], 1)],
            ],
        }
        for b, (text, score) in zip(boxes, read, strict=True)
        if text.strip() and score >= text_threshold
    ]
    confidence = float(np.mean([line["confidence"] for line in lines])) if lines else 0.0
    return {
        "text": "\n".join(str(line["text"]) for line in lines),
        "confidence": round(confidence, 6),
        "lines": lines,
    }


def _image(input_data: Mapping[str, Any]) -> Any:
    data, field = media_bytes(input_data, "image")
    rgb = decode_image(data, field)
    if rgb.width * rgb.height > MAX_PIXELS:
        raise InvalidArgument(f"image has more than {MAX_PIXELS} pixels", field=field)
    return rgb


class ImageToText:
    """Read the text of an image, or caption it."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        _image(input_data)
        if model.config.family is ModelFamily.IMAGE_CAPTIONING:
            caption_settings(model, parameters)
            return
        param_float(parameters, "box_threshold", 0.5, low=0.0, high=1.0)
        param_float(parameters, "text_threshold", 0.5, low=0.0, high=1.0)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        rgb = _image(input_data)
        if model.config.family is ModelFamily.IMAGE_CAPTIONING:
            settings = caption_settings(model, parameters)
            return await caption(model, rgb, settings, on_output=on_output, cancel=cancel)
        box_threshold = param_float(parameters, "box_threshold", 0.5, low=0.0, high=1.0)
        text_threshold = param_float(parameters, "text_threshold", 0.5, low=0.0, high=1.0)
        return await asyncio.to_thread(read_image, model, rgb, box_threshold, text_threshold)
