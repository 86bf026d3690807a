"""Every task pipeline on tiny random models, checked against the PyTorch originals."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from taskorch.inference import InferenceEngine, ModelState
from taskorch.inference.export import quiet_export

from .tiny_models import TINY, TinyModels


def _torch(tiny: TinyModels, name: str, cls: str) -> Any:
    import transformers

    with quiet_export():
        model = getattr(transformers, cls).from_pretrained(tiny.torch_dir / name)
    model.eval()
    return model


def _tokenizer(tiny: TinyModels, name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.torch_dir / name)


async def _run(
    engine: InferenceEngine,
    task: str,
    model: str,
    data: dict[str, Any],
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    request = engine.check(task, model, data, params or {})
    return (await engine.run(request)).result


def test_every_tiny_model_is_ready_on_the_provider_it_reports(tiny_engine: InferenceEngine) -> None:
    infos = {m.name: m for m in tiny_engine.models()}
    assert set(infos) == set(TINY)
    for info in infos.values():
        assert info.state is ModelState.READY, info.error
        assert info.providers_active[0] in info.providers_requested
        assert info.inputs and info.outputs and info.size_bytes > 0


async def test_embeddings_match_pytorch_mean_pooling(
    tiny: TinyModels, tiny_engine: InferenceEngine
) -> None:
    import torch

    texts = ["parse the arguments", "a much longer sentence about the calendar module"]
    result = await _run(tiny_engine, "feature-extraction", "tiny-bert-embed", {"inputs": texts})
    model = _torch(tiny, "tiny-bert-embed", "AutoModel")
    enc = _tokenizer(tiny, "tiny-bert-embed")(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    np.testing.assert_allclose(np.array(result["embeddings"]), expected.numpy(), atol=1e-4)
    assert result["dimensions"] == 64


async def test_text_classification_scores_match_pytorch(
    tiny: TinyModels, tiny_engine: InferenceEngine
) -> None:
    import torch

    result = await _run(
        tiny_engine, "sentiment-analysis", "tiny-bert-sentiment", {"inputs": "good string"}
    )
    model = _torch(tiny, "tiny-bert-sentiment", "AutoModelForSequenceClassification")
    enc = _tokenizer(tiny, "tiny-bert-sentiment")("good string", return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)[0].numpy()
    got = {x["label"]: x["score"] for x in result["labels"]}
    assert got["NEGATIVE"] == pytest.approx(float(probs[0]), abs=1e-5)
    assert result["label"] == ("NEGATIVE" if probs[0] > probs[1] else "POSITIVE")


async def test_greedy_generation_matches_pytorch_generate(
    tiny: TinyModels, tiny_engine: InferenceEngine
) -> None:
    import torch

    prompt = "the parser reads"
    result = await _run(
        tiny_engine, "text-generation", "tiny-gpt2", {"inputs": prompt}, {"max_new_tokens": 12}
    )
    tok = _tokenizer(tiny, "tiny-gpt2")
    model = _torch(tiny, "tiny-gpt2", "AutoModelForCausalLM")
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad(), quiet_export():
        out = model.generate(
            **enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id
        )
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    eos = tok.eos_token_id
    new = new[: new.index(eos)] if eos in new else new
    assert result["tokens_generated"] == len(new)
    assert result["generated_text"] == tok.decode(new, skip_special_tokens=True)


async def test_seq2seq_greedy_matches_pytorch(
    tiny: TinyModels, tiny_engine: InferenceEngine
) -> None:
    import torch

    text = "the calendar module prints a month"
    result = await _run(
        tiny_engine, "text2text-generation", "tiny-t5", {"inputs": text}, {"max_new_tokens": 6}
    )
    tok = _tokenizer(tiny, "tiny-t5")
    tok.model_input_names = ["input_ids", "attention_mask"]
    model = _torch(tiny, "tiny-t5", "AutoModelForSeq2SeqLM")
    with torch.no_grad(), quiet_export():
        out = model.generate(**tok(text, return_tensors="pt"), max_new_tokens=6, do_sample=False)
    assert result["generated_text"] == tok.decode(out[0], skip_special_tokens=True)
    summary = await _run(
        tiny_engine, "summarization", "tiny-t5", {"inputs": text}, {"max_new_tokens": 6}
    )
    assert summary["summary_text"] == summary["generated_text"]


async def test_token_classification_groups_entities_with_offsets(
    tiny_engine: InferenceEngine,
) -> None:
    text = "John lives in Paris"
    result = await _run(
        tiny_engine, "ner", "tiny-bert-ner", {"inputs": text}, {"ignore_labels": []}
    )
    for entity in result["entities"]:
        assert entity["entity_group"] in {"O", "PER", "LOC"}
        assert text[entity["start"] : entity["end"]] == entity["word"]
        assert 0.0 <= entity["score"] <= 1.0


async def test_question_answering_returns_a_span_of_the_context(
    tiny_engine: InferenceEngine,
) -> None:
    context = "The textwrap module wraps paragraphs of text."
    result = await _run(
        tiny_engine,
        "question-answering",
        "tiny-bert-qa",
        {"inputs": {"question": "What wraps text?", "context": context}},
    )
    assert context[result["start"] : result["end"]] == result["answer"]
    assert result["answer"]


async def test_fill_mask_and_zero_shot_shapes(tiny_engine: InferenceEngine) -> None:
    masked = await _run(
        tiny_engine, "fill-mask", "tiny-bert-mlm", {"inputs": "the [MASK] is parsed"}, {"top_k": 3}
    )
    assert len(masked["predictions"]) == 3
    assert all("[MASK]" not in p["sequence"] for p in masked["predictions"])
    zero = await _run(
        tiny_engine,
        "zero-shot-classification",
        "tiny-bert-nli",
        {"inputs": "the parser failed", "candidate_labels": ["error", "success", "calendar"]},
    )
    assert sorted(zero["labels"]) == ["calendar", "error", "success"]
    assert sum(zero["scores"]) == pytest.approx(1.0)


async def test_image_classification_matches_pytorch(
    tiny: TinyModels, tiny_engine: InferenceEngine
) -> None:
    import torch
    from transformers import ViTImageProcessor

    buffer = io.BytesIO()
    image = Image.new("RGB", (48, 40), (200, 30, 90))
    image.save(buffer, "PNG")
    payload = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    result = await _run(tiny_engine, "image-classification", "tiny-vit", {"image": payload})
    processor = ViTImageProcessor.from_pretrained(tiny.torch_dir / "tiny-vit")
    model = _torch(tiny, "tiny-vit", "AutoModelForImageClassification")
    with torch.no_grad():
        probs = model(**processor(images=image, return_tensors="pt")).logits.softmax(-1)[0]
    best = int(probs.argmax())
    assert result["label"] == model.config.id2label[best]
    assert result["score"] == pytest.approx(float(probs[best]), abs=1e-5)
