"""text_to_speech with a Hugging Face VITS model (MMS-TTS's ``VitsModel``) exported by optimum.

The graph (optimum's ``text-to-audio`` export) takes ``input_ids`` and ``attention_mask`` and
answers ``waveform`` at the config's ``sampling_rate``. Its noise scales (``noise_scale``,
``noise_scale_duration``) and ``speaking_rate`` are the config's, baked into the graph: the
export exposes no noise or seed input, so a model whose noise scales are not 0 speaks a little
differently on every call, as transformers' ``VitsModel`` does.

Ids are made as ``VitsTokenizer`` makes them for MMS-TTS (``phonemize: false``): with
``normalize``, each position takes the first vocabulary entry it starts with, else the
character lower-cased, and characters outside the vocabulary are dropped (then the text is
stripped); each character is mapped through ``vocab.json`` (the unknown token's id when it is
missing), and with ``add_blank`` id 0 goes between characters and at both ends. Our own code,
no transformers at serve time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InternalError, InvalidArgument
from taskorch.inference.runtime import LoadedModel


class VitsTokens:
    """The character vocabulary and settings of a VITS tokenizer (``vocab.json`` and
    ``tokenizer_config.json``)."""

    def __init__(self, vocab: Mapping[str, int], settings: Mapping[str, Any]) -> None:
        self.vocab = {str(k): int(v) for k, v in vocab.items()}
        self.add_blank = bool(settings.get("add_blank", True))
        self.normalize = bool(settings.get("normalize", True))
        if settings.get("phonemize", True):
            raise InvalidArgument(
                "the VITS tokenizer phonemizes its input (phonemize: true, with the "
                "phonemizer package): only character models (MMS-TTS, phonemize: false) are served",
                field="src",
            )
        self.unk_id = self.vocab.get(str(settings.get("unk_token") or "<unk>"))

    def normalize_text(self, text: str) -> str:
        """``VitsTokenizer.normalize_text``: lower case, except where a vocabulary entry
        starts (first match in vocabulary order)."""
        out: list[str] = []
        i = 0
        while i < len(text):
            for word in self.vocab:
                if word and text.startswith(word, i):
                    out.append(word)
                    i += len(word)
                    break
            else:
                out.append(text[i].lower())
                i += 1
        return "".join(out)

    def ids(self, text: str) -> list[int]:
        """The ``input_ids`` ``VitsTokenizer`` gives ``text``."""
        if self.normalize:
            text = "".join(c for c in self.normalize_text(text) if c in self.vocab).strip()
        ids: list[int] = []
        for char in text:
            found = self.vocab.get(char, self.unk_id)
            if found is not None:
                ids.append(found)
        if self.add_blank:
            blanked = [0] * (2 * len(ids) + 1)
            blanked[1::2] = ids
            ids = blanked
        return ids


def tokens_of(model: LoadedModel) -> VitsTokens:
    """The tokenizer of ``model`` (read once, kept on the model)."""
    tokens = model.media.get("vits_tokens")
    if tokens is None:
        vocab_file = model.path / "vocab.json"
        if not vocab_file.exists():
            raise InternalError(f"model {model.name!r} has no vocab.json")
        settings_file = model.path / "tokenizer_config.json"
        settings = (
            json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.exists() else {}
        )
        tokens = VitsTokens(json.loads(vocab_file.read_text(encoding="utf-8")), settings)
        model.media["vits_tokens"] = tokens
    assert isinstance(tokens, VitsTokens)
    return tokens


def sample_rate_of(model: LoadedModel) -> int:
    """The model's ``sampling_rate`` (config.json)."""
    return int(model.hf_config.get("sampling_rate") or 16000)


def synthesize_vits(model: LoadedModel, ids: list[int]) -> npt.NDArray[np.float32]:
    """The waveform of one id sequence (one graph call), as the graph answers it."""
    feed = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
    }
    waveform = model.session.run(feed, ["waveform"])["waveform"]
    return np.asarray(waveform, dtype=np.float32).reshape(-1)
