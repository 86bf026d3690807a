"""Import a media model folder (its ONNX graphs already exist) into the repository.

=====================  ==============================================================
task type              what the source folder holds
=====================  ==============================================================
text_to_speech         a Piper voice: ``<voice>.onnx`` and its ``<voice>.onnx.json``
                       (with ``phoneme_id_map``)
image_to_text          PaddleOCR (PP-OCR) graphs: one ``*det*.onnx`` and one
                       ``*rec*.onnx`` (its dictionary in the graph's ``character``
                       metadata, or a ``*keys*.txt`` / ``*dict*.txt`` file beside it)
audio_classification   silero-vad: ``silero_vad.onnx`` (or the folder's only ``.onnx``)
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
from taskorch.inference.tasks import ModelFamily, TaskType

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


_LAYOUTS = {
    ModelFamily.PIPER_TTS: _piper,
    ModelFamily.PP_OCR: _pp_ocr,
    ModelFamily.VOICE_ACTIVITY: _silero,
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
