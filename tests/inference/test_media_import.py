"""``taskorch models import DIR --task <media type>``: the folder is copied as it is, its
model.yaml names the files, and a folder without what the type needs is refused saying what."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.config import load_model_config
from taskorch.inference.export import import_model
from taskorch.inference.task_types import ModelFamily


def test_a_piper_voice_folder_imports_with_its_voice_config(
    tmp_path: Path, media_models_dir: Path
) -> None:
    source = tmp_path / "my-voice"
    source.mkdir()
    shutil.copy(media_models_dir / "piper-joe-medium" / "model.onnx", source / "v.onnx")
    shutil.copy(media_models_dir / "piper-joe-medium" / "voice.json", source / "v.onnx.json")
    report = import_model(source, "tts", models_dir=tmp_path / "models", log=lambda _: None)
    config = load_model_config(report.path)
    assert report.task == "text_to_speech" and config.family is ModelFamily.PIPER_TTS
    assert config.file("voice") == "voice.json"
    assert (report.path / "model.onnx").stat().st_size == (source / "v.onnx").stat().st_size


@pytest.mark.parametrize(
    ("task", "words"),
    [
        ("text_to_speech", "exactly one Piper voice .onnx file"),
        ("image_to_text", "exactly one detection graph"),
        ("audio_classification", "exactly one .onnx"),
    ],
)
def test_a_folder_without_the_graphs_is_refused_saying_what_is_missing(
    tmp_path: Path, task: str, words: str
) -> None:
    source = tmp_path / "empty"
    source.mkdir()
    with pytest.raises(InvalidArgument) as caught:
        import_model(source, task, models_dir=tmp_path / "models", log=lambda _: None)
    assert words in str(caught.value)
    assert not (tmp_path / "models" / "empty").exists()
