"""The ``taskorch`` command against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.conftest import ServerFactory
from tests.servers import ServerProcess


def taskorch(
    server: ServerProcess, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKORCH_SERVER": server.grpc_addr, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "taskorch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def taskorch_json(server: ServerProcess, *args: str) -> Any:
    """The JSON a command printed (it must succeed; its stderr says why when not)."""
    run = taskorch(server, *args, "--json")
    assert run.returncode == 0, (args, run.stdout, run.stderr)
    return json.loads(run.stdout)


def test_submit_prints_the_id_and_follows_to_the_result(server: ServerProcess) -> None:
    run = taskorch(server, "task", "submit", "--text", "Multimodal builds AI tools. AI tools help.")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("task ") and lines[0].endswith(" PENDING")
    assert any("COMPLETED" in line for line in lines)
    assert '"top_words"' in run.stdout and '"tools"' in run.stdout


def test_submit_json_streams_one_object_per_line(server: ServerProcess) -> None:
    run = taskorch(server, "task", "submit", "--text", "json please", "--json")
    assert run.returncode == 0, run.stderr
    objects = [json.loads(line) for line in run.stdout.splitlines()]
    assert objects[0]["status"] == "PENDING"
    assert objects[-1]["status"] == "COMPLETED"
    assert objects[-1]["task"]["result"]["word_count"] == 2


def test_get_list_watch_and_cancel(server: ServerProcess) -> None:
    created = taskorch_json(
        server, "task", "submit", "--task-type", "echo", "--input", '{"delay_seconds": 30}',
        "--no-watch",
    )  # fmt: skip
    task_id = created["task_id"]
    got = taskorch_json(server, "task", "get", task_id)
    assert got["task_id"] == task_id and got["task_type"] == "echo"
    listed = taskorch_json(server, "task", "list", "--task-type", "echo")
    assert task_id in [t["task_id"] for t in listed["tasks"]]
    table = taskorch(server, "task", "list", "--limit", "5")
    assert table.returncode == 0 and "task_id" in table.stdout
    cancelled = taskorch_json(server, "task", "cancel", task_id)
    assert cancelled["status"] == "CANCELLED"
    watched = taskorch(server, "task", "watch", task_id)
    assert watched.returncode == 3  # the documented exit code of a cancelled task
    assert "CANCELLED" in watched.stdout


def test_events_follows_the_named_tasks_over_one_stream_to_their_ends(
    server: ServerProcess,
) -> None:
    ids = [
        taskorch_json(server, "task", "submit", "--task-type", "echo", "--no-watch")["task_id"]
        for _ in range(2)
    ]
    run = taskorch(server, "task", "events", *ids, "--terminal-only", "--json")
    assert run.returncode == 0, run.stderr
    ends = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(e["task_id"] for e in ends) == sorted(ids)
    assert {e["status"] for e in ends} == {"COMPLETED"}
    lines = taskorch(server, "task", "events", ids[0])
    assert lines.returncode == 0 and f"{ids[0]} #" in lines.stdout
    assert "SNAPSHOT COMPLETED" in lines.stdout


def test_errors_are_one_line_with_the_code_and_exit_2(server: ServerProcess) -> None:
    run = taskorch(server, "task", "get", "not-a-uuid")
    assert run.returncode == 2
    assert "NOT_FOUND [TASK_NOT_FOUND]: Task with ID 'not-a-uuid' not found" in run.stderr
    assert "Traceback" not in run.stderr
    too_long = taskorch(server, "task", "submit", "--text", "x" * 4001)
    assert too_long.returncode == 2 and "TEXT_TOO_LONG" in too_long.stderr


def test_a_failed_task_exits_1(server: ServerProcess) -> None:
    run = taskorch(
        server,
        "task",
        "submit",
        "--task-type",
        "echo",
        "--input",
        '{"fail_attempts": 9}',
        "--json",
    )
    # max_attempts defaults to 3 with backoff 1 s, 2 s: about 3 s.
    assert run.returncode == 1
    assert json.loads(run.stdout.splitlines()[-1])["status"] == "FAILED"


def test_bad_json_input_is_a_usage_error(server: ServerProcess) -> None:
    run = taskorch(server, "task", "submit", "--task-type", "echo", "--input", "{nope")
    assert run.returncode == 2 and "not JSON" in run.stderr


def test_help_lists_the_serve_flags_of_the_design() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "taskorch", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    for flag in (
        "--grpc-addr",
        "--http-addr",
        "--metrics-addr",
        "--database-url",
        "--models-dir",
        "--no-gateway",
        "--workers",
        "--auth",
        "--vector-backend",
        "--qdrant-url",
    ):
        assert flag in run.stdout
    assert "TASKORCH_GRPC_ADDR" in run.stdout and "TASKORCH_AUTH" in run.stdout
    assert "auto|faiss|pgvector|qdrant" in run.stdout


def _event_loop_logged(server: ServerProcess) -> str:
    for line in server.logs().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "starting taskorch":
            return str(json.loads(line)["event_loop"])
    raise AssertionError(f"no startup line in:\n{server.logs()}")


def test_serve_runs_on_uvloop_or_on_asyncio_when_asked(server_factory: ServerFactory) -> None:
    for args, expected in (((), "uvloop"), (("--event-loop", "asyncio"), "asyncio")):
        server = server_factory(*args)
        assert _event_loop_logged(server) == expected
        run = taskorch(server, "task", "submit", "--text", "on either loop", "--json")
        assert json.loads(run.stdout.splitlines()[-1])["status"] == "COMPLETED", run.stderr
        assert server.stop() == 0


def test_an_unknown_event_loop_is_a_usage_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "taskorch", "serve", "--event-loop", "trio"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "--event-loop" in run.stderr and "trio" in run.stderr
    assert "Traceback" not in run.stderr
