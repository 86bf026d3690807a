"""Choosing the next token from logits: greedy, or sampling with temperature / top-k / top-p."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class SamplingSettings:
    """How one sequence picks its tokens (Hugging Face ``generate`` parameter names)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        """True when the choice is the arg-max (no sampling, or temperature 0)."""
        return not self.do_sample or self.temperature <= 0.0


class TokenSampler:
    """Per-sequence sampler; owns the sequence's random generator (seeded when asked)."""

    def __init__(self, settings: SamplingSettings) -> None:
        self.settings = settings
        self._rng = np.random.default_rng(settings.seed)

    def choose(self, logits: npt.NDArray[np.float32], seen: Iterable[int] = ()) -> int:
        """Pick the next token id from one row of logits."""
        s = self.settings
        scores = logits.astype(np.float64, copy=True)
        if s.repetition_penalty != 1.0:
            ids = np.fromiter(set(seen), dtype=np.int64)
            if ids.size:
                picked = scores[ids]
                scores[ids] = np.where(
                    picked > 0, picked / s.repetition_penalty, picked * s.repetition_penalty
                )
        if s.greedy:
            return int(np.argmax(scores))
        scores /= s.temperature
        if 0 < s.top_k < scores.size:
            cutoff = np.partition(scores, -s.top_k)[-s.top_k]
            scores[scores < cutoff] = -np.inf
        scores -= scores.max()
        probs = np.exp(scores)
        probs /= probs.sum()
        if s.top_p < 1.0:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            keep = int(np.searchsorted(cumulative, s.top_p)) + 1
            mask = np.zeros_like(probs, dtype=bool)
            mask[order[:keep]] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        return int(self._rng.choice(probs.size, p=probs))
