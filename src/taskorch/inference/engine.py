"""The inference engine: the one object worker handlers and the ModelService talk to.

It owns the model repository (loading every folder at start, then watching it for added,
changed and removed models), checks requests before they are queued (``check``: task type,
model, input shape, input length) and runs them (``run``), returning a JSON-serialisable
result and what it cost. A model that fails to load is listed as FAILED with its error; a model
that fails on a request fails that request only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskorch.domain.errors import (
    InternalError,
    InvalidArgument,
    ModelNotFound,
    NoModelForTask,
    TaskorchError,
    Unavailable,
)
from taskorch.inference.pipelines import PIPELINES
from taskorch.inference.pipelines.base import OnProgress, step_progress
from taskorch.inference.remote import RemoteModel
from taskorch.inference.repository import ModelFolder, ModelRepository
from taskorch.inference.runtime import LoadedModel, folder_size
from taskorch.inference.task_types import (
    DEDICATED_TASKS,
    NO_DEFAULT_MODEL,
    SEQ2SEQ_FAMILIES,
    ModelFamily,
    TaskType,
    canonical_task_type,
    families_of,
    serves,
    supported_task_types,
    task_types_of,
)
from taskorch.inference.types import (
    InferenceRequest,
    InferenceResult,
    ModelInfo,
    ModelState,
    ResourceUsage,
)

log = logging.getLogger(__name__)

OnOutput = Callable[[str], Awaitable[None]]
DEFAULT_POLL_SECONDS = 2.0


@dataclass
class _Entry:
    folder: ModelFolder
    state: ModelState
    model: LoadedModel | None = None
    error: str | None = None
    load_seconds: float | None = None
    remote: RemoteModel | None = None  # provider: openai

    def info(self) -> ModelInfo:
        if self.remote is not None:
            return self.remote.info()
        if self.model is not None and self.state is ModelState.READY:
            return self.model.info()
        config = self.folder.config
        return ModelInfo(
            name=self.folder.name,
            task=config.task if config else None,
            family=config.family if config else None,
            state=self.state,
            path=self.folder.path,
            providers_requested=config.providers if config else (),
            max_batch_size=config.max_batch_size if config else 0,
            max_queue_delay_ms=config.max_queue_delay_ms if config else 0.0,
            max_input_length=config.max_input_length if config else 0,
            quantization=config.quantization if config else "none",
            quantization_check=config.quantization_check if config else None,
            labels=config.labels or () if config else (),
            default_for=config.default_for if config else (),
            task_types=tuple(task_types_of(config.family)) if config else (),
            error=self.error,
            size_bytes=_safe_size(self.folder.path),
            load_seconds=self.load_seconds,
        )


def _safe_size(path: Path) -> int:
    try:
        return folder_size(path)
    except OSError:
        return 0


_MEMORY_REFRESH_SECONDS = 1.0
_memory_sample = (-_MEMORY_REFRESH_SECONDS, 0.0)  # (monotonic time read, GB)


def _memory_gb() -> float:
    """Resident memory of this process in GB (peak RSS where /proc is missing), read at most
    once a second: reading /proc on every request cost more than a small model's batch share."""
    global _memory_sample
    now = time.monotonic()
    if now - _memory_sample[0] < _MEMORY_REFRESH_SECONDS:
        return _memory_sample[1]
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        gb = pages * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    _memory_sample = (now, gb)
    return gb


class InferenceEngine:
    """Serve the models of one repository directory.

    Args:
        models_dir: the repository (one folder per model, each with a ``model.yaml``).
        prefer_gpu: ask for CUDA first when a model's config lists it.
        threads: ONNX Runtime intra-op threads per session (default: the usable cores).
        poll_seconds: how often the repository is checked for changes (0: never).
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        prefer_gpu: bool = True,
        threads: int | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self.models_dir = models_dir
        self.prefer_gpu = prefer_gpu
        self.threads = threads
        self.poll_seconds = poll_seconds
        self._repository = ModelRepository(models_dir)
        self._entries: dict[str, _Entry] = {}
        self._refresh_lock = asyncio.Lock()
        self._loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load every model of the repository (failures are recorded) and start watching it."""
        await self.refresh()
        if self.poll_seconds > 0 and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="model-repository-watcher"
            )

    async def close(self) -> None:
        """Stop watching, unload every model and release the threads."""
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        async with self._refresh_lock:
            entries, self._entries = list(self._entries.values()), {}
            for entry in entries:
                await _close(entry)
        self._loader.shutdown(wait=True)

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
                await self.probe_remotes()
            except Exception:  # the watcher must outlive a bad scan
                log.exception("model repository scan failed")

    async def probe_remotes(self) -> None:
        """Check every remote model's server once (its state follows)."""
        remotes = [e.remote for e in self._entries.values() if e.remote is not None]
        await asyncio.gather(*(remote.probe() for remote in remotes))

    async def refresh(self) -> None:
        """Scan the repository once: load added or changed models, unload removed ones."""
        async with self._refresh_lock:
            loop = asyncio.get_running_loop()
            folders = await loop.run_in_executor(self._loader, self._repository.scan)
            for name in [n for n in self._entries if n not in folders]:
                entry = self._entries.pop(name)
                log.info("model %s removed from the repository", name)
                await _close(entry)
            changed = [
                folder
                for name, folder in folders.items()
                if name not in self._entries
                or self._entries[name].folder.signature != folder.signature
            ]
            for folder in changed:
                old = self._entries.get(folder.name)
                if old is None or (old.model is None and old.remote is None):
                    self._entries[folder.name] = _Entry(folder, ModelState.LOADING)
            await asyncio.gather(*(self._load(folder) for folder in changed))

    async def _load(self, folder: ModelFolder) -> None:
        old = self._entries.get(folder.name)
        if folder.config is None:
            entry = _Entry(folder, ModelState.FAILED, error=folder.error)
        elif folder.config.remote is not None:
            remote = RemoteModel(folder.name, folder.path, folder.config)
            await remote.probe()
            entry = _Entry(folder, remote.state, remote=remote)
            log.info("remote model %s at %s: %s", folder.name, remote.endpoint, remote.state)
        else:
            started = time.perf_counter()
            try:
                model = await asyncio.get_running_loop().run_in_executor(
                    self._loader,
                    lambda: LoadedModel.load(
                        folder.name,
                        folder.path,
                        folder.config,  # type: ignore[arg-type]
                        prefer_gpu=self.prefer_gpu,
                        threads=self.threads,
                    ),
                )
            except Exception as exc:
                log.warning("model %s failed to load: %s", folder.name, exc)
                entry = _Entry(
                    folder,
                    ModelState.FAILED,
                    error=f"{type(exc).__name__}: {exc}",
                    load_seconds=time.perf_counter() - started,
                )
            else:
                model.start()
                entry = _Entry(folder, ModelState.READY, model, load_seconds=model.load_seconds)
                log.info(
                    "model %s ready on %s in %.1fs",
                    folder.name,
                    model.session.providers_active[0],
                    model.load_seconds,
                )
        self._entries[folder.name] = entry
        if old is not None:
            await _close(old)

    # --- descriptions --------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every model folder of the repository, loaded or not, by name."""
        return [self._entries[name].info() for name in sorted(self._entries)]

    def model(self, name: str) -> ModelInfo:
        """One model's description.

        Raises:
            ModelNotFound: no folder of that name (the message lists the models).
        """
        entry = self._entry(name)
        return entry.info()

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFound(name, available=self._entries)
        return entry

    def is_remote(self, name: str) -> bool:
        """Whether model ``name`` is served by another server (``provider: openai``).

        Raises:
            ModelNotFound: no folder of that name.
        """
        return self._entry(name).remote is not None

    def task_of(self, name: str) -> str:
        """The task type model ``name`` was imported for ("" when its config is unreadable),
        without building its whole description.

        Raises:
            ModelNotFound: no folder of that name (the message lists the models).
        """
        entry = self._entry(name)
        config = entry.folder.config
        return str(config.task) if config is not None and config.task else ""

    def supported_task_types(self) -> list[str]:
        """Canonical names of the task types this engine can run."""
        return supported_task_types()

    def canonical_task_type(self, task_type: str) -> str:
        """The canonical name of any accepted spelling.

        Raises:
            UnsupportedTaskType: the engine cannot run this task type at all.
        """
        return str(canonical_task_type(task_type))

    # --- requests ------------------------------------------------------------------------

    def _default_model(self, task: TaskType) -> _Entry:
        families = families_of(task)
        entries = [self._entries[n] for n in sorted(self._entries)]
        ranked = sorted(
            (
                e
                for e in entries
                if e.folder.config is not None
                and e.folder.config.family in families
                and (
                    task not in DEDICATED_TASKS
                    or task is e.folder.config.task
                    or task in e.folder.config.default_for
                )
            ),
            key=lambda e: (
                task not in e.folder.config.default_for,  # type: ignore[union-attr]
                e.folder.config.family is not families[0],  # type: ignore[union-attr]
                e.state is not ModelState.READY,
            ),
        )
        if not ranked:
            raise NoModelForTask(
                task.value,
                families[0].value,
                dedicated=task in DEDICATED_TASKS,
                has_default=task not in NO_DEFAULT_MODEL,
            )
        return ranked[0]

    def capacity_of(self, model_name: str) -> int | None:
        """How many requests model ``model_name`` runs at once; None when it is not loaded
        here (loading, failed, or served by another server)."""
        entry = self._entries.get(model_name)
        if entry is None or entry.model is None or entry.state is not ModelState.READY:
            return None
        return entry.model.capacity

    def _serving(self, name: str) -> LoadedModel:
        entry = self._entry(name)
        if entry.state is ModelState.LOADING:
            raise Unavailable(f"model {name!r} is still loading", retry_after_seconds=2.0)
        if entry.state is ModelState.FAILED or entry.model is None:
            raise Unavailable(
                f"model {name!r} failed to load: {entry.error}", retry_after_seconds=None
            )
        return entry.model

    def check(
        self,
        task_type: str,
        model_name: str,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
    ) -> InferenceRequest:
        """Check a request before it is queued (synchronous, cheap).

        Args:
            task_type: any accepted spelling (``text-generation``, ``text_generation``, ...).
            model_name: a model of the repository, or "" for the task's default model.
            input_data: the task's input (Hugging Face Inference API shapes).
            parameters: the task's parameters.

        Returns:
            The request with canonical task type and resolved model name.

        Raises:
            UnsupportedTaskType: the engine cannot run this task type (lists what it can).
            ModelNotFound: no such model, or no model serves the task type.
            InvalidArgument: the model serves another task type, or the input is wrong
                (``field`` names it, e.g. ``input_data.candidate_labels``).
            Unavailable: the model is loading or failed to load.
        """
        task = canonical_task_type(task_type)
        if not isinstance(input_data, Mapping):
            raise InvalidArgument("input_data must be an object", field="input_data")
        if not isinstance(parameters, Mapping):
            raise InvalidArgument("parameters must be an object", field="parameters")
        name = model_name.strip()
        if not name:
            name = self._default_model(task).folder.name
        remote = self._entry(name).remote
        if remote is not None:
            if not serves(remote.config.family, task):
                served = ", ".join(t.value for t in task_types_of(remote.config.family))
                raise InvalidArgument(
                    f"model {name!r} is a remote {remote.config.family.value} model: it serves "
                    f"{served}, not {task.value}",
                    field="model_name",
                )
            remote.validate(task, input_data, parameters)
            remote.check_serving()
            return InferenceRequest(task, name, dict(input_data), dict(parameters))
        model = self._serving(name)
        if not serves(model.config.family, task):
            served = ", ".join(t.value for t in task_types_of(model.config.family))
            raise InvalidArgument(
                f"model {name!r} is a {model.config.family.value} model: it serves {served}, "
                f"not {task.value}",
                field="model_name",
            )
        PIPELINES[task].validate(model, input_data, parameters)
        return InferenceRequest(task, name, dict(input_data), dict(parameters))

    async def run(
        self,
        request: InferenceRequest,
        *,
        on_output: OnOutput | None = None,
        on_progress: OnProgress | None = None,
        cancel: asyncio.Event | None = None,
    ) -> InferenceResult:
        """Run a checked request.

        Args:
            request: from ``check``.
            on_output: receives generated text deltas as they are produced (generation tasks);
                they concatenate exactly to the result's ``generated_text``.
            on_progress: receives (steps done, steps in all) after each step of a stepped
                task (image_generation: one per denoising step).
            cancel: set it to stop the request. Generation stops within a step and returns
                what it has with ``finish_reason`` "cancelled"; other tasks raise
                ``asyncio.CancelledError``.

        Raises:
            ModelNotFound / Unavailable: the model went away or is not ready.
            InvalidArgument: the input is wrong.
            InternalError: the model failed on this request (the engine keeps serving).
        """
        remote = self._entry(request.model_name).remote
        if remote is not None:
            return await self._run_remote(remote, request, on_output, cancel)
        model = self._serving(request.model_name)
        pipeline = PIPELINES[request.task_type]
        started = time.perf_counter()
        work = pipeline.run(
            model, request.input_data, request.parameters, on_output=on_output, cancel=cancel
        )
        # Set for this run only: ``work`` runs in this task's context (or a copy of it).
        token = step_progress.set(on_progress)
        try:
            if cancel is None or model.config.family in (
                ModelFamily.CAUSAL_LM,
                *SEQ2SEQ_FAMILIES,
            ):
                result = await work
            else:
                result = await _cancellable(work, cancel)
        except (TaskorchError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("model %s failed on a %s request", model.name, request.task_type)
            raise InternalError(
                f"model {model.name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            step_progress.reset(token)
        seconds = time.perf_counter() - started
        result["inference_time"] = round(seconds, 6)
        usage = ResourceUsage(
            model_name=model.name,
            inference_time_seconds=seconds,
            memory_used_gb=_memory_gb(),
            execution_provider=model.session.providers_active[0],
        )
        return InferenceResult(result=result, resource_usage=usage)

    async def _run_remote(
        self,
        remote: RemoteModel,
        request: InferenceRequest,
        on_output: OnOutput | None,
        cancel: asyncio.Event | None,
    ) -> InferenceResult:
        started = time.perf_counter()
        try:
            result = await remote.run(
                request.task_type,
                request.input_data,
                request.parameters,
                on_output=on_output,
                cancel=cancel,
            )
        except (TaskorchError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("remote model %s failed on a %s request", remote.name, request.task_type)
            raise InternalError(
                f"remote model {remote.name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        seconds = time.perf_counter() - started
        result["inference_time"] = round(seconds, 6)
        usage = ResourceUsage(
            model_name=remote.name,
            inference_time_seconds=seconds,
            memory_used_gb=_memory_gb(),
            execution_provider=remote.info().execution_provider,
        )
        return InferenceResult(result=result, resource_usage=usage)


async def _close(entry: _Entry) -> None:
    if entry.model is not None:
        await entry.model.close()
    if entry.remote is not None:
        await entry.remote.close()


async def _cancellable(work: Awaitable[dict[str, Any]], cancel: asyncio.Event) -> dict[str, Any]:
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise asyncio.CancelledError("cancelled by request")
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
