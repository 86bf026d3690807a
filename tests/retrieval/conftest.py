"""A model repository for retrieval: the default embedding model (all-MiniLM-L6-v2, real
meaning) and the tiny text-generation model (a chat that answers from collections)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.conftest import default_models_dir, tiny
from tests.inference.tiny_models import TinyModels

__all__ = ["default_models_dir", "retrieval_models", "tiny"]

EMBEDDER = "all-minilm-l6-v2"
CHAT_MODEL = "tiny-gpt2"


def retrieval_repository(root: Path, tiny: TinyModels, default_models_dir: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for source in (default_models_dir / EMBEDDER, tiny.models_dir / CHAT_MODEL):
        (root / source.name).symlink_to(source, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def retrieval_models(
    tmp_path_factory: pytest.TempPathFactory, tiny: TinyModels, default_models_dir: Path
) -> Path:
    return retrieval_repository(
        tmp_path_factory.mktemp("retrieval") / "models", tiny, default_models_dir
    )
