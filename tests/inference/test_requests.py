"""Requests are checked before they are queued: task types, models and inputs."""

from __future__ import annotations

import pytest

from taskorch.domain.errors import InvalidArgument, ModelNotFound, UnsupportedTaskType
from taskorch.inference import InferenceEngine, TaskType, canonical_task_type


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("text_generation", TaskType.TEXT_GENERATION),
        ("text-generation", TaskType.TEXT_GENERATION),
        ("Text Generation", TaskType.TEXT_GENERATION),
        ("text2text-generation", TaskType.TEXT2TEXT_GENERATION),
        ("sentiment-analysis", TaskType.TEXT_CLASSIFICATION),
        ("summarization task", TaskType.SUMMARIZATION),
        ("ner", TaskType.TOKEN_CLASSIFICATION),
        ("sentence-similarity", TaskType.SENTENCE_SIMILARITY),
    ],
)
def test_seed_and_hugging_face_spellings_are_accepted(spelling: str, canonical: TaskType) -> None:
    assert canonical_task_type(spelling) is canonical


@pytest.mark.parametrize("task", ["visual_question_answering", "image_to_video", "teleportation"])
def test_unsupported_task_types_are_refused_with_the_supported_list(
    tiny_engine: InferenceEngine, task: str
) -> None:
    with pytest.raises(UnsupportedTaskType) as caught:
        tiny_engine.check(task, "", {"inputs": "x"}, {})
    assert caught.value.violations[0].field == "task_type"
    for name in tiny_engine.supported_task_types():
        assert name in caught.value.message


@pytest.mark.parametrize(
    ("task", "family"),
    [
        ("text_to_speech", "piper-tts"),
        ("tts", "piper-tts"),
        ("image_to_text", "pp-ocr"),
        ("audio_classification", "voice-activity"),
        ("image_segmentation", "semantic-segmentation"),
        # tiny-t5 is a seq2seq LM too, but not one imported for tables
        ("table_question_answering", "seq2seq-lm"),
        ("automatic_speech_recognition", "speech-seq2seq"),
        ("asr", "speech-seq2seq"),
        ("image_generation", "stable-diffusion"),
        ("text_to_image", "stable-diffusion"),
    ],
)
def test_a_type_no_model_serves_says_so_and_how_to_import_one(
    tiny_engine: InferenceEngine, task: str, family: str
) -> None:
    with pytest.raises(ModelNotFound) as caught:
        tiny_engine.check(task, "", {"text": "x"}, {})
    canonical = canonical_task_type(task).value
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert f"No model serves task type '{canonical}'" in caught.value.message
    assert f"no {family} model" in caught.value.message
    assert f"taskorch models import DIR --task {canonical}" in caught.value.message
    if canonical == "image_generation":  # no default model ships for it: none is suggested
        assert "the default models include none for it" in caught.value.message
        assert "taskorch models defaults" not in caught.value.message
    else:
        assert "taskorch models defaults" in caught.value.message


def test_unknown_model_is_not_found_with_the_available_names(tiny_engine: InferenceEngine) -> None:
    with pytest.raises(ModelNotFound) as caught:
        tiny_engine.check("text_generation", "gpt-17", {"prompt": "x"}, {})
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert "tiny-gpt2" in caught.value.message


def test_a_family_without_default_uses_any_model_of_that_family(
    tiny_engine: InferenceEngine,
) -> None:
    request = tiny_engine.check("fill-mask", "", {"inputs": "a [MASK] b"}, {})
    assert request.model_name == "tiny-bert-mlm"
    assert request.task_type is TaskType.FILL_MASK


@pytest.mark.parametrize(
    ("task", "model", "data", "params", "field"),
    [
        (
            "zero_shot_classification",
            "tiny-bert-nli",
            {"inputs": "x"},
            {},
            "input_data.candidate_labels",
        ),
        (
            "zero_shot_classification",
            "tiny-bert-nli",
            {"inputs": "x", "candidate_labels": []},
            {},
            "input_data.candidate_labels",
        ),
        (
            "zero_shot_classification",
            "tiny-bert-sentiment",
            {"inputs": "x", "candidate_labels": ["a"]},
            {},
            "model_name",
        ),
        ("text_generation", "tiny-gpt2", {}, {}, "input_data.prompt"),
        ("text_generation", "tiny-gpt2", {"prompt": 3}, {}, "input_data.prompt"),
        (
            "text_generation",
            "tiny-gpt2",
            {"prompt": "x"},
            {"temperature": -1},
            "parameters.temperature",
        ),
        (
            "text_generation",
            "tiny-gpt2",
            {"prompt": "x"},
            {"max_new_tokens": 0},
            "parameters.max_new_tokens",
        ),
        ("text_generation", "tiny-gpt2", {"prompt": "x"}, {"stop": [1]}, "parameters.stop"),
        (
            "text_generation",
            "tiny-gpt2",
            {"messages": [{"role": "robot", "content": "x"}]},
            {},
            "input_data.messages[0].role",
        ),
        (
            "sentence_similarity",
            "tiny-bert-embed",
            {"source_sentence": "a"},
            {},
            "input_data.sentences",
        ),
        ("question_answering", "tiny-bert-qa", {"question": "q"}, {}, "input_data.context"),
        ("fill_mask", "tiny-bert-mlm", {"inputs": "no mask here"}, {}, "input_data.inputs"),
        ("image_classification", "tiny-vit", {"image": "not base64!"}, {}, "input_data.image"),
        ("feature_extraction", "tiny-gpt2", {"inputs": "x"}, {}, "model_name"),
        ("feature_extraction", "tiny-bert-embed", {"inputs": ["a", 2]}, {}, "input_data.inputs"),
    ],
)
def test_wrong_input_names_the_field(
    tiny_engine: InferenceEngine,
    task: str,
    model: str,
    data: dict[str, object],
    params: dict[str, object],
    field: str,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tiny_engine.check(task, model, data, params)
    assert caught.value.violations[0].field == field


async def test_over_long_input_is_truncated_by_default(tiny_engine: InferenceEngine) -> None:
    long = "parse the calendar " * 400
    request = tiny_engine.check("feature_extraction", "tiny-bert-embed", {"inputs": long}, {})
    result = (await tiny_engine.run(request)).result
    assert result["dimensions"] == 64
