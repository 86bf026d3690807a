"""Quality checks with the real default models (converted from PyPI packages, no model hub)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taskorch.inference import InferenceEngine, ModelState
from taskorch.inference.defaults import install_default_models

from .conftest import TEXT_DEFAULTS


async def _run(
    engine: InferenceEngine, task: str, data: dict[str, Any], params: dict[str, Any] | None = None
) -> dict[str, Any]:
    return (await engine.run(engine.check(task, "", data, params or {}))).result


def test_defaults_rerun_is_a_no_op_under_a_second(default_models_dir: Path) -> None:
    started = time.perf_counter()
    install_default_models(default_models_dir, log=lambda _: None, only=TEXT_DEFAULTS)
    assert time.perf_counter() - started < 1.0


def test_every_default_is_installed_and_loads(tmp_path: Path) -> None:
    from taskorch.inference.defaults import DEFAULTS
    from taskorch.inference.repository import ModelRepository

    install_default_models(tmp_path, log=lambda _: None)
    folders = ModelRepository(tmp_path).scan()
    assert (
        set(folders)
        == {m.name for m in DEFAULTS}
        >= {
            "piper-joe-medium",
            "pp-ocrv4",
            "silero-vad",
            "whisper-tiny-en",
        }
    )
    assert all(f.config is not None for f in folders.values()), folders


def test_default_models_are_ready_and_report_their_provider(
    default_engine: InferenceEngine,
) -> None:
    infos = {m.name: m for m in default_engine.models()}
    assert set(infos) == set(TEXT_DEFAULTS)
    for info in infos.values():
        assert info.state is ModelState.READY
        assert info.providers_active and info.providers_active[-1] == "CPUExecutionProvider"
    assert infos["pii-rampart"].quantization == "int4"


async def test_paraphrases_are_more_similar_than_unrelated_sentences(
    default_engine: InferenceEngine,
) -> None:
    result = await _run(
        default_engine,
        "sentence_similarity",
        {
            "source_sentence": "A cat is sitting on the mat.",
            "sentences": ["A kitten rests on a rug.", "The stock market fell sharply today."],
        },
    )
    paraphrase, unrelated = result["scores"]
    assert paraphrase > 0.5 > 0.2 > unrelated


async def test_minilm_int8_variant_passed_its_check_and_ranks_like_the_float_one(
    default_engine: InferenceEngine,
) -> None:
    int8 = default_engine.model("all-minilm-l6-v2-int8")
    check = int8.quantization_check
    assert int8.quantization == "int8" and int8.default_for == ()
    assert check is not None and check.cosine_mean >= 0.99 and check.probes >= 20
    assert check.int8_size_bytes * 3 < check.float_size_bytes  # ~23 MB vs ~90 MB
    data = {
        "source_sentence": "A cat is sitting on the mat.",
        "sentences": ["A kitten rests on a rug.", "The stock market fell sharply today."],
    }
    scores = {}
    for name in ("all-minilm-l6-v2", "all-minilm-l6-v2-int8"):
        request = default_engine.check("sentence_similarity", name, data, {})
        scores[name] = (await default_engine.run(request)).result["scores"]
    (fp_para, fp_other), (q_para, q_other) = scores.values()
    assert q_para > 0.5 > 0.2 > q_other
    assert abs(q_para - fp_para) < 0.05 and abs(q_other - fp_other) < 0.05


async def test_smollm2_knows_the_capital_of_france(default_engine: InferenceEngine) -> None:
    deltas: list[str] = []

    async def collect(delta: str) -> None:
        deltas.append(delta)

    request = default_engine.check(
        "text-generation", "", {"prompt": "What is the capital of France?"}, {"max_new_tokens": 24}
    )
    outcome = await default_engine.run(request, on_output=collect)
    assert "Paris" in outcome.result["generated_text"]
    assert "".join(deltas) == outcome.result["generated_text"]
    assert outcome.result["tokens_generated"] > 0
    usage = outcome.resource_usage
    assert usage.model_name == "smollm2-135m-instruct"
    assert usage.inference_time_seconds > 0 and usage.memory_used_gb > 0.1
    assert usage.execution_provider == "CPUExecutionProvider"


async def test_pii_tagger_finds_a_name_and_a_phone_number(default_engine: InferenceEngine) -> None:
    result = await _run(
        default_engine,
        "token_classification",
        {"inputs": "Hi, I am John Smith. Call me at +1 (415) 555-0199 tomorrow."},
    )
    groups = {e["entity_group"]: e["word"] for e in result["entities"]}
    assert groups.get("GIVEN_NAME") == "John"
    assert groups.get("SURNAME") == "Smith"
    assert "415" in groups.get("PHONE", "")
