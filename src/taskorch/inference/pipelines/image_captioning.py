"""image_to_text by captioning: a Hugging Face ``VisionEncoderDecoderModel`` (ViT + GPT2, ...)
exported by optimum (``image-to-text-with-past``), family ``image-captioning``.

The image goes through the model's own image processor (``preprocessor_config.json``,
transformers' slow processor, as the image families use) into ``pixel_values``; the encoder
graph runs once on them and the merged decoder graph generates the caption from the config's
``decoder_start_token_id`` with the seq2seq generator every encoder-decoder family shares
(greedy unless the request samples; a folder's beam search or ``no_repeat_ngram_size`` is not
applied). The text is the tokens decoded with special tokens skipped, as Hugging Face's
image-to-text pipeline gives it (not stripped), and the concatenation of the streamed deltas.

Parameters as text_generation's: ``max_new_tokens`` (default the model's ``max_new_tokens``,
at most the decoder's positions less the start token) or ``max_length`` (the start token
plus the new ones, as transformers counts it for encoder-decoder models), ``do_sample``,
``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``, ``seed``, ``stop``. Result:
``{"text", "generated_text" (the same), "tokens_generated", "finish_reason"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.inference.generation import GenerationSettings
from taskorch.inference.pipelines.base import OnText
from taskorch.inference.pipelines.text_generation import generation_settings
from taskorch.inference.runtime import LoadedModel


def caption_settings(model: LoadedModel, parameters: Mapping[str, Any]) -> GenerationSettings:
    """The request's generation settings, the new tokens bounded by the decoder's positions.

    Raises:
        InvalidArgument: a parameter is out of range (the parameter is named).
    """
    room = max(1, model.config.max_input_length - 1)  # the start token takes one position
    settings, max_length = generation_settings(
        parameters,
        default_new_tokens=min(model.config.max_new_tokens, room),
        context_window=room + 1,
    )
    if max_length is not None:
        settings = dataclasses.replace(settings, max_new_tokens=max(1, max_length - 1))
    return settings


def pixel_values(model: LoadedModel, rgb: Any) -> npt.NDArray[np.float32]:
    """The encoder's input for one RGB image (batch of one), from the model's image processor."""
    pixels = model.image_processor(images=[rgb], return_tensors="np")["pixel_values"]
    return np.asarray(pixels, dtype=np.float32)


async def caption(
    model: LoadedModel,
    rgb: Any,
    settings: GenerationSettings,
    *,
    on_output: OnText | None,
    cancel: asyncio.Event | None,
) -> dict[str, Any]:
    """Caption one image, streaming the text to ``on_output`` as it is generated."""
    assert model.seq2seq is not None, f"{model.name} is not an encoder-decoder model"
    pixels = await asyncio.to_thread(pixel_values, model, rgb)
    outcome = await model.seq2seq.generate(
        [model.seq2seq.decoder_start_id],
        settings,
        on_output=on_output,
        cancel=cancel,
        encoder_feed={"pixel_values": pixels},
    )
    return {
        "text": outcome.text,
        "generated_text": outcome.text,
        "tokens_generated": outcome.tokens_generated,
        "finish_reason": outcome.finish_reason,
    }
