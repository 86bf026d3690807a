"""One SQLite file, one server: a second ``taskorch serve`` on the same file refuses to start
before touching it (issue 22 item 2), and the lock dies with the process that held it."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import ServerFactory
from tests.servers import sqlite_url

EXIT_DATABASE_IN_USE = 3


def test_a_second_server_on_the_same_sqlite_file_refuses_and_leaves_running_work_alone(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    first = server_factory("--workers", "2", database_url=url)
    with first.client() as client:
        tasks = [
            client.create_task(task_type="echo", input_data={"delay_seconds": 60, "n": n})
            for n in range(2)
        ]
        deadline = time.monotonic() + 30
        while (running := [client.get_task(t.task_id) for t in tasks]) and any(
            t.status != "RUNNING" for t in running
        ):
            assert time.monotonic() < deadline, running
            time.sleep(0.05)
        second = server_factory(database_url=url, wait=False)
        assert second.proc is not None
        deadline = time.monotonic() + 45
        while second.proc.poll() is None and "taskorch is serving" not in second.logs():
            assert time.monotonic() < deadline, second.logs()
            time.sleep(0.05)
        assert second.proc.wait(5) == EXIT_DATABASE_IN_USE, second.logs()
        message = second.logs()
        assert "is in use by another taskorch server" in message
        assert f"pid {first.proc.pid if first.proc else ''}" in message
        assert "starting taskorch" not in message  # refused before opening the database
        # The live server's work was not re-queued: still its first attempt, on the same
        # worker, and no event says its lease expired.
        for before in running:
            now = client.get_task(before.task_id)
            assert now.status == "RUNNING" and now.attempt == 1, now
            assert now.worker_id == before.worker_id
            client.cancel_task(before.task_id)
            messages = [e.message for e in client.watch_task(before.task_id)]
            assert not any("lease expired" in m for m in messages), messages


def test_the_lock_goes_with_the_server_even_when_it_is_killed(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path / "kept.db")
    first = server_factory(database_url=url)
    first.kill()  # SIGKILL: no clean-up runs
    again = server_factory(database_url=url)
    with again.client() as client:
        assert client.list_tasks(limit=1) is not None
    assert again.stop() == 0
