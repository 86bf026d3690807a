"""Loaded by the server that bench/task_calls.py starts (this folder on its PYTHONPATH):
profiles the main thread, the server's event loop, with cProfile from the start and writes
the statistics to ``$TASKORCH_CALLS_OUT`` when the server exits. Nothing of this runs in a
server started otherwise."""

from __future__ import annotations

import atexit
import cProfile
import os

OUT = os.environ.get("TASKORCH_CALLS_OUT")

if OUT:
    _profile = cProfile.Profile()
    _profile.enable()

    def _write(out: str = OUT) -> None:
        _profile.disable()
        _profile.dump_stats(out)

    atexit.register(_write)
