"""ONNX Runtime sessions: provider choice, the provider really used, and one ``run`` for CPU/GPU.

The GPU build of ONNX Runtime falls back to CPU *silently* when CUDA cannot load, so the
provider in use is read back from ``session.get_providers()`` after loading and reported as is.
IO binding is used only when CUDA really is the active provider; on CPU the plain ``run`` is
the same code path with less ceremony.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from taskorch.inference.types import TensorInfo

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def default_threads() -> int:
    """Intra-op threads: ``$TASKORCH_ORT_THREADS``, else every core this process may use (2 on
    the reference machine)."""
    configured = os.environ.get("TASKORCH_ORT_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# Providers this build has but that failed to load in this process (CUDA without its
# libraries, say): ONNX Runtime fell back to CPU, printing its reason once. They are not asked
# for again, so later models neither repeat the attempt nor its error lines. Until a provider
# has loaded once, sessions asking for it are created one at a time (models load on threads of
# their own, and all of them would otherwise try, and print, at once).
_failed_to_load: set[str] = set()
_loaded: set[str] = {"CPUExecutionProvider"}
_first_load = threading.Lock()


def choose_providers(requested: Sequence[str], *, prefer_gpu: bool) -> list[str]:
    """The providers to ask for: ``requested`` minus those this build lacks, CPU always last."""
    available = set(ort.get_available_providers())
    chosen = [
        p
        for p in requested
        if p in available
        and p != "CPUExecutionProvider"
        and (prefer_gpu or p not in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    ]
    return [*chosen, "CPUExecutionProvider"]


class ModelSession:
    """One loaded ONNX graph and the truth about where it runs."""

    def __init__(
        self,
        path: Path,
        *,
        providers: Sequence[str],
        prefer_gpu: bool = True,
        threads: int | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # In a server the intra-op threads share the cores with the event loop; spinning
        # between runs (the default) burns the CPU the gRPC side needs.
        if os.environ.get("TASKORCH_ORT_SPIN", "0") != "1":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # the CUDA fallback logs an [E:] line; we report it instead
        self.path = path
        self.providers_requested = tuple(choose_providers(providers, prefer_gpu=prefer_gpu))
        if set(self.providers_requested) <= _loaded | _failed_to_load:
            attempted, unloaded = self._load(options)
        else:
            with _first_load:
                attempted, unloaded = self._load(options)
        self.on_cuda = self.providers_active[0] == "CUDAExecutionProvider"
        if unloaded:
            log.warning(
                "%s: asked for %s but ONNX Runtime runs it on %s (its message above says why); "
                "this process will not ask for %s again",
                path,
                attempted[0],
                self.providers_active[0],
                ", ".join(sorted(unloaded)),
            )
        elif self.providers_requested[0] != self.providers_active[0]:
            log.info(
                "%s runs on %s: %s failed to load earlier in this process",
                path,
                self.providers_active[0],
                self.providers_requested[0],
            )
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.inputs = tuple(_info(i) for i in self.session.get_inputs())
        self.outputs = tuple(_info(o) for o in self.session.get_outputs())

    def _load(self, options: ort.SessionOptions) -> tuple[list[str], set[str]]:
        """Creates the session with the providers not known to fail; returns those asked for
        and those of them that failed to load now."""
        attempted = [p for p in self.providers_requested if p not in _failed_to_load]
        self.session = ort.InferenceSession(str(self.path), options, providers=attempted)
        self.providers_active = tuple(self.session.get_providers())
        unloaded = set(attempted) - set(self.providers_active)
        _loaded.update(self.providers_active)
        _failed_to_load.update(unloaded)
        return attempted, unloaded

    def input(self, name: str) -> TensorInfo:
        """The description of input ``name`` (KeyError when the graph has none)."""
        for item in self.inputs:
            if item.name == name:
                return item
        raise KeyError(name)

    def run(
        self, feed: Mapping[str, Array], output_names: Sequence[str] | None = None
    ) -> dict[str, Array]:
        """Run the graph; inputs the graph does not declare are dropped.

        Returns:
            Outputs by name, as numpy arrays on the host.
        """
        names = list(output_names or self.output_names)
        inputs = {k: v for k, v in feed.items() if k in self.input_names}
        if not self.on_cuda:
            return dict(zip(names, self.session.run(names, inputs), strict=True))
        binding = self.session.io_binding()
        for key, value in inputs.items():
            binding.bind_cpu_input(key, np.ascontiguousarray(value))
        for key in names:
            binding.bind_output(key, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else str(d) for d in (arg.shape or ()))
    return TensorInfo(name=arg.name, dtype=_ORT_DTYPES.get(arg.type, arg.type), shape=shape)
