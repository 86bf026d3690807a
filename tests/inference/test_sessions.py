"""ONNX Runtime sessions: the provider really used, and a failed provider reported once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort

# Loads every given model on a thread of its own at once, asking for CUDA first (as the
# engine does when models load in parallel), and prints where each one runs.
_LOAD_IN_PARALLEL = """
import logging, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from taskorch.inference.sessions import ModelSession

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
paths = [Path(p) for p in sys.argv[1:]]
with ThreadPoolExecutor(len(paths)) as pool:
    sessions = list(pool.map(
        lambda p: ModelSession(p, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]),
        paths,
    ))
for session in sessions:
    print(session.providers_active[0])
"""


def test_a_provider_that_fails_to_load_is_reported_once_for_models_loading_at_once(
    default_models_dir: Path,
) -> None:
    paths = [
        str(sorted(folder.rglob("*.onnx"))[0])
        for folder in sorted(default_models_dir.iterdir())
        if folder.is_dir() and any(folder.rglob("*.onnx"))
    ]
    assert len(paths) == 4  # MiniLM and its int8 variant, the PII tagger, the chat model
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_PARALLEL, *paths],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    active = done.stdout.split()
    assert len(active) == len(paths)
    reports = [line for line in done.stderr.splitlines() if "will not ask for" in line]
    if "CUDAExecutionProvider" in ort.get_available_providers() and "CPUExecutionProvider" in (
        active
    ):
        # This build has CUDA but it could not load here (no GPU, or no CUDA libraries).
        assert len(reports) == 1, done.stderr
        assert set(active) == {"CPUExecutionProvider"}
    else:
        assert reports == [], done.stderr
