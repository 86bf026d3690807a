"""The ``git_script`` kind (seed 002's git-script-execution): clone a repository, run a
script from it, keep its output.

It runs arbitrary code, so the server never runs it in-process: only a remote worker
started with ``taskorch worker --allow-scripts`` takes it. The clone and the script each run
under a time limit; output files stay inside the worker's output directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from taskorch.workers.handlers import HandlerFn, Outcome, PermanentFailure, WorkContext

KIND = "git_script"
CLONE_TIMEOUT = 300.0
SCRIPT_TIMEOUT = 1800.0
TAIL = 20_000


def git_script_handler(output_dir: Path) -> HandlerFn:
    output_root = output_dir.resolve()

    def run_git_script(ctx: WorkContext) -> Outcome:
        data: dict[str, Any] = ctx.input
        repo_url = str(data.get("repo_url") or "")
        script_path = str(data.get("script_path") or "")
        output_path = str(data.get("output_path") or "")
        if not repo_url or not script_path:
            raise PermanentFailure("input needs repo_url and script_path")
        target = _inside(output_root, output_path) if output_path else None
        workdir = Path(tempfile.mkdtemp(prefix="taskorch-script-"))
        started = time.monotonic()
        try:
            clone = subprocess.run(
                ["git", "clone", "--depth", "1", "--", repo_url, str(workdir / "repo")],
                capture_output=True,
                text=True,
                timeout=CLONE_TIMEOUT,
                check=False,
            )
            if clone.returncode != 0:  # network or access trouble may pass: retried
                raise RuntimeError(f"git clone failed: {clone.stderr.strip()[-2000:]}")
            repo = (workdir / "repo").resolve()
            script = _inside(repo, script_path)
            if not script.is_file():
                raise PermanentFailure(f"script {script_path!r} is not a file of the repository")
            command = (
                [sys.executable, str(script)] if script.suffix == ".py" else ["bash", str(script)]
            )
            run = subprocess.run(
                command,
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=float(data.get("timeout_seconds") or SCRIPT_TIMEOUT),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PermanentFailure(
                f"timed out after {exc.timeout:g} s", error_code="TIMEOUT"
            ) from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result = {
            "exit_code": run.returncode,
            "stdout": run.stdout[-TAIL:],
            "stderr": run.stderr[-TAIL:],
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(result, indent=2))
            result["output_file"] = str(target)
        if run.returncode != 0:
            raise PermanentFailure(
                f"script exited with {run.returncode}: {run.stderr.strip()[-500:]}",
                error_code="SCRIPT_FAILED",
            )
        return Outcome(result)

    return run_git_script


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing paths that escape ``root``."""
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise PermanentFailure(f"path {relative!r} leaves its directory")
    return path
