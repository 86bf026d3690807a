"""automatic_speech_recognition: a WAV in, its text out, from a Whisper model exported by optimum.

The audio is mixed to mono and resampled to the model's rate (16 kHz), cut into windows of the
model's length (30 s), and each window's log-mel features (the model's own
``WhisperFeatureExtractor``, numpy) go through the encoder graph; the merged decoder graph then
generates the window's text greedily from Whisper's prompt: start of transcript, then (for a
multilingual model) the language and task tokens, then no-timestamps. The generation config's
``suppress_tokens`` and ``begin_suppress_tokens`` are applied as transformers applies them.

Input ``{"audio": "<base64 or data URL of a PCM WAV>"}``; parameters ``language`` (a
multilingual model's language code, ``en`` by default), ``task`` (``transcribe`` or
``translate``) and ``max_new_tokens`` (per window). Result: ``{"text", "chunks": [{"text",
"start", "end"}], "duration_seconds", "tokens_generated", "finish_reason"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.generation import GenerationSettings
from taskorch.inference.pipelines.base import OnText, param_int
from taskorch.inference.pipelines.media import decode_wav, media_bytes, resample
from taskorch.inference.runtime import LoadedModel
from taskorch.inference.sampling import SamplingSettings


def decoder_prompt(model: LoadedModel, parameters: Mapping[str, Any]) -> list[int]:
    """Whisper's first decoder tokens for the request.

    Raises:
        InvalidArgument: an unknown language or task (the parameter is named).
    """
    gen = model.generation_config()
    start = gen.get("decoder_start_token_id", model.hf_config.get("decoder_start_token_id"))
    if not isinstance(start, int):
        raise InvalidArgument(f"model {model.name!r} has no decoder_start_token_id", field="model")
    prompt = [start]
    language = parameters.get("language")
    task = parameters.get("task")
    lang_to_id = gen.get("lang_to_id") or {}
    task_to_id = gen.get("task_to_id") or {}
    if gen.get("is_multilingual") and lang_to_id:
        code = "en" if language is None else language
        token = code if isinstance(code, str) and code.startswith("<|") else f"<|{code}|>"
        if not isinstance(code, str) or token not in lang_to_id:
            raise InvalidArgument(
                f"language {code!r} is not one of the model's ({len(lang_to_id)} languages, "
                "e.g. en, fr, de)",
                field="parameters.language",
            )
        prompt.append(int(lang_to_id[token]))
        name = "transcribe" if task is None else task
        if name not in task_to_id:
            raise InvalidArgument("task must be transcribe or translate", field="parameters.task")
        prompt.append(int(task_to_id[name]))
    else:
        if language not in (None, "en", "english"):
            raise InvalidArgument(
                f"model {model.name!r} is English-only: language must be en",
                field="parameters.language",
            )
        if task not in (None, "transcribe"):
            raise InvalidArgument(f"model {model.name!r} only transcribes", field="parameters.task")
    no_timestamps = gen.get("no_timestamps_token_id")
    if isinstance(no_timestamps, int):
        prompt.append(no_timestamps)
    return prompt


def _settings(
    model: LoadedModel, parameters: Mapping[str, Any], prompt: list[int]
) -> GenerationSettings:
    room = max(1, model.config.max_input_length - len(prompt))
    default = min(model.config.max_new_tokens, room)
    tokens = param_int(parameters, "max_new_tokens", default, low=1, high=room)
    return GenerationSettings(max_new_tokens=tokens, sampling=SamplingSettings())


def windows(
    samples: npt.NDArray[np.float32], rate: int, seconds: float
) -> list[tuple[float, npt.NDArray[np.float32]]]:
    """Consecutive windows of at most ``seconds`` (the last one shorter), with their start."""
    size = max(1, int(rate * seconds))
    return [
        (start / rate, samples[start : start + size])
        for start in range(0, max(1, samples.size), size)
    ]


def log_mel(extractor: Any, piece: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    """A window's log-mel features, padded to the model's window, batch of one."""
    features = extractor(piece, sampling_rate=rate, return_tensors="np")["input_features"]
    return np.asarray(features, dtype=np.float32)


class SpeechRecognition:
    """Transcribe a WAV with a Whisper-style speech seq2seq model."""

    def _prepare(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> tuple[npt.NDArray[np.float32], list[int], GenerationSettings]:
        data, field = media_bytes(input_data, "audio")
        samples, rate = decode_wav(data, field)
        if samples.size == 0:
            raise InvalidArgument("audio holds no samples", field=field)
        prompt = decoder_prompt(model, parameters)
        settings = _settings(model, parameters, prompt)
        target = int(model.feature_extractor.sampling_rate)
        return resample(samples, rate, target), prompt, settings

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        self._prepare(model, input_data, parameters)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        samples, prompt, settings = await asyncio.to_thread(
            self._prepare, model, input_data, parameters
        )
        extractor = model.feature_extractor
        rate = int(extractor.sampling_rate)
        window = float(extractor.chunk_length)
        assert model.seq2seq is not None
        chunks: list[dict[str, Any]] = []
        tokens = 0
        finish_reason = "eos"
        for start, piece in windows(samples, rate, window):
            features = await asyncio.to_thread(log_mel, extractor, piece, rate)
            outcome = await model.seq2seq.generate(
                prompt,
                settings,
                on_output=on_output,
                cancel=cancel,
                encoder_feed={"input_features": features},
            )
            tokens += outcome.tokens_generated
            chunks.append(
                {
                    "text": outcome.text.strip(),
                    "start": round(start, 3),
                    "end": round(start + piece.size / rate, 3),
                }
            )
            if outcome.finish_reason != "eos":
                finish_reason = outcome.finish_reason
            if outcome.finish_reason == "cancelled":
                break
        return {
            "text": " ".join(c["text"] for c in chunks if c["text"]),
            "chunks": chunks,
            "duration_seconds": round(samples.size / rate, 3),
            "tokens_generated": tokens,
            "finish_reason": finish_reason,
        }
