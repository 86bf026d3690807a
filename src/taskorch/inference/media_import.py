"""Import a media model folder (its ONNX graphs already exist) into the repository.

=====================  ==============================================================
task type              what the source folder holds
=====================  ==============================================================
text_to_speech         a Piper voice: ``<voice>.onnx`` and its ``<voice>.onnx.json``
                       (with ``phoneme_id_map``)
image_to_text          PaddleOCR (PP-OCR) graphs: one ``*det*.onnx`` and one
                       ``*rec*.onnx`` (its dictionary in the graph's ``character``
                       metadata, or a ``*keys*.txt`` / ``*dict*.txt`` file beside it);
                       a Hugging Face captioner (VisionEncoderDecoderModel) is
                       exported with optimum instead (``taskorch.inference.export``)
audio_classification   silero-vad: ``silero_vad.onnx`` (or the folder's only ``.onnx``);
                       a Hugging Face audio classifier (Wav2Vec2, AST, ...) is exported
                       with optimum instead (``taskorch.inference.export``)
image_generation       a Stable Diffusion export of optimum (``text-to-image``):
                       ``text_encoder/``, ``unet/``, ``vae_decoder/`` (each
                       ``model.onnx`` and ``config.json``), ``tokenizer/`` and
                       ``scheduler/scheduler_config.json`` (a scheduler
                       ``taskorch.inference.schedulers`` runs); a diffusers folder of
                       PyTorch weights is exported into this shape first
                       (``taskorch.inference.export``)
=====================  ==============================================================

The files are copied (hard-linked where possible), ``model.yaml`` names them under ``files``,
each graph is opened once with ONNX Runtime to check it loads, and the folder is renamed into
place so a running engine's watcher picks it up whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.config import parse_model_config, write_model_config
from taskorch.inference.task_types import ModelFamily, TaskType

Log = Callable[[str], None]


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _one(paths: list[Path], what: str, src_dir: Path) -> Path:
    if len(paths) != 1:
        found = ", ".join(p.name for p in paths) or "none"
        raise InvalidArgument(
            f"{src_dir} must hold exactly one {what} (found: {found})", field="src"
        )
    return paths[0]


def _piper(src_dir: Path, staging: Path) -> dict[str, Any]:
    graph = _one(sorted(src_dir.glob("*.onnx")), "Piper voice .onnx file", src_dir)
    voice = graph.with_name(graph.name + ".json")
    if not voice.exists():
        voice = _one(sorted(src_dir.glob("*.json")), "Piper voice .json config", src_dir)
    config = json.loads(voice.read_text(encoding="utf-8"))
    if "phoneme_id_map" not in config or "audio" not in config:
        raise InvalidArgument(
            f"{voice.name} is not a Piper voice config (no phoneme_id_map / audio)", field="src"
        )
    _link(graph, staging / "model.onnx")
    _link(voice, staging / "voice.json")
    return {"onnx": {"file": "model.onnx"}, "files": {"voice": "voice.json"}}


def _pp_ocr(src_dir: Path, staging: Path) -> dict[str, Any]:
    det = _one(sorted(src_dir.glob("*det*.onnx")), "detection graph (*det*.onnx)", src_dir)
    rec = _one(sorted(src_dir.glob("*rec*.onnx")), "recognition graph (*rec*.onnx)", src_dir)
    _link(det, staging / "det.onnx")
    _link(rec, staging / "rec.onnx")
    files = {"rec": "rec.onnx"}
    dictionaries = sorted([*src_dir.glob("*keys*.txt"), *src_dir.glob("*dict*.txt")])
    if dictionaries:
        _link(dictionaries[0], staging / "dict.txt")
        files["dict"] = "dict.txt"
    else:
        import onnxruntime as ort

        meta = ort.InferenceSession(str(rec), providers=["CPUExecutionProvider"])
        if "character" not in meta.get_modelmeta().custom_metadata_map:
            raise InvalidArgument(
                f"{rec.name} carries no character dictionary; put its *keys*.txt beside it",
                field="src",
            )
    return {"onnx": {"file": "det.onnx"}, "files": files}


def _silero(src_dir: Path, staging: Path) -> dict[str, Any]:
    named = src_dir / "silero_vad.onnx"
    graph = named if named.exists() else _one(sorted(src_dir.glob("*.onnx")), ".onnx", src_dir)
    _link(graph, staging / "model.onnx")
    return {"onnx": {"file": "model.onnx"}}


# The parts of a Stable Diffusion export that text-to-image uses (not the VAE encoder).
DIFFUSION_PARTS = ("text_encoder", "unet", "vae_decoder", "tokenizer", "scheduler")
UNET_INPUTS = {"sample", "timestep", "encoder_hidden_states"}


def _stable_diffusion(src_dir: Path, staging: Path) -> dict[str, Any]:
    from taskorch.inference.schedulers import scheduler_for

    required = [
        "text_encoder/model.onnx",
        "text_encoder/config.json",
        "unet/model.onnx",
        "unet/config.json",
        "vae_decoder/model.onnx",
        "vae_decoder/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer",
    ]
    missing = [part for part in required if not (src_dir / part).exists()]
    if missing:
        raise InvalidArgument(
            f"{src_dir} is not a Stable Diffusion export (optimum, text-to-image), nor a "
            f"diffusers folder: it lacks {', '.join(missing)}",
            field="src",
        )
    scheduler_for(
        json.loads((src_dir / "scheduler/scheduler_config.json").read_text(encoding="utf-8"))
    )
    import onnxruntime as ort

    unet = ort.InferenceSession(
        str(src_dir / "unet/model.onnx"), providers=["CPUExecutionProvider"]
    )
    extra_inputs = {i.name for i in unet.get_inputs()} - UNET_INPUTS
    if extra_inputs:  # SDXL's text_embeds and time_ids, a LCM's timestep_cond, ...
        raise InvalidArgument(
            f"the UNet takes {', '.join(sorted(extra_inputs))} besides "
            f"{', '.join(sorted(UNET_INPUTS))}: only Stable Diffusion 1.x/2.x-style "
            "text-to-image UNets are served",
            field="src",
        )
    for part in DIFFUSION_PARTS:
        for item in sorted((src_dir / part).rglob("*")):
            if item.is_file():
                target = staging / part / item.relative_to(src_dir / part)
                target.parent.mkdir(parents=True, exist_ok=True)
                _link(item, target)
    if not (staging / "tokenizer/tokenizer.json").exists():
        _write_fast_tokenizer(src_dir / "tokenizer", staging / "tokenizer/tokenizer.json")
    return {
        "onnx": {"file": "unet/model.onnx"},
        "files": {
            "text_encoder": "text_encoder/model.onnx",
            "vae_decoder": "vae_decoder/model.onnx",
            "unet_config": "unet/config.json",
            "vae_config": "vae_decoder/config.json",
            "text_encoder_config": "text_encoder/config.json",
            "scheduler": "scheduler/scheduler_config.json",
            "tokenizer": "tokenizer",
        },
    }


def _write_fast_tokenizer(folder: Path, target: Path) -> None:
    """The ``tokenizers`` file of a slow CLIP tokenizer (vocab.json, merges.txt), so serving
    tokenizes with ``tokenizers`` alone (transformers would import torch where it is
    installed). The other files stay links to the source: only this new file is written."""
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(folder, use_fast=True)  # type: ignore[no-untyped-call]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InvalidArgument(
            f"{folder} holds a tokenizer with no fast (tokenizers) version", field="src"
        )
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(target))


_LAYOUTS = {
    ModelFamily.PIPER_TTS: _piper,
    ModelFamily.PP_OCR: _pp_ocr,
    ModelFamily.VOICE_ACTIVITY: _silero,
    ModelFamily.STABLE_DIFFUSION: _stable_diffusion,
}


def import_media_folder(
    src_dir: Path,
    task_type: TaskType,
    family: ModelFamily,
    staging: Path,
    overrides: Mapping[str, Any] | None,
    log: Log,
) -> None:
    """Fill ``staging`` with the model's files and its ``model.yaml`` (checked to load).

    Raises:
        InvalidArgument: the folder does not hold what the task type needs (the message says
            what is missing).
    """
    staging.mkdir(parents=True)
    raw: dict[str, Any] = {
        "task": task_type.value,
        "family": family.value,
        **_LAYOUTS[family](src_dir, staging),
        "max_batch_size": 1,
        "source": str(src_dir.resolve()),
    }
    raw.update(overrides or {})
    config = parse_model_config(raw)
    import onnxruntime as ort

    for file in [config.onnx_file, *(config.extra.get("files") or {}).values()]:
        if str(file).endswith(".onnx"):
            ort.InferenceSession(str(staging / file), providers=["CPUExecutionProvider"])
    write_model_config(staging, config)
    log(f"checked {', '.join(sorted(p.name for p in staging.iterdir()))} for {task_type.value}")
