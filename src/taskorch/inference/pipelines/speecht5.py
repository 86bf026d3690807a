"""text_to_speech with a Hugging Face SpeechT5 model (``SpeechT5ForTextToSpeech`` and its
``SpeechT5HifiGan`` vocoder) exported by optimum, run by our own autoregressive loop.

The import (``taskorch.inference.export``) leaves three graphs in the model folder: the text
encoder (``encoder_model.onnx``: ``input_ids`` -> ``encoder_outputs``,
``encoder_attention_mask``), the merged decoder (``decoder_model_merged.onnx``: one step from
the mel frames so far, the speaker embedding and the key/value cache to the next
``reduction_factor`` frames and a stop probability per frame) and the speech postnet with the
vocoder (``decoder_postnet_and_vocoder.onnx``: the whole spectrogram -> ``waveform``).

``generate_speech`` is transformers' ``_generate_speech`` for one text in numpy: encode once;
start from one all-zero mel frame; run the decoder step by step with its cache, appending its
last frame to the sequence it is fed; stop after step ``minlen`` once the frame probabilities
of a step sum to at least ``threshold``, or at step ``maxlen`` (``maxlen`` and ``minlen`` are
the encoder length times ``maxlenratio`` / ``minlenratio`` over ``reduction_factor``, as in
transformers); then postnet + vocoder once over the whole spectrogram. Two bounds of ours on
top: ``max_speech_seconds`` (a request's cap) and the model's ``max_speech_positions`` (its
decoder cannot see further).

The decoder prenet applies dropout at inference too (Tacotron's design, kept by transformers
and by optimum's graph, which draws its mask inside): a model whose
``speech_decoder_prenet_dropout`` is not 0 (microsoft/speecht5_tts: 0.5) speaks a little
differently on every call, as ``SpeechT5ForTextToSpeech.generate_speech`` does.

Ids come from the model's own ``SpeechT5Tokenizer`` (sentencepiece, loaded through
transformers like the text families' tokenizers); the speaker is a ``speaker_embedding_dim``
(512) x-vector: ``parameters.speaker_embedding`` or the model's default
(``speaker_embedding.npy``, written at import: the source folder's, else all zeros).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InternalError, InvalidArgument
from taskorch.inference.pipelines.base import param_float
from taskorch.inference.types import TensorInfo

FloatArray = npt.NDArray[np.float32]

DECODER = "decoder"  # files roles in model.yaml
POSTNET_VOCODER = "postnet_vocoder"
SPEAKER_EMBEDDING = "speaker_embedding"
VOCODER_CONFIG = "vocoder_config"
SPEAKER_FIELD = "parameters.speaker_embedding"
MAX_SPEECH_SECONDS = 600.0
UNBOUNDED = 1 << 30


class GraphRunner(Protocol):
    """What the loop needs of a graph: ``taskorch.inference.sessions.ModelSession``."""

    input_names: tuple[str, ...]
    inputs: tuple[TensorInfo, ...]

    def run(
        self, feed: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[Any]]: ...


@dataclass(frozen=True)
class Decoding:
    """When the loop stops (transformers' ``generate_speech`` arguments, and our caps)."""

    threshold: float = 0.5
    minlenratio: float = 0.0
    maxlenratio: float = 20.0
    max_steps: int | None = None  # None: only the model's own bound


@dataclass(frozen=True)
class Speech:
    """One generated utterance."""

    waveform: FloatArray
    steps: int  # decoder steps run (each gives ``reduction_factor`` mel frames)
    stopped: bool  # the stop probability ended it (not a length bound)
    cancelled: bool = False  # ``cancelled`` said so between two steps: no waveform


def generate_speech(
    encoder: GraphRunner,
    decoder: GraphRunner,
    postnet_vocoder: GraphRunner,
    ids: Sequence[int],
    speaker_embedding: FloatArray,
    *,
    reduction_factor: int,
    decoding: Decoding,
    max_positions: int | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Speech:
    """The waveform of one id sequence (see the module docstring for the loop).

    Args:
        encoder: the text encoder graph.
        decoder: the merged decoder graph (one step, with its key/value cache).
        postnet_vocoder: the speech postnet + vocoder graph.
        ids: the tokenizer's ids (eos included).
        speaker_embedding: the x-vector (``speaker_embedding_dim`` numbers).
        reduction_factor: mel frames per decoder step (the model config's).
        decoding: the stop rule.
        max_positions: the decoder's ``max_speech_positions`` (steps it can see).
        cancelled: asked between steps; True ends the loop with no waveform.

    Returns:
        The waveform (float32, at the vocoder's rate), how many steps ran and why they ended.
    """
    enc = encoder.run(
        {"input_ids": np.asarray([list(ids)], dtype=np.int64)},
        ["encoder_outputs", "encoder_attention_mask"],
    )
    hidden = np.asarray(enc["encoder_outputs"], dtype=np.float32)
    mask = np.asarray(enc["encoder_attention_mask"], dtype=np.int64)
    length = hidden.shape[1]
    maxlen = int(length * decoding.maxlenratio / reduction_factor)
    minlen = int(length * decoding.minlenratio / reduction_factor)
    # Steps we may run whatever the ratios say: the request's cap, the decoder's positions.
    cap = min(decoding.max_steps or UNBOUNDED, max_positions or UNBOUNDED)
    mel_bins = _mel_bins(decoder)
    sequence = np.zeros((1, 1, mel_bins), dtype=np.float32)
    past: dict[str, npt.NDArray[Any]] = {}
    for item in _past_inputs(decoder):
        past[item] = np.zeros((1, _heads(decoder, item), 0, _head_dim(decoder, item)), np.float32)
    speaker = np.asarray(speaker_embedding, dtype=np.float32).reshape(1, -1)
    frames: list[FloatArray] = []
    step = 0
    stopped = False
    while True:
        if cancelled is not None and cancelled():
            return Speech(np.zeros(0, np.float32), step, False, cancelled=True)
        step += 1
        out = decoder.run(
            {
                "speaker_embeddings": speaker,
                "encoder_hidden_states": hidden,
                "encoder_attention_mask": mask,
                "output_sequence": sequence,
                "use_cache_branch": np.array([step > 1]),
                **past,
            }
        )
        spectrum = np.asarray(out["spectrum"], dtype=np.float32).reshape(reduction_factor, -1)
        frames.append(spectrum)
        sequence = np.asarray(out["output_sequence_out"], dtype=np.float32)
        for name, value in out.items():
            if not name.startswith("present."):
                continue
            key = "past_key_values." + name.removeprefix("present.")
            # The cross-attention cache is computed on the first step only (the cached branch
            # passes it through); keep the first one.
            if ".encoder." in name and step > 1:
                continue
            past[key] = value
        if step < minlen and step < cap:
            continue
        if step >= cap or step >= maxlen:
            break
        if float(np.sum(out["prob"])) >= decoding.threshold:
            stopped = True
            break
    spectrogram = np.concatenate(frames, axis=0)
    waveform = postnet_vocoder.run({"spectrogram": spectrogram}, ["waveform"])["waveform"]
    return Speech(np.asarray(waveform, dtype=np.float32).reshape(-1), step, stopped)


def _past_inputs(decoder: GraphRunner) -> list[str]:
    return [n for n in decoder.input_names if n.startswith("past_key_values.")]


def _input_shape(decoder: GraphRunner, name: str) -> tuple[int | str, ...]:
    for item in decoder.inputs:
        if item.name == name:
            return tuple(item.shape)
    raise InternalError(f"the SpeechT5 decoder graph has no input {name!r}")


def _heads(decoder: GraphRunner, name: str) -> int:
    return int(_input_shape(decoder, name)[1])


def _head_dim(decoder: GraphRunner, name: str) -> int:
    return int(_input_shape(decoder, name)[3])


def _mel_bins(decoder: GraphRunner) -> int:
    return int(_input_shape(decoder, "output_sequence")[2])


# --- request handling --------------------------------------------------------------------------


def speaker_embedding_of(
    parameters: Mapping[str, Any], default: FloatArray, size: int
) -> tuple[FloatArray, bool]:
    """The x-vector a request speaks with, and whether the request gave it.

    Raises:
        InvalidArgument: (``parameters.speaker_embedding``) not a list of ``size`` finite
            numbers.
    """
    value = parameters.get("speaker_embedding")
    if value is None:
        return default, False
    if not isinstance(value, list) or len(value) != size:
        got = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise InvalidArgument(
            f"speaker_embedding must be a list of {size} numbers (an x-vector), got {got}",
            field=SPEAKER_FIELD,
        )
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise InvalidArgument(
            f"speaker_embedding must hold {size} finite numbers", field=SPEAKER_FIELD
        )
    return np.asarray(value, dtype=np.float32), True


def decoding_of(
    parameters: Mapping[str, Any], *, reduction_factor: int, samples_per_step: int, rate: int
) -> Decoding:
    """The stop rule a request asks for (``threshold``, ``minlenratio``, ``maxlenratio``,
    ``max_speech_seconds``), checked."""
    seconds = parameters.get("max_speech_seconds")
    max_steps = None
    if seconds is not None:
        seconds = param_float(
            parameters, "max_speech_seconds", 0.0, low=0.001, high=MAX_SPEECH_SECONDS
        )
        max_steps = max(1, int(seconds * rate / samples_per_step))
    return Decoding(
        threshold=param_float(
            parameters, "threshold", 0.5, low=0.0, high=float(max(1, reduction_factor))
        ),
        minlenratio=param_float(parameters, "minlenratio", 0.0, low=0.0, high=100.0),
        maxlenratio=param_float(parameters, "maxlenratio", 20.0, low=0.0, high=100.0),
        max_steps=max_steps,
    )


@dataclass(frozen=True)
class SpeechRequest:
    """One checked request: what ``generate_speech`` is called with."""

    ids: list[int]
    speaker_embedding: FloatArray
    speaker_given: bool  # the request's x-vector, not the model's default
    decoding: Decoding


@dataclass(frozen=True)
class SpeechT5Voice:
    """What serving reads once from a SpeechT5 folder."""

    reduction_factor: int
    speaker_size: int
    default_speaker: FloatArray
    sample_rate: int
    samples_per_frame: int  # the vocoder's upsampling (product of its upsample_rates)
    max_positions: int | None  # the decoder's max_speech_positions
    max_text_positions: int | None

    @property
    def samples_per_step(self) -> int:
        return self.reduction_factor * self.samples_per_frame

    @classmethod
    def read(
        cls, path: Path, hf_config: Mapping[str, Any], files: Mapping[str, str]
    ) -> SpeechT5Voice:
        """From the folder's config.json, its vocoder's config and default speaker."""
        vocoder_file = files.get(VOCODER_CONFIG)
        vocoder: dict[str, Any] = {}
        if vocoder_file and (path / vocoder_file).exists():
            vocoder = json.loads((path / vocoder_file).read_text(encoding="utf-8"))
        size = int(hf_config.get("speaker_embedding_dim") or 512)
        speaker_file = files.get(SPEAKER_EMBEDDING)
        if speaker_file and (path / speaker_file).exists():
            speaker = np.asarray(np.load(path / speaker_file), dtype=np.float32).reshape(-1)
            if speaker.size != size:
                raise InternalError(
                    f"{path / speaker_file} holds {speaker.size} values, not {size}"
                )
        else:
            speaker = np.zeros(size, dtype=np.float32)
        rates = vocoder.get("upsample_rates") or [4, 4, 4, 4]
        positions = hf_config.get("max_speech_positions")
        text_positions = hf_config.get("max_text_positions")
        return cls(
            reduction_factor=int(hf_config.get("reduction_factor") or 2),
            speaker_size=size,
            default_speaker=speaker,
            sample_rate=int(
                vocoder.get("sampling_rate") or hf_config.get("sampling_rate") or 16000
            ),
            samples_per_frame=int(np.prod([int(r) for r in rates])),
            max_positions=int(positions) if positions else None,
            max_text_positions=int(text_positions) if text_positions else None,
        )
