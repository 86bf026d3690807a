"""``taskorch worker``: run work of a taskorch server on this machine."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

import typer

from taskorch import logs
from taskorch.cli import _loop
from taskorch.cli._common import API_KEY, bearer_token
from taskorch.domain.leases import DEFAULT_LEASE_SECONDS
from taskorch.workers.handlers import HandlerRegistry, builtin_handlers


def _load_handlers(spec: str) -> HandlerRegistry:
    """Loads the handlers named by ``package.module:attribute``.

    The attribute is a taskorch.worker.Worker, a HandlerRegistry or a dict of kind → function.
    """
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:  # like `celery -A`: modules of the current directory
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        value = getattr(module, attribute or "worker")
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--handlers") from None
    handlers = getattr(value, "handlers", value)
    if isinstance(handlers, HandlerRegistry):
        return handlers
    if isinstance(handlers, dict):
        registry = HandlerRegistry()
        for kind, fn in handlers.items():
            registry.register(str(kind), fn)
        return registry
    raise typer.BadParameter(
        f"{spec} is not a Worker, HandlerRegistry or dict", param_hint="--handlers"
    )


def worker(
    server: str = typer.Option(
        "127.0.0.1:50051", "--server", "-s", envvar="TASKORCH_SERVER", help="HOST:PORT of the API."
    ),
    kinds: str = typer.Option(
        "",
        "--kinds",
        "-k",
        help="Comma-separated kinds to run (default: every kind this worker has a handler for).",
    ),
    handlers: list[str] = typer.Option(
        [], "--handlers", help="Your handlers: MODULE:ATTRIBUTE (a taskorch.worker.Worker, ...)."
    ),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Subtasks at once."),
    run_ahead: int | None = typer.Option(
        None,
        "--run-ahead",
        min=0,
        help="While the work is short (under 0.05 s a subtask), keep up to this many more "
        "subtasks in hand, so a freed slot starts the next at once instead of waiting for "
        "its report to commit (default: four per --concurrency slot; 0: never).",
    ),
    worker_id: str = typer.Option("", "--worker-id", help="Stable name (default worker-HOST-PID)."),
    models_dir: Path | None = typer.Option(
        None, "--models-dir", help="Serve inference with the models of this repository."
    ),
    allow_scripts: bool = typer.Option(
        False,
        "--allow-scripts",
        help="Also run git_script work: clones repositories and runs their scripts HERE.",
    ),
    script_output_dir: Path = typer.Option(
        Path("var/script-output"), "--script-output-dir", help="Where git_script writes output."
    ),
    lease_seconds: float = typer.Option(DEFAULT_LEASE_SECONDS, "--lease-seconds", min=1.0),
    drain_seconds: float = typer.Option(
        30.0,
        "--drain-seconds",
        min=0.0,
        help="On SIGTERM or Ctrl-C, how long running work may finish before it is handed "
        "back (a second signal hands it back at once).",
    ),
    api_key: str | None = API_KEY,
    log_level: str = typer.Option("info", envvar="TASKORCH_LOG_LEVEL"),
    log_format: str = typer.Option("auto", envvar="TASKORCH_LOG_FORMAT"),
) -> None:
    """Run a worker: takes subtasks from the server, runs them, reports back.

    It runs the built-in kinds (text_analysis, echo), inference with --models-dir,
    git_script with --allow-scripts, and your own handlers with --handlers. SIGTERM or
    Ctrl-C lets running work finish (up to --drain-seconds), then hands the rest back; a
    second Ctrl-C hands it back at once.
    """
    from taskorch.worker import Worker

    logs.configure(log_level, log_format)
    registry = builtin_handlers()
    engine = None
    if models_dir is not None:
        from taskorch.inference import InferenceEngine
        from taskorch.workers.inference import inference_handler

        engine = InferenceEngine(models_dir)
        registry.register("inference", inference_handler(engine))
    if allow_scripts:
        from taskorch.workers.scripts import KIND, git_script_handler

        registry.register(KIND, git_script_handler(script_output_dir))
    for spec in handlers:
        registry.merge(_load_handlers(spec))
    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = sorted(set(wanted) - set(registry.kinds()))
    if unknown:
        raise typer.BadParameter(
            f"no handler for {', '.join(unknown)}; this worker has {', '.join(registry.kinds())}",
            param_hint="--kinds",
        )
    if wanted:
        registry = registry.only(wanted)
    sdk = Worker(
        server,
        concurrency=concurrency,
        run_ahead=run_ahead,
        worker_id=worker_id or None,
        api_key=api_key,
        bearer_token=bearer_token(),
        lease_seconds=lease_seconds,
        drain_seconds=drain_seconds,
        handlers=registry,
    )

    async def main() -> None:
        from taskorch.worker import stop_on_signals

        stop = asyncio.Event()
        stop_on_signals(sdk, stop)
        if engine is not None:
            await engine.start()
            sdk.models = tuple(m.name for m in engine.models())
        try:
            await sdk.run_async(stop)
        finally:
            if engine is not None:
                await engine.close()

    _loop.run(main())
