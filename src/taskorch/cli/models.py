"""``taskorch models …``: import Hugging Face models, install the defaults, list the repository."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from taskorch.cli._common import API_KEY, SERVER, client, reporting_errors
from taskorch.client import ModelInfo

app = typer.Typer(
    name="models",
    help="Manage the model repository: import, install the defaults, add a remote model, list.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def default_models_dir() -> Path:
    """``$TASKORCH_MODELS_DIR`` or ``./var/models``."""
    return Path(os.environ.get("TASKORCH_MODELS_DIR") or "var/models")


MODELS_DIR_OPTION = typer.Option(
    None,
    "--models-dir",
    help="Model repository (default: $TASKORCH_MODELS_DIR or ./var/models).",
)


@app.command("import")
def import_command(
    src: Annotated[
        Path,
        typer.Argument(
            help="A Hugging Face model directory (or one with a .gguf); for text_to_speech a "
            "Piper voice (.onnx + .onnx.json), a VitsModel folder or a SpeechT5ForTextToSpeech "
            "folder with its SpeechT5HifiGan in vocoder/, for image_to_text PP-OCR det/rec .onnx "
            "graphs (or a VisionEncoderDecoderModel captioner, exported), for "
            "audio_classification silero_vad.onnx or a Hugging Face audio classifier (Wav2Vec2, "
            "HuBERT, WavLM, AST) with its preprocessor_config.json."
        ),
    ],
    task: str = typer.Option(
        ..., "--task", help="Task type, e.g. feature_extraction, text_to_speech, image_to_text."
    ),
    name: str | None = typer.Option(None, "--name", help="Model name (default: folder name)."),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        help="int8: ONNX Runtime dynamic quantization (QInt8 weights per channel) of an encoder "
        "model (feature_extraction, classification, token_classification, question_answering, "
        "fill_mask; not generation). Kept only when it agrees with the float model on probe "
        "inputs (mean cosine >= 0.99, none below 0.95, same top label); the figures are stored "
        "in model.yaml and shown by `models list`, and a failing check refuses the import.",
    ),
    models_dir: Path | None = MODELS_DIR_OPTION,
) -> None:
    """Export SRC to ONNX, validate it and add it to the repository.

    The export runs optimum and is checked against PyTorch; media folders, whose graphs are ONNX
    already, are copied and checked to load.
    """
    from taskorch.domain.errors import TaskorchError
    from taskorch.inference.export import ExportError, import_model

    try:
        report = import_model(
            src,
            task,
            models_dir=models_dir or default_models_dir(),
            name=name,
            quantize=quantize,
            log=typer.echo,
        )
    except (TaskorchError, ExportError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if not report.export_task:  # a media folder: nothing was exported or compared
        typer.echo(f"{report.name}: {report.task} model ready")
        return
    check = report.quantization_check
    typer.echo(
        f"{report.name}: max abs diff {report.max_abs_diff:.3g} <= {report.tolerance:.3g}"
        + (f"; int8 kept: {check.summary()}" if check else "")
    )


@app.command("defaults")
def defaults_command(models_dir: Path | None = MODELS_DIR_OPTION) -> None:
    """Convert (once, cached) and install the default models.

    Embeddings (MiniLM, and its quality-checked int8 variant all-minilm-l6-v2-int8), chat, PII
    tagger, text to speech, OCR, voice activity.
    """
    from taskorch.inference.defaults import DefaultModelUnavailable, install_default_models

    try:
        paths = install_default_models(models_dir or default_models_dir(), log=typer.echo)
    except DefaultModelUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in paths:
        typer.echo(f"ready: {path}")


@app.command("add-remote")
def add_remote_command(
    name: Annotated[str, typer.Argument(help="The model's name on this server.")],
    base_url: str = typer.Option(
        ..., "--base-url", help="The remote's OpenAI base URL, e.g. http://gpu-box:8000/v1."
    ),
    model: str = typer.Option(..., "--model", help="The model's name on the remote server."),
    task: str = typer.Option(
        "text_generation", "--task", help="text_generation (chat too) or feature_extraction."
    ),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="Environment variable of the server holding the remote's key."
    ),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per request.", min=0.001),
    max_concurrency: int = typer.Option(
        16, "--max-concurrency", help="Requests in flight to the remote at once.", min=1
    ),
    prompts: str = typer.Option(
        "chat",
        "--prompts",
        help="Where a bare prompt goes: chat (as a user message) or completions (raw text, for "
        "base models without a chat template).",
    ),
    models_dir: Path | None = MODELS_DIR_OPTION,
) -> None:
    """Add a remote model (provider: openai) served by an OpenAI-compatible server.

    vLLM, TGI, TEI, Ollama, llama.cpp, a hosted API or another taskorch. A running server picks
    it up within seconds.
    """
    import yaml

    from taskorch.inference.config import CONFIG_FILE, ModelConfigError, parse_model_config

    raw: dict[str, Any] = {
        "provider": "openai",
        "task": task,
        "base_url": base_url,
        "model": model,
        **({"api_key_env": api_key_env} if api_key_env else {}),
        "timeout_seconds": timeout,
        "max_concurrency": max_concurrency,
        "prompts": prompts,
    }
    try:
        config = parse_model_config(raw)
    except ModelConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    root = models_dir or default_models_dir()
    target = root / name
    if not name or name.startswith(".") or "/" in name or target.exists():
        why = "exists already" if target.exists() else "is not a folder name"
        typer.echo(f"error: model {name!r} {why} in {root}", err=True)
        raise typer.Exit(1)
    # Written aside and renamed into place: the server never reads half a folder.
    staging = root / f".{name}.adding"
    staging.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config.to_yaml_dict(), sort_keys=False)
    (staging / CONFIG_FILE).write_text(text, encoding="utf-8")
    staging.rename(target)
    typer.echo(f"added {name}: {model} at {config.remote.base_url if config.remote else base_url}")
    if api_key_env and api_key_env not in os.environ:
        typer.echo(f"note: set {api_key_env} in the server's environment", err=True)


async def _local_rows(models_dir: Path) -> list[dict[str, Any]]:
    from taskorch.inference import InferenceEngine

    engine = InferenceEngine(models_dir, poll_seconds=0)
    await engine.start()
    try:
        return [_local_row(info) for info in engine.models()]
    finally:
        await engine.close()


def _server_row(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "task": info.task or None,
        "family": info.family or None,
        "state": info.state,
        "execution_provider": info.execution_provider,
        "providers_requested": list(info.providers_requested),
        "providers_active": list(info.providers_active),
        "max_batch_size": info.max_batch_size,
        "max_queue_delay_ms": info.max_queue_delay_ms,
        "max_input_length": info.max_input_length,
        "quantization": info.quantization,
        "default_for": list(info.default_for),
        "size_bytes": info.size_bytes,
        "load_seconds": info.load_seconds,
        "instances": info.instances,
        "error": info.error,
        "provider": info.provider,
        "remote_url": info.remote_url,
        "remote_model": info.remote_model,
        "quantization_check": _check_row(info.quantization_check),
    }


def _check_row(check: Any) -> dict[str, Any] | None:
    """The int8 quality figures (an SDK or an engine ``QuantizationCheck``) as plain JSON."""
    if check is None:
        return None
    return {
        "probes": check.probes,
        "cosine_mean": check.cosine_mean,
        "cosine_min": check.cosine_min,
        "cosine_threshold": check.cosine_threshold,
        "cosine_floor": check.cosine_floor,
        "top_label_agreement": check.top_label_agreement,
        "float_size_bytes": check.float_size_bytes,
        "int8_size_bytes": check.int8_size_bytes,
    }


def _quant_cell(row: dict[str, Any]) -> str:
    """The quantization cell: ``int8 cos 0.991 (min 0.963, 24 probes)`` when checked."""
    check = row.get("quantization_check")
    if not check:
        return str(row["quantization"])
    cell = (
        f"{row['quantization']} cos {check['cosine_mean']:.3f} "
        f"(min {check['cosine_min']:.3f}, {check['probes']} probes"
    )
    if check.get("top_label_agreement") is not None:
        cell += f", same label {check['top_label_agreement']:.0%}"
    return cell + ")"


def _local_row(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "task": info.task.value if info.task else None,
        "family": info.family.value if info.family else None,
        "state": info.state.value,
        "execution_provider": info.providers_active[0] if info.providers_active else "",
        "providers_requested": list(info.providers_requested),
        "providers_active": list(info.providers_active),
        "max_batch_size": info.max_batch_size,
        "max_queue_delay_ms": info.max_queue_delay_ms,
        "max_input_length": info.max_input_length,
        "quantization": info.quantization,
        "default_for": [t.value for t in info.default_for],
        "size_bytes": info.size_bytes,
        "load_seconds": info.load_seconds,
        "instances": info.instances,
        "error": info.error,
        "path": str(info.path),
        "provider": info.provider,
        "remote_url": info.remote_url,
        "remote_model": info.remote_model,
        "quantization_check": _check_row(info.quantization_check),
    }


def _provider(row: dict[str, Any]) -> str:
    if row.get("provider"):  # a remote model: who serves it
        return f"{row['provider']}: {row['remote_model']} at {row['remote_url']}"
    short = [str(p).removesuffix("ExecutionProvider") for p in row["providers_active"]]
    asked = [str(p).removesuffix("ExecutionProvider") for p in row["providers_requested"]]
    if not short:
        return "-"
    if asked and asked[0] != short[0]:
        return f"{short[0]} (asked {asked[0]})"
    return short[0]


@app.command("list")
def list_command(
    models_dir: Path | None = MODELS_DIR_OPTION,
    local: bool = typer.Option(
        False, "--local", help="Load the repository in this process instead of asking a server."
    ),
    server: str = SERVER,
    api_key: str | None = API_KEY,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show every model, its state and the execution provider really used.

    As the server at --server runs them, or (--local) as this machine loads the repository.
    """
    if local:
        rows = asyncio.run(_local_rows(models_dir or default_models_dir()))
    else:
        with reporting_errors(), client(server, api_key) as api:
            rows = [_server_row(info) for info in api.models.list()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "name", "task", "state", "provider", "batch", "instances", "quant", "size MB", "error"
    )
    for row in rows:
        table.add_row(
            row["name"],
            row["task"] or "-",
            row["state"],
            _provider(row),
            str(row["max_batch_size"]),
            str(row["instances"] or "-"),
            _quant_cell(row),
            f"{row['size_bytes'] / 1e6:.1f}",
            row["error"] or "",
        )
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
