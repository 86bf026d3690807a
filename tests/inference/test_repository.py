"""The model repository: failures are reported per model, folders are picked up while serving."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
import yaml

from taskorch.domain.errors import InvalidArgument, Unavailable
from taskorch.inference import InferenceEngine, ModelState
from taskorch.inference.config import ModelConfigError, parse_model_config

from .tiny_models import TinyModels


def _copy(tiny: TinyModels, name: str, target: Path) -> Path:
    """A model folder as hard links (fast, no extra disk)."""

    def link(src: str, dst: str) -> str:
        Path(dst).hardlink_to(src)
        return dst

    shutil.copytree(tiny.models_dir / name, target, copy_function=link)
    return target


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({}, "task is required"),
        ({"task": "teleport"}, "not supported"),
        ({"task": "feature_extraction", "max_batch_size": 0}, "max_batch_size"),
        ({"task": "feature_extraction", "instances": 0}, "instances"),
        ({"task": "feature_extraction", "instances": "many"}, "instances"),
        ({"task": "feature_extraction", "truncation": "maybe"}, "truncation"),
        ({"task": "feature_extraction", "colour": "red"}, "unknown keys"),
        ({"task": "feature_extraction", "default_for": ["text_generation"]}, "cannot serve"),
    ],
)
def test_bad_model_configs_are_explained(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ModelConfigError, match=needle):
        parse_model_config(raw)


async def test_a_broken_model_is_failed_while_the_others_serve(
    tiny: TinyModels, tmp_path: Path
) -> None:
    _copy(tiny, "tiny-bert-embed", tmp_path / "good")
    broken = _copy(tiny, "tiny-bert-embed", tmp_path / "broken")
    (broken / "model.onnx").unlink()
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    (tmp_path / "no-config").mkdir()
    engine = InferenceEngine(tmp_path, poll_seconds=0)
    await engine.start()
    try:
        states = {m.name: m for m in engine.models()}
        assert states["good"].state is ModelState.READY
        assert states["broken"].state is ModelState.FAILED
        assert states["broken"].error
        assert states["no-config"].state is ModelState.FAILED
        assert "model.yaml" in (states["no-config"].error or "")
        with pytest.raises(Unavailable, match="failed to load"):
            engine.check("feature_extraction", "broken", {"inputs": "x"}, {})
        request = engine.check("feature_extraction", "good", {"inputs": "x"}, {})
        assert (await engine.run(request)).result["dimensions"] == 64
    finally:
        await engine.close()


async def test_hot_add_and_remove_are_picked_up_by_the_watcher(
    tiny: TinyModels, tmp_path: Path
) -> None:
    engine = InferenceEngine(tmp_path, poll_seconds=0.2)
    await engine.start()
    try:
        assert engine.models() == []
        staging = _copy(tiny, "tiny-bert-sentiment", tmp_path / ".staging")
        staging.rename(tmp_path / "sentiment")
        deadline = time.monotonic() + 20
        while not any(m.state is ModelState.READY for m in engine.models()):
            assert time.monotonic() < deadline, engine.models()
            await asyncio.sleep(0.1)
        request = engine.check("text_classification", "sentiment", {"inputs": "good"}, {})
        assert (await engine.run(request)).result["label"] in {"NEGATIVE", "POSITIVE"}
        shutil.rmtree(tmp_path / "sentiment")
        while engine.models():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        await engine.close()


async def test_refuse_policy_rejects_over_long_input_before_queueing(
    tiny: TinyModels, tmp_path: Path
) -> None:
    folder = _copy(tiny, "tiny-bert-embed", tmp_path / "strict")
    config = yaml.safe_load((folder / "model.yaml").read_text())
    config.update(truncation="refuse", max_input_length=16)
    (folder / "model.yaml").unlink()
    (folder / "model.yaml").write_text(yaml.safe_dump(config))
    engine = InferenceEngine(tmp_path, poll_seconds=0)
    await engine.start()
    try:
        with pytest.raises(InvalidArgument, match="at most 16") as caught:
            engine.check("feature_extraction", "strict", {"inputs": "parse " * 40}, {})
        assert caught.value.violations[0].field == "input_data.inputs"
        engine.check("feature_extraction", "strict", {"inputs": "parse"}, {})
    finally:
        await engine.close()


async def test_int8_import_is_quality_checked_and_served(tiny: TinyModels, tmp_path: Path) -> None:
    from taskorch.inference.export import import_model

    report = import_model(
        tiny.torch_dir / "tiny-bert-embed",
        "feature-extraction",
        models_dir=tmp_path,
        name="Embed INT8",
        quantize="int8",
        log=lambda _: None,
    )
    assert report.name == "embed-int8"
    check = report.quantization_check
    assert check is not None and check.passed and check.cosine_mean >= 0.99
    assert report.max_abs_diff <= report.tolerance
    engine = InferenceEngine(tmp_path, poll_seconds=0)
    await engine.start()
    try:
        info = engine.model("embed-int8")
        assert info.state is ModelState.READY and info.quantization == "int8"
        request = engine.check("feature_extraction", "embed-int8", {"inputs": "x"}, {})
        assert (await engine.run(request)).result["dimensions"] == 64
    finally:
        await engine.close()
