"""Fixtures: tiny locally built models and the real default models, each served by an engine."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from taskorch.inference import InferenceEngine
from taskorch.inference.defaults import cache_dir, install_default_models

from .tiny_models import TinyModels, build_tiny_models


@pytest.fixture(scope="session")
def tiny() -> TinyModels:
    """Tiny random models of every family (built once, cached across sessions)."""
    return build_tiny_models()


TEXT_DEFAULTS = (
    "all-minilm-l6-v2",
    "all-minilm-l6-v2-int8",
    "smollm2-135m-instruct",
    "pii-rampart",
)
MEDIA_DEFAULTS = ("piper-joe-medium", "pp-ocrv4", "silero-vad")


@pytest.fixture(scope="session")
def default_models_dir() -> Path:
    """The text default models, converted once (cached) and installed into a cache
    folder (the media ones load slowly enough to keep them out of servers that do not use
    them: ``media_models_dir``)."""
    target = cache_dir() / "test-default-models"
    for name in MEDIA_DEFAULTS:  # left by an earlier version of this fixture
        shutil.rmtree(target / name, ignore_errors=True)
    install_default_models(target, log=lambda _: None, only=TEXT_DEFAULTS)
    return target


@pytest.fixture(scope="session")
def media_models_dir() -> Path:
    """The three media default models (text to speech, OCR, voice activity)."""
    target = cache_dir() / "test-media-models"
    install_default_models(target, log=lambda _: None, only=MEDIA_DEFAULTS)
    return target


@pytest_asyncio.fixture(scope="session")
async def tiny_engine(tiny: TinyModels) -> AsyncIterator[InferenceEngine]:
    engine = InferenceEngine(tiny.models_dir, poll_seconds=0)
    await engine.start()
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="session")
async def default_engine(default_models_dir: Path) -> AsyncIterator[InferenceEngine]:
    engine = InferenceEngine(default_models_dir, poll_seconds=0)
    await engine.start()
    yield engine
    await engine.close()
