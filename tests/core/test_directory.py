"""The worker directory: which connected workers run which kinds, remote ones forgotten a
while after their last contact, and the message a task shows while nobody runs its work."""

from __future__ import annotations

import pytest

from taskorch.core import directory as directory_module
from taskorch.core.directory import WorkerDirectory


class FakeTime:
    """Stands in for the ``time`` module the directory reads its monotonic clock from."""

    now = 100.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[FakeTime]:
    FakeTime.now = 100.0
    monkeypatch.setattr(directory_module, "time", FakeTime)
    return FakeTime


def test_a_task_says_which_kinds_no_connected_worker_runs(clock: type[FakeTime]) -> None:
    workers = WorkerDirectory()
    workers.register_local("local-1", ["echo", "text_analysis"])
    assert workers.waiting_message(["echo"]) is None
    assert workers.waiting_message(["git_script", "echo", "render"]) == (
        "waiting for a worker that runs 'git_script', 'render' (none is connected)"
    )


def test_a_remote_worker_counts_until_its_last_contact_is_older_than_the_ttl(
    clock: type[FakeTime],
) -> None:
    workers = WorkerDirectory(ttl=60)
    workers.register_local("local-1", ["echo"])
    workers.seen("remote-1", ["git_script"])
    clock.now += 60
    assert workers.serves("git_script")
    clock.now += 0.1
    assert not workers.serves("git_script")
    assert workers.serves("echo")  # in-process workers never expire
    workers.seen("remote-1", ["git_script"])  # a heartbeat brings it back
    assert [w.worker_id for w in workers.live()] == ["local-1", "remote-1"]


def test_a_remote_worker_without_kinds_runs_any_kind_until_forgotten(
    clock: type[FakeTime],
) -> None:
    workers = WorkerDirectory()
    workers.seen("generalist", [], models=["minilm"])
    assert workers.serves("anything") and workers.waiting_message(["x", "y"]) is None
    workers.forget("generalist")
    assert not workers.serves("anything")
