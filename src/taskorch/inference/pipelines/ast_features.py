"""The Audio Spectrogram Transformer's input in numpy: ``ASTFeatureExtractor``'s numpy path.

transformers computes AST's features with torchaudio's Kaldi ``fbank`` when torchaudio is
installed and with its own numpy ``spectrogram`` otherwise; this is the numpy one, vectorised,
so serving needs neither torch nor transformers. Per waveform (mono, at the extractor's
``sampling_rate``): frames of 400 samples every 160 (25 ms / 10 ms at 16 kHz, the last partial
frame dropped), each with its mean removed, pre-emphasised (0.97) and multiplied by a symmetric
Hann window (the extractor's ``"hanning"``, not Kaldi's default Povey window), no dither; the
power spectrum of a 512-point FFT through ``num_mel_bins`` triangular filters laid out on the
Kaldi mel scale from 20 Hz to the Nyquist frequency; the natural log of each, floored at
float32's epsilon; zero-padded or truncated to ``max_length`` frames; then, with
``do_normalize``, ``(x - mean) / (std * 2)``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FRAME_LENGTH = 400
HOP_LENGTH = 160
FFT_LENGTH = 512
PREEMPHASIS = 0.97
MIN_FREQUENCY = 20.0
MEL_FLOOR = 1.192092955078125e-07  # float32's epsilon, as the extractor's mel_floor

# ASTFeatureExtractor's defaults (AudioSet's mean and standard deviation).
DEFAULTS: dict[str, Any] = {
    "sampling_rate": 16_000,
    "num_mel_bins": 128,
    "max_length": 1024,
    "do_normalize": True,
    "mean": -4.2677393,
    "std": 4.5689974,
}


@dataclass(frozen=True)
class ASTFeatures:
    """An ``ASTFeatureExtractor``'s settings (its ``preprocessor_config.json``)."""

    sampling_rate: int = 16_000
    num_mel_bins: int = 128
    max_length: int = 1024
    do_normalize: bool = True
    mean: float = -4.2677393
    std: float = 4.5689974

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ASTFeatures:
        """The settings of a ``preprocessor_config.json``, the extractor's defaults for the
        keys it leaves out."""
        merged = {**DEFAULTS, **{k: settings[k] for k in DEFAULTS if settings.get(k) is not None}}
        return cls(
            sampling_rate=int(merged["sampling_rate"]),
            num_mel_bins=int(merged["num_mel_bins"]),
            max_length=int(merged["max_length"]),
            do_normalize=bool(merged["do_normalize"]),
            mean=float(merged["mean"]),
            std=float(merged["std"]),
        )

    def input_values(self, waveform: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The model's ``input_values`` for one waveform: ``(max_length, num_mel_bins)``."""
        # Frames past max_length are cut anyway: only the samples they start in are read.
        needed = (self.max_length - 1) * HOP_LENGTH + FRAME_LENGTH
        fbank = log_mel_fbank(waveform[:needed], self.num_mel_bins, self.sampling_rate)
        features = np.zeros((self.max_length, self.num_mel_bins), dtype=np.float32)
        count = min(self.max_length, fbank.shape[0])
        features[:count] = fbank[:count]
        if not self.do_normalize:
            return features
        # float32 arithmetic with Python floats, as the extractor's normalize
        normalised: npt.NDArray[np.float32] = (features - self.mean) / (self.std * 2)
        return normalised


@functools.lru_cache(maxsize=8)
def mel_filters(num_mel_bins: int, sampling_rate: int) -> npt.NDArray[np.float64]:
    """``(257, num_mel_bins)`` triangular filters, triangular on the Kaldi mel scale (as
    ``mel_filter_bank(..., mel_scale="kaldi", triangularize_in_mel_space=True)``)."""
    bins = FFT_LENGTH // 2 + 1
    edges = np.linspace(_mel(MIN_FREQUENCY), _mel(sampling_rate // 2), num_mel_bins + 2)
    fft_mels = _mel(sampling_rate / FFT_LENGTH * np.arange(bins))
    slopes = edges[np.newaxis, :] - fft_mels[:, np.newaxis]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters: npt.NDArray[np.float64] = np.maximum(0.0, np.minimum(down, up))
    filters.setflags(write=False)  # shared by every call (cached)
    return filters


def log_mel_fbank(
    waveform: npt.NDArray[np.float32], num_mel_bins: int, sampling_rate: int
) -> npt.NDArray[np.float32]:
    """``(frames, num_mel_bins)`` log-mel filterbank energies of a mono waveform."""
    samples = np.asarray(waveform, dtype=np.float64).reshape(-1)
    count = (samples.size - FRAME_LENGTH) // HOP_LENGTH + 1
    if count <= 0:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(samples, FRAME_LENGTH)
    frames = windows[: (count - 1) * HOP_LENGTH + 1 : HOP_LENGTH]
    frames = frames - frames.mean(axis=1, keepdims=True)
    emphasised = np.empty_like(frames)
    emphasised[:, 1:] = frames[:, 1:] - PREEMPHASIS * frames[:, :-1]
    emphasised[:, 0] = frames[:, 0] * (1 - PREEMPHASIS)
    emphasised *= _hann()
    # The extractor keeps the FFT in complex64 before taking its power in float64.
    spectrum = np.fft.rfft(emphasised, n=FFT_LENGTH, axis=1).astype(np.complex64)
    power = np.abs(spectrum, dtype=np.float64) ** 2
    mel = np.maximum(MEL_FLOOR, power @ mel_filters(num_mel_bins, sampling_rate))
    fbank: npt.NDArray[np.float32] = np.log(mel).astype(np.float32)
    return fbank


@functools.lru_cache(maxsize=1)
def _hann() -> npt.NDArray[np.float64]:
    window: npt.NDArray[np.float64] = np.hanning(FRAME_LENGTH)  # symmetric, as periodic=False
    window.setflags(write=False)
    return window


def _mel(hertz: Any) -> Any:
    return 1127.0 * np.log(1.0 + np.asarray(hertz) / 700.0)
