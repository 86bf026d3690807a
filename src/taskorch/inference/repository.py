"""The model repository: a directory with one folder per model (like Triton's).

::

    models/
      all-minilm-l6-v2/        model.yaml, model.onnx, tokenizer.json, ...
      pii-rampart/             model.yaml, onnx/model_q4.onnx, tokenizer.json, ...

Folders whose name starts with "." are ignored (imports and installs stage there and rename
into place). ``scan`` reads every folder's config and a *signature* (file names, sizes and
modification times), so a watcher can tell added, removed and changed models apart by polling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taskorch.inference.config import CONFIG_FILE, ModelConfig, ModelConfigError, load_model_config

# Bounds on what one scan looks at, so a stray huge folder cannot stall the watcher.
MAX_MODELS = 256
MAX_FILES_PER_MODEL = 512

Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class ModelFolder:
    """One model folder as last scanned: its config, or why it has none."""

    name: str
    path: Path
    signature: Signature
    config: ModelConfig | None
    error: str | None


def _signature(path: Path) -> Signature:
    entries: list[tuple[str, int, int]] = []
    for index, file in enumerate(sorted(path.rglob("*"))):
        if index >= MAX_FILES_PER_MODEL:
            break
        if file.is_file():
            stat = file.stat()
            entries.append((str(file.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class ModelRepository:
    """Reads the model folders under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def scan(self) -> dict[str, ModelFolder]:
        """Every model folder by name (missing root: none)."""
        if not self.root.is_dir():
            return {}
        found: dict[str, ModelFolder] = {}
        for path in sorted(self.root.iterdir()):
            if len(found) >= MAX_MODELS:
                break
            if not path.is_dir() or path.name.startswith("."):
                continue
            found[path.name] = self.read(path)
        return found

    def read(self, path: Path) -> ModelFolder:
        """One folder: signature, then config (a bad config is recorded, not raised)."""
        try:
            signature = _signature(path)
        except OSError as exc:  # removed while scanning
            return ModelFolder(path.name, path, (), None, f"cannot read folder: {exc}")
        if not (path / CONFIG_FILE).exists():
            return ModelFolder(
                path.name, path, signature, None, f"{CONFIG_FILE} is missing in {path}"
            )
        try:
            config = load_model_config(path)
        except ModelConfigError as exc:
            return ModelFolder(path.name, path, signature, None, f"invalid {CONFIG_FILE}: {exc}")
        return ModelFolder(path.name, path, signature, config, None)
