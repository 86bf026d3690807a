"""Streaming, stop strings, cancellation and continuous batching of text generation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from taskorch.domain.errors import InternalError
from taskorch.inference import InferenceEngine
from taskorch.inference.streaming import IncrementalDecoder, StopFilter


async def _generate(
    engine: InferenceEngine, model: str, data: dict[str, Any], params: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    request = engine.check("text_generation", model, data, params)
    return (await engine.run(request, **kw)).result


def test_stop_filter_never_streams_part_of_a_stop_string() -> None:
    stop = StopFilter(["\nUser:"])
    out = "".join(stop.feed(piece) for piece in ["Hello", "\n", "Us", "er", ": more"])
    assert out == "Hello"
    assert stop.stopped
    keep = StopFilter(["###"])
    text = "".join(keep.feed(p) for p in ["a#", "b##", "c"]) + keep.finish()
    assert text == "a#b##c"


def test_incremental_decoder_handles_multibyte_characters(tiny: Any) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.torch_dir / "tiny-gpt2")
    text = "naïve café — 東京 🙂 done"
    ids = tok(text)["input_ids"]
    decoder = IncrementalDecoder(tok)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == tok.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)


async def test_streamed_deltas_concatenate_to_the_final_text(tiny_engine: InferenceEngine) -> None:
    deltas: list[str] = []

    async def collect(delta: str) -> None:
        deltas.append(delta)

    result = await _generate(
        tiny_engine,
        "tiny-gpt2",
        {"prompt": "the calendar"},
        {"max_new_tokens": 20, "do_sample": True, "temperature": 1.3, "seed": 7},
        on_output=collect,
    )
    assert len(deltas) > 1
    assert "".join(deltas) == result["generated_text"]
    assert result["tokens_generated"] == 20 and result["finish_reason"] == "length"


async def test_seeded_sampling_is_reproducible(tiny_engine: InferenceEngine) -> None:
    params = {"max_new_tokens": 12, "temperature": 1.0, "top_k": 50, "top_p": 0.9, "seed": 3}
    first = await _generate(tiny_engine, "tiny-gpt2", {"prompt": "parse"}, params)
    second = await _generate(tiny_engine, "tiny-gpt2", {"prompt": "parse"}, params)
    assert first["generated_text"] == second["generated_text"]


async def test_stop_strings_cut_the_text(tiny_engine: InferenceEngine) -> None:
    full = await _generate(
        tiny_engine, "tiny-gpt2", {"prompt": "the parser"}, {"max_new_tokens": 16}
    )
    text = full["generated_text"]
    assert len(text) > 4
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = await _generate(
        tiny_engine, "tiny-gpt2", {"prompt": "the parser"}, {"max_new_tokens": 16, "stop": [stop]}
    )
    assert cut["finish_reason"] == "stop"
    assert cut["generated_text"] == text[: text.index(stop)]


async def test_concurrent_greedy_generation_equals_sequential(tiny_engine: InferenceEngine) -> None:
    prompts = ["the parser", "a calendar of", "textwrap wraps the long", "x"]
    params = {"max_new_tokens": 14}
    alone = [await _generate(tiny_engine, "tiny-gpt2", {"prompt": p}, params) for p in prompts]
    together = await asyncio.gather(
        *(_generate(tiny_engine, "tiny-gpt2", {"prompt": p}, params) for p in prompts)
    )
    assert [r["generated_text"] for r in together] == [r["generated_text"] for r in alone]


class _ModelAbort(BaseException):
    """Not an Exception: what a model's native code or a careless custom op may raise."""


async def test_a_base_exception_in_a_step_fails_its_sequence_and_generation_goes_on(
    tiny_engine: InferenceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = tiny_engine._serving("tiny-gpt2").decoder
    assert decoder is not None
    step = decoder._decode_step
    aborted: list[bool] = []

    def abort_once() -> None:
        if not aborted:
            aborted.append(True)
            raise _ModelAbort("aborted inside the model")
        step()

    monkeypatch.setattr(decoder, "_decode_step", abort_once)
    data, params = {"prompt": "the calendar"}, {"max_new_tokens": 5}
    with pytest.raises(InternalError, match="aborted inside the model"):
        await asyncio.wait_for(_generate(tiny_engine, "tiny-gpt2", data, params), 30)
    result = await asyncio.wait_for(_generate(tiny_engine, "tiny-gpt2", data, params), 30)
    assert result["tokens_generated"] == 5


async def test_cancel_stops_a_sequence_promptly(tiny_engine: InferenceEngine) -> None:
    cancel = asyncio.Event()
    seen: list[str] = []

    async def on_output(delta: str) -> None:
        seen.append(delta)
        if len(seen) == 3:
            cancel.set()

    started = time.perf_counter()
    result = await _generate(
        tiny_engine,
        "tiny-gpt2",
        {"prompt": "the"},
        {"max_new_tokens": 200, "do_sample": True, "seed": 1},
        on_output=on_output,
        cancel=cancel,
    )
    assert result["finish_reason"] == "cancelled"
    assert result["tokens_generated"] < 200
    assert time.perf_counter() - started < 5


async def test_chat_history_is_trimmed_oldest_first_keeping_the_system_prompt(
    tiny_engine: InferenceEngine,
) -> None:
    long = "the calendar module prints " * 30
    messages = [{"role": "system", "content": "be brief"}]
    for _ in range(6):
        messages += [{"role": "user", "content": long}, {"role": "assistant", "content": long}]
    messages.append({"role": "user", "content": "and now?"})
    result = await _generate(
        tiny_engine, "tiny-gpt2", {"messages": messages}, {"max_new_tokens": 4}
    )
    assert result["messages_dropped"] > 0
    assert result["prompt_tokens"] <= 256 - 4


async def test_smollm2_concurrent_greedy_equals_sequential_and_speeds_up(
    default_engine: InferenceEngine,
) -> None:
    questions = ["What is 2+2?", "Name a color.", "What is the capital of Italy?", "Say hi."]
    params = {"max_new_tokens": 24}
    started = time.perf_counter()
    alone = [await _generate(default_engine, "", {"prompt": q}, params) for q in questions]
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    together = await asyncio.gather(
        *(_generate(default_engine, "", {"prompt": q}, params) for q in questions)
    )
    concurrent = time.perf_counter() - started
    assert [r["generated_text"] for r in together] == [r["generated_text"] for r in alone]
    tokens = sum(r["tokens_generated"] for r in alone)
    assert tokens / concurrent > 1.2 * tokens / sequential
