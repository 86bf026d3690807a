"""audio_classification: a WAV in, speech or non-speech out (voice activity, silero-vad).

The audio is mixed to mono and resampled to 16 kHz; the graph reads 512-sample frames (32 ms)
with the 64 samples before each as context and carries its recurrent state from frame to
frame, giving a speech probability per frame. Frames at or above ``threshold`` (0.5) are
speech; runs of them at least ``min_speech_seconds`` (0.25) long are speech segments.

Input ``{"audio": "<base64 or data URL of a PCM WAV>"}``. Result: ``{"label": "speech" |
"non_speech", "score", "labels": [{"label", "score"}] (best first), "speech_ratio",
"segments": [{"start", "end"}] (seconds), "duration_seconds"}``; a label's score is the
share of the audio it covers.

A Hugging Face audio classifier exported by optimum (family ``audio-classification``) is run
instead when the model is one: the audio is mixed to mono and resampled to its feature
extractor's ``sampling_rate``, then made into the graph's ``input_values`` as
``preprocessor_config.json``'s extractor would: for Wav2Vec2, HuBERT and WavLM
(``Wav2Vec2FeatureExtractor``) the raw waveform, brought to zero mean and unit variance when
it says ``do_normalize``; for the Audio Spectrogram Transformer (``ASTFeatureExtractor``) a
Kaldi-style log-mel filterbank of ``max_length`` frames (``taskorch.inference.pipelines.
ast_features``; longer audio is truncated, as the extractor does). The class logits go through
a softmax. Parameter ``top_k`` (5). Result, as Hugging Face's pipeline: ``{"label", "score",
"labels": [{"label", "score"}]}``, best first, labels from ``config.json``'s ``id2label``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.pipelines.ast_features import ASTFeatures
from taskorch.inference.pipelines.base import OnText, param_float, param_int
from taskorch.inference.pipelines.media import decode_wav, media_bytes, resample
from taskorch.inference.runtime import LoadedModel
from taskorch.inference.task_types import ModelFamily

RATE = 16_000
FRAME = 512
CONTEXT = 64
MAX_SECONDS = 600.0


def speech_probabilities(model: LoadedModel, samples: npt.NDArray[np.float32]) -> list[float]:
    """The speech probability of every 32 ms frame (blocking; run it on a thread)."""
    session = model.session
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros(CONTEXT, dtype=np.float32)
    rate = np.array(RATE, dtype=np.int64)
    padded = np.concatenate([samples, np.zeros((-samples.size) % FRAME, dtype=np.float32)])
    probs: list[float] = []
    for start in range(0, padded.size, FRAME):
        frame = padded[start : start + FRAME]
        x = np.concatenate([context, frame])[np.newaxis]
        out = session.run({"input": x, "state": state, "sr": rate})
        probs.append(float(np.asarray(out["output"]).reshape(-1)[0]))
        state = np.asarray(out["stateN"], dtype=np.float32)
        context = frame[-CONTEXT:]
    return probs


def classify(
    probs: list[float], threshold: float, min_speech_seconds: float, duration: float
) -> dict[str, Any]:
    """The label, scores and speech segments from the frames' probabilities."""
    seconds = FRAME / RATE
    segments: list[dict[str, float]] = []
    start: int | None = None
    for i, p in enumerate([*probs, 0.0]):
        if p >= threshold and start is None:
            start = i
        elif p < threshold and start is not None:
            if (i - start) * seconds >= min_speech_seconds:
                segments.append(
                    {
                        "start": round(start * seconds, 3),
                        "end": round(min(i * seconds, duration), 3),
                    }
                )
            start = None
    speech = sum(s["end"] - s["start"] for s in segments)
    ratio = round(speech / duration, 6) if duration > 0 else 0.0
    labels = sorted(
        [
            {"label": "speech", "score": ratio},
            {"label": "non_speech", "score": round(1 - ratio, 6)},
        ],
        key=lambda item: -float(item["score"]),  # type: ignore[arg-type]
    )
    label = "speech" if segments else "non_speech"
    score = ratio if segments else round(1 - ratio, 6)
    return {
        "label": label,
        "score": score,
        "labels": labels,
        "speech_ratio": ratio,
        "segments": segments,
        "duration_seconds": round(duration, 3),
    }


# The feature extractors whose input_values this module reproduces.
WAVEFORM_EXTRACTOR = "Wav2Vec2FeatureExtractor"
AST_EXTRACTOR = "ASTFeatureExtractor"
AST_MODEL_TYPE = "audio-spectrogram-transformer"


@dataclass(frozen=True)
class WaveformFeatures:
    """A ``Wav2Vec2FeatureExtractor``'s settings: the raw waveform is the input."""

    sampling_rate: int = RATE
    do_normalize: bool = True

    def input_values(self, waveform: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return normalise(waveform) if self.do_normalize else waveform


AudioFeatures: TypeAlias = WaveformFeatures | ASTFeatures


def audio_features(folder: Path) -> AudioFeatures:
    """How a Hugging Face audio classifier's input is made, from the extractor named in the
    folder's ``preprocessor_config.json`` (``config.json``'s ``model_type`` when it names
    none); the raw waveform when the folder has no such file.

    Raises:
        InvalidArgument: the extractor is one this module does not reproduce.
    """
    settings = _json(folder / "preprocessor_config.json")
    kind = settings.get("feature_extractor_type")
    if kind is None and _json(folder / "config.json").get("model_type") == AST_MODEL_TYPE:
        kind = AST_EXTRACTOR
    if kind == AST_EXTRACTOR:
        return ASTFeatures.from_settings(settings)
    if kind not in (None, WAVEFORM_EXTRACTOR):
        raise InvalidArgument(
            f"{folder.name}: feature extractor {kind} is not supported for audio "
            f"classification (supported: {WAVEFORM_EXTRACTOR}, {AST_EXTRACTOR})",
            field="src",
        )
    return WaveformFeatures(
        sampling_rate=int(settings.get("sampling_rate", RATE)),
        do_normalize=bool(settings.get("do_normalize", True)),
    )


def _json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    loaded = json.loads(file.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def normalise(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero mean, unit variance, as ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``."""
    values = samples.astype(np.float64)
    normalised: npt.NDArray[np.float32] = (
        (values - values.mean()) / np.sqrt(values.var() + 1e-7)
    ).astype(np.float32)
    return normalised


def softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    shifted: npt.NDArray[np.float64] = np.exp(logits.astype(np.float64) - logits.max())
    probs: npt.NDArray[np.float64] = shifted / shifted.sum()
    return probs


def classify_waveform(
    model: LoadedModel, features: AudioFeatures, waveform: npt.NDArray[np.float32], top_k: int
) -> dict[str, Any]:
    """Hugging Face's audio-classification result (blocking; run it on a thread)."""
    values = features.input_values(waveform)
    out = model.session.run({"input_values": values[np.newaxis]})
    probs = softmax(np.asarray(out["logits"]).reshape(-1))
    labels = model.labels
    order = sorted(range(probs.size), key=lambda i: (-float(probs[i]), i))[:top_k]
    ranked = [
        {"label": labels[i] if i < len(labels) else f"LABEL_{i}", "score": float(probs[i])}
        for i in order
    ]
    return {"label": ranked[0]["label"], "score": ranked[0]["score"], "labels": ranked}


def _audio(input_data: Mapping[str, Any], rate: int = RATE) -> npt.NDArray[np.float32]:
    data, field = media_bytes(input_data, "audio")
    samples, source_rate = decode_wav(data, field)
    if samples.size == 0:
        raise InvalidArgument("audio has no samples", field=field)
    if samples.size / source_rate > MAX_SECONDS:
        raise InvalidArgument(f"audio is longer than {MAX_SECONDS:.0f} seconds", field=field)
    return resample(samples, source_rate, rate)


def _params(parameters: Mapping[str, Any]) -> tuple[float, float]:
    return (
        param_float(parameters, "threshold", 0.5, low=0.0, high=1.0),
        param_float(parameters, "min_speech_seconds", 0.25, low=0.0, high=60.0),
    )


def _top_k(parameters: Mapping[str, Any]) -> int:
    return param_int(parameters, "top_k", 5, low=1, high=1000)


class AudioClassification:
    """Tell speech from non-speech, or classify audio with a Hugging Face export."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        _audio(input_data)
        if model.config.family is ModelFamily.AUDIO_CLASSIFICATION:
            _top_k(parameters)
        else:
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
        if model.config.family is ModelFamily.AUDIO_CLASSIFICATION:
            top_k = _top_k(parameters)
            features = audio_features(model.path)
            waveform = _audio(input_data, features.sampling_rate)
            return await asyncio.to_thread(classify_waveform, model, features, waveform, top_k)
        samples = _audio(input_data)
        threshold, min_speech = _params(parameters)
        probs = await asyncio.to_thread(speech_probabilities, model, samples)
        return classify(probs, threshold, min_speech, samples.size / RATE)
