"""int8 quantization of encoder models, kept only when it still agrees with the float model.

``quantize_int8`` runs ONNX Runtime's dynamic quantization (QInt8 weights, per output channel;
activations quantized per batch at run time), then compares the int8 graph with the float32 one
on ``PROBE_TEXTS``:

- the cosine similarity of their outputs per probe (sentence embeddings pooled as the model's
  ``pooling`` says for encoders, the logits of the real tokens for the other heads) must average
  at least ``COSINE_THRESHOLD`` with no probe below ``COSINE_FLOOR``;
- models that answer with a label (text classification, token classification, the answer span
  of question answering) must give the same top label on every probe (every real token),
  unless the float model itself scores the two labels within ``TIE_MARGIN`` (a tie).

The figures (a ``QuantizationCheck``) are stored in ``model.yaml`` under ``quantization_check``
and shown by ``taskorch models list``. Generation models are refused: int8 can break their
output in ways a cosine over one forward pass does not see (a loop after 20 tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.config import ModelConfig, Pooling
from taskorch.inference.export import ExportError, ort_outputs, quiet_export
from taskorch.inference.task_types import SEQ2SEQ_FAMILIES, ModelFamily, TaskType, family_of
from taskorch.inference.types import QuantizationCheck

FloatArray = npt.NDArray[np.float32]

QUANTIZABLE_FAMILIES = frozenset(
    {
        ModelFamily.TEXT_ENCODER,
        ModelFamily.SEQUENCE_CLASSIFICATION,
        ModelFamily.TOKEN_CLASSIFICATION,
        ModelFamily.QUESTION_ANSWERING,
        ModelFamily.MASKED_LM,
    }
)
# Families whose answer is a label (or an answer span): the int8 model must pick the same one.
LABEL_FAMILIES = frozenset(
    {
        ModelFamily.SEQUENCE_CLASSIFICATION,
        ModelFamily.TOKEN_CLASSIFICATION,
        ModelFamily.QUESTION_ANSWERING,
    }
)
# A label the float model scores within this much probability of its own top label is a tie:
# the int8 model picking it does not count as a changed answer.
TIE_MARGIN = 0.01

INT8_FILE = "model_int8.onnx"

PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Hello world",
    "ONNX Runtime serves models exported from PyTorch.",
    "A cat sleeps on the warm windowsill all afternoon.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "How do I reset my password if I no longer have access to my email?",
    "The patient was prescribed antibiotics for a bacterial infection.",
    "Paris is the capital and most populous city of France.",
    "Quantum computers use qubits that can exist in superposition.",
    "Please call me at seven thirty tomorrow morning.",
    "The invoice total is $384.50, due within thirty days.",
    "She plays the violin in the city orchestra every weekend.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    "software and associated documentation files, to deal in the Software without restriction.",
    "Gradient descent minimises a loss function by following its negative gradient step by step.",
    "yes",
    "The train to Berlin leaves from platform nine at 14:05.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "I loved this movie; the acting was superb and the story kept me on the edge of my seat.",
    "This product broke after two days and customer support never answered.",
    "def add(a, b): return a + b",
    "Mount Everest is the highest mountain above sea level.",
    "The committee will review the proposal and announce its decision next week.",
    "Rain is expected in the north, with sunny spells in the south later today.",
    "Tokenizers split text into subword units before the model sees it.",
)
PROBE_QUESTIONS = (
    "What jumps?",
    "Who is greeted?",
    "What serves models?",
    "Where does the cat sleep?",
    "What did the central bank do?",
    "What is lost?",
    "What was prescribed?",
    "What is the capital of France?",
    "What do quantum computers use?",
    "When should I call?",
    "What is the total?",
    "What does she play?",
    "What is granted?",
    "What does gradient descent minimise?",
    "What is the answer?",
    "When does the train leave?",
    "What does photosynthesis convert?",
    "How was the acting?",
    "When did the product break?",
    "What does the function return?",
    "What is the highest mountain?",
    "When is the decision?",
    "Where is rain expected?",
    "What do tokenizers split?",
)


class QuantizationRefused(ExportError):
    """The int8 model failed the quality check against the float model; nothing was kept."""

    def __init__(self, check: QuantizationCheck) -> None:
        super().__init__(
            f"int8 quantization refused: the int8 model does not agree with the float model "
            f"({check.summary()}); import it without --quantize"
        )
        self.check = check


def check_quantizable(task_type: TaskType, family: ModelFamily) -> None:
    """Refuse ``--quantize int8`` for a model it does not apply to.

    Raises:
        InvalidArgument: (field ``quantize``) the family is not an encoder with a checkable head.
    """
    if family in QUANTIZABLE_FAMILIES:
        return
    names = sorted(t.value for t in TaskType if family_of(t) in QUANTIZABLE_FAMILIES)
    if family in (ModelFamily.CAUSAL_LM, *SEQ2SEQ_FAMILIES):
        why = (
            "generation models are not quantized: int8 can break generated text in ways one "
            "forward pass does not show"
        )
    else:
        why = f"{family.value} models are not quantized by taskorch"
    raise InvalidArgument(
        f"--quantize int8 does not apply to {task_type.value}: {why}; it applies to encoder "
        f"models ({', '.join(names)})",
        field="quantize",
    )


def probe_encoding(source: Path, family: ModelFamily) -> dict[str, npt.NDArray[Any]]:
    """The probe inputs, tokenized by the model's own tokenizer (int64, padded)."""
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(source)  # type: ignore[no-untyped-call]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if family is ModelFamily.QUESTION_ANSWERING:
        enc = tokenizer(list(PROBE_QUESTIONS), list(PROBE_TEXTS), padding=True, return_tensors="np")
    else:
        enc = tokenizer(list(PROBE_TEXTS), padding=True, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


def _cosines(ref: FloatArray, got: FloatArray) -> FloatArray:
    norms = np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1)
    return np.asarray((ref * got).sum(-1) / np.maximum(norms, 1e-12), dtype=np.float32)


def _pool(hidden: FloatArray, mask: npt.NDArray[Any], pooling: Pooling) -> FloatArray:
    if pooling is Pooling.CLS:
        return np.asarray(hidden[:, 0], dtype=np.float32)
    weights = mask[..., None].astype(np.float32)
    if pooling is Pooling.MAX:
        return np.asarray(np.where(weights > 0, hidden, -np.inf).max(1), dtype=np.float32)
    summed = (hidden * weights).sum(1)
    return np.asarray(summed / np.clip(weights.sum(1), 1e-9, None), dtype=np.float32)


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(-1, keepdims=True)
    e = np.exp(shifted)
    return np.asarray(e / e.sum(-1, keepdims=True), dtype=np.float32)


def _same_label(ref_logits: FloatArray, got_logits: FloatArray) -> npt.NDArray[np.bool_]:
    """Per row: the int8 model's top label is the float model's, or one the float model
    scores within ``TIE_MARGIN`` of its own top (a tie the float model could break either
    way, not a change of answer)."""
    probs = _softmax(ref_logits)
    top_ref = ref_logits.argmax(-1)
    top_got = got_logits.argmax(-1)
    rows = np.arange(len(top_ref))
    gap = probs[rows, top_ref] - probs[rows, top_got]
    return np.asarray((top_ref == top_got) | (gap <= TIE_MARGIN), dtype=np.bool_)


def compare(
    family: ModelFamily,
    pooling: Pooling,
    ref: Mapping[str, FloatArray],
    got: Mapping[str, FloatArray],
    mask: npt.NDArray[Any],
) -> tuple[FloatArray, float | None]:
    """Per-probe cosines of ``got`` against ``ref`` and the top-label agreement (or None)."""
    keep = mask.astype(bool)
    if family is ModelFamily.TEXT_ENCODER:
        key = "last_hidden_state"
        return _cosines(_pool(ref[key], mask, pooling), _pool(got[key], mask, pooling)), None
    if family is ModelFamily.SEQUENCE_CLASSIFICATION:
        a, b = ref["logits"], got["logits"]
        return _cosines(a, b), float(_same_label(a, b).mean())
    if family is ModelFamily.QUESTION_ANSWERING:
        spans: list[float] = []
        same: list[bool] = []
        for i in range(keep.shape[0]):
            a = np.concatenate([ref["start_logits"][i][keep[i]], ref["end_logits"][i][keep[i]]])
            b = np.concatenate([got["start_logits"][i][keep[i]], got["end_logits"][i][keep[i]]])
            spans.append(float(_cosines(a[None], b[None])[0]))
            n = int(keep[i].sum())
            start = _same_label(a[None, :n], b[None, :n])[0]
            end = _same_label(a[None, n:], b[None, n:])[0]
            same.append(bool(start and end))
        return np.asarray(spans, dtype=np.float32), float(np.mean(same))
    # Token classification and masked LM: per-token logits over the real tokens.
    a, b = ref["logits"], got["logits"]
    tokens = np.asarray(
        [
            float(_cosines(a[i][keep[i]].ravel()[None], b[i][keep[i]].ravel()[None])[0])
            for i in range(keep.shape[0])
        ],
        dtype=np.float32,
    )
    if family is ModelFamily.TOKEN_CLASSIFICATION:
        return tokens, float(_same_label(a[keep], b[keep]).mean())
    return tokens, None


def quantize_int8(
    onnx_dir: Path, tokenizer_dir: Path, family: ModelFamily, config: ModelConfig
) -> QuantizationCheck:
    """Write ``onnx_dir/model_int8.onnx`` from ``config.onnx_file`` and check it.

    Args:
        onnx_dir: the exported float32 model folder.
        tokenizer_dir: where the model's tokenizer is.
        family: the model family (one of ``QUANTIZABLE_FAMILIES``).
        config: the model's config (its ONNX file and pooling).

    Returns:
        The figures of a check that passed.

    Raises:
        QuantizationRefused: the int8 model disagrees with the float one (the figures are in
            the message and in ``.check``); ``model_int8.onnx`` is removed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = onnx_dir / config.onnx_file
    target = onnx_dir / INT8_FILE
    with quiet_export():
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=False,
        )
    enc = probe_encoding(tokenizer_dir, family)
    ref = ort_outputs(onnx_dir, family, enc, config.onnx_file)
    got = ort_outputs(onnx_dir, family, enc, INT8_FILE)
    cosines, agreement = compare(family, config.pooling, ref, got, enc["attention_mask"])
    data = onnx_dir / f"{config.onnx_file}_data"
    float_size = source.stat().st_size + (data.stat().st_size if data.exists() else 0)
    check = QuantizationCheck(
        probes=len(cosines),
        cosine_mean=float(cosines.mean()),
        cosine_min=float(cosines.min()),
        top_label_agreement=agreement,
        float_size_bytes=float_size,
        int8_size_bytes=target.stat().st_size,
    )
    if not check.passed:
        target.unlink()
        raise QuantizationRefused(check)
    return check
