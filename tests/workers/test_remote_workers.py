"""Remote workers as real processes: leases, crashes, retries, priorities, cancellation."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from taskorch.client import Client, Task
from tests.conftest import ServerFactory, WorkerFactory


def _container(client: Client, *, priority: int = 0, max_attempts: int = 0) -> Task:
    return client.create_task(task_type="container", priority=priority, max_attempts=max_attempts)


def _add(server_addr: str, task_id: str, kind: str, **input_data: object) -> None:
    """Adds one subtask through the raw API (the SDK models tasks, not subtasks)."""
    import grpc

    from taskorch.v1 import task_service_pb2 as pb
    from taskorch.v1 import task_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server_addr) as channel:
        request = pb.CreateSubtaskRequest(task_id=task_id, kind=kind)
        request.input.update(input_data)
        pb_grpc.TaskServiceStub(channel).CreateSubtask(request, timeout=10)


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_two_workers_never_run_the_same_lease(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server, "--concurrency", "4")
    worker_factory(server, "--concurrency", "4")
    with server.client() as client:
        tasks = []
        for i in range(40):
            task = _container(client)
            _add(server.grpc_addr, task.task_id, "record", label=i, seconds=0.2)
            tasks.append(task)
        done = [client.wait_for_task(t.task_id, timeout=60) for t in tasks]
    assert all(t.status == "COMPLETED" for t in done)
    results = [t.result for t in done]
    assert all(r is not None and r["attempt"] == 1 for r in results)
    leases = [r["lease_id"] for r in results if r]
    assert len(set(leases)) == 40  # every subtask ran once, under its own lease
    workers = {r["worker_id"] for r in results if r}
    assert len(workers) == 2, workers  # both took work


def test_a_killed_worker_loses_its_lease_and_the_work_completes_elsewhere(
    server_factory: ServerFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    server = server_factory("--workers", "0")
    doomed = worker_factory(server, "--lease-seconds", "2", "--worker-id", "doomed")
    with server.client() as client:
        task = _container(client)
        started = tmp_path / "started"
        _add(server.grpc_addr, task.task_id, "slow", seconds=4, started=str(started))
        # The handler must run: work leased but killed before the worker had it goes back
        # to the queue at once without costing an attempt (a different promise).
        _wait(started.exists, what="doomed runs it")
        doomed.kill()
        worker_factory(server, "--lease-seconds", "2", "--worker-id", "survivor")
        done = client.wait_for_task(task.task_id, timeout=60)
        history = [e.message for e in client.watch_task(task.task_id, after_sequence=1)]
    assert done.status == "COMPLETED"
    assert done.result == {"worker_id": "survivor", "attempt": 2}
    assert any("lease expired: worker doomed stopped heartbeating" in m for m in history)
    assert sum(m == "completed" for m in history) == 1  # one result kept


def test_a_running_lease_is_first_renewed_a_third_of_a_lease_after_it_started(
    server_factory: ServerFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    """The first heartbeat is the worker's sign of life: it must come well before the server
    takes work that shows none for three quarters of a lease for unstarted (and hands it
    back), however the run's start falls between the heartbeat loop's wake-ups."""
    import grpc

    from taskorch.v1 import task_service_pb2 as pb
    from taskorch.v1 import task_service_pb2_grpc as pb_grpc

    server = server_factory("--workers", "0")
    worker_factory(server, "--lease-seconds", "3")
    with server.client() as client, grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        task = _container(client)
        started = tmp_path / "started"
        _add(server.grpc_addr, task.task_id, "slow", seconds=3, started=str(started))
        _wait(started.exists, what="the handler runs")
        began = started.stat().st_mtime
        subtask = stub.ListSubtasks(pb.ListSubtasksRequest(task_id=task.task_id)).subtasks[0]
        first = subtask.lease_expires_at.ToDatetime()

        def renewed() -> bool:
            got = stub.GetSubtask(
                pb.GetSubtaskRequest(task_id=task.task_id, subtask_id=subtask.subtask_id)
            )
            return got.lease_expires_at.ToDatetime() != first

        _wait(renewed, timeout=10, what="the lease renewed")
        renewed_after = time.time() - began
    assert renewed_after < 3 / 3 + 0.6, renewed_after


def test_a_frozen_worker_is_offered_no_more_work_and_costs_no_attempt(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    """A worker stopped (SIGSTOP) while still connected: the work sent to it goes back to the
    queue before its lease expires, without costing an attempt, and it is offered nothing
    more; the healthy worker runs everything."""
    server = server_factory("--workers", "0")
    frozen = worker_factory(
        server, "--lease-seconds", "2", "--concurrency", "1", "--worker-id", "frozen"
    )
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        worker_factory(
            server, "--lease-seconds", "2", "--concurrency", "1", "--worker-id", "healthy"
        )
        with server.client() as client:
            tasks = []
            for i in range(8):
                task = _container(client, max_attempts=1)
                _add(server.grpc_addr, task.task_id, "record", label=i, seconds=0.5)
                tasks.append(task)
            done = [client.wait_for_task(t.task_id, timeout=60) for t in tasks]
            histories = [
                [e.message for e in client.watch_task(t.task_id, after_sequence=1)] for t in tasks
            ]
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    assert [t.status for t in done] == ["COMPLETED"] * 8, [t.error for t in done]
    assert all(t.result and t.result["worker_id"] == "healthy" for t in done)
    # One task was sent to the frozen worker before it could be known frozen; only one.
    handed_back = [h for h in histories if any("frozen did not start it" in m for m in h)]
    assert len(handed_back) == 1, histories
    assert all(t.result and t.result["attempt"] == 1 for t in done)


def test_a_stale_worker_cannot_overwrite_the_result(server_factory: ServerFactory) -> None:
    """A worker whose lease expired reports late: refused with LEASE_LOST, result kept."""
    import grpc

    from taskorch.client._errors import from_rpc_error
    from taskorch.v1 import worker_service_pb2 as pb
    from taskorch.v1 import worker_service_pb2_grpc as pb_grpc

    server = server_factory("--workers", "0")
    with server.client() as client, grpc.insecure_channel(server.grpc_addr) as channel:
        task = _container(client)
        _add(server.grpc_addr, task.task_id, "manual")
        stub = pb_grpc.WorkerServiceStub(channel)
        take = pb.TakeRequest(worker_id="slow-one", kinds=["manual"], lease_seconds=1)
        stale = stub.Take(take, timeout=10)
        # The lease expires, the rescuer puts the work back (backoff 1 s): the waiting take
        # gets it as soon as it is runnable.
        fresh = stub.Take(
            pb.TakeRequest(
                worker_id="fast-one", kinds=["manual"], lease_seconds=30, wait_seconds=10
            ),
            timeout=20,
        )
        assert fresh.subtask_id == stale.subtask_id and fresh.attempt == 2
        good = pb.CompleteRequest(subtask_id=fresh.subtask_id, lease_id=fresh.lease_id)
        good.result.update({"by": "fast-one"})
        stub.Complete(good, timeout=10)
        late = pb.CompleteRequest(subtask_id=stale.subtask_id, lease_id=stale.lease_id)
        late.result.update({"by": "slow-one"})
        with pytest.raises(grpc.RpcError) as caught:
            stub.Complete(late, timeout=10)
        assert caught.value.code() == grpc.StatusCode.ABORTED
        assert from_rpc_error(caught.value).reason == "LEASE_LOST"
        assert client.get_task(task.task_id).result == {"by": "fast-one"}


def test_retries_back_off_then_succeed(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server)
    with server.client() as client:
        task = _container(client, max_attempts=3)
        _add(server.grpc_addr, task.task_id, "flaky", failures=2)
        started = time.monotonic()
        done = client.wait_for_task(task.task_id, timeout=60)
        elapsed = time.monotonic() - started
        messages = [e.message for e in client.watch_task(task.task_id, after_sequence=1)]
    assert done.status == "COMPLETED" and done.result == {"attempt": 3}
    assert elapsed >= 3.0  # backoff 1 s, then 2 s
    assert any("retrying in 1 s" in m for m in messages)
    assert any("retrying in 2 s" in m for m in messages)


def test_past_max_attempts_the_task_fails_with_the_last_error(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server)
    with server.client() as client:
        task = _container(client, max_attempts=2)
        _add(server.grpc_addr, task.task_id, "flaky", failures=5)
        done = client.wait_for_task(task.task_id, timeout=60)
        refused = _container(client)
        _add(server.grpc_addr, refused.task_id, "refuse")
        permanent = client.wait_for_task(refused.task_id, timeout=30)
    assert done.status == "FAILED"
    assert "flaky failure on attempt 2" in done.error
    assert permanent.status == "FAILED" and permanent.error_code == "BAD_INPUT"
    assert permanent.attempt == 1  # a permanent failure is not retried


def test_higher_priority_runs_first_under_contention(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    with server.client() as client:
        tasks = []
        for label, priority in enumerate([1, 5, 10, 5, 1, 10, 7, 3]):
            task = _container(client, priority=priority)
            _add(server.grpc_addr, task.task_id, "record", label=label, seconds=0.02)
            tasks.append((priority, label, task))
        worker_factory(server, "--concurrency", "1")
        done = {label: client.wait_for_task(t.task_id, timeout=60) for _, label, t in tasks}
    order = sorted(done, key=lambda label: done[label].result["started"])  # type: ignore[index]
    priorities = [p for label in order for p, lb, _ in tasks if lb == label]
    assert priorities == sorted(priorities, reverse=True)
    # Equal priorities keep submission order.
    assert [lb for lb in order if done[lb].priority == 10] == [2, 5]


def test_a_worker_running_ahead_hands_back_work_that_got_long(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    """A worker whose work was short keeps a lease in hand beyond its slots; when the work
    turns long, the lease in hand goes back to the queue (the attempt not counted) and is
    not sent to that busy worker again: a worker that is free runs it."""
    server = server_factory("--workers", "0")
    worker_factory(server, "--concurrency", "1", "--worker-id", "busy")
    with server.client() as client:
        short = []
        for i in range(30):
            task = _container(client)
            _add(server.grpc_addr, task.task_id, "record", label=i, seconds=0)
            short.append(task)
        assert all(client.wait_for_task(t.task_id, timeout=60).status == "COMPLETED" for t in short)
        long = []
        for i in range(2):
            task = _container(client)
            _add(server.grpc_addr, task.task_id, "record", label=i, seconds=8.0)
            long.append(task)

        def handed_back() -> bool:
            return any(
                "waited too long" in (client.get_task(t.task_id).progress_message or "")
                for t in long
            )

        _wait(handed_back, timeout=5, what="the lease in hand handed back")
        worker_factory(server, "--concurrency", "1", "--worker-id", "free")
        done = [client.wait_for_task(t.task_id, timeout=60) for t in long]
    results = [t.result for t in done]
    assert all(r is not None and r["attempt"] == 1 for r in results)
    assert {r["worker_id"] for r in results if r} == {"busy", "free"}
    first, second = sorted(r["started"] for r in results if r)
    assert second - first < 8.0  # not after the busy worker's first one


def test_cancellation_reaches_a_running_remote_worker_at_once(
    server_factory: ServerFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server, "--lease-seconds", "30")
    marker = tmp_path / "cancelled"
    with server.client() as client:
        task = _container(client)
        _add(server.grpc_addr, task.task_id, "slow", seconds=60, marker=str(marker))
        _wait(lambda: client.get_task(task.task_id).status == "RUNNING", what="running")
        cancelled_at = time.time()
        client.cancel_task(task.task_id)
        # Within one heartbeat (10 s here) at worst; the stream pushes it at once.
        _wait(marker.exists, timeout=10, what="the worker noticed")
    assert float(marker.read_text()) - cancelled_at < 2.0


def test_work_of_a_kind_no_worker_runs_waits_and_says_so(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as client:
        task = _container(client)
        _add(server.grpc_addr, task.task_id, "nobody-runs-this")
        current = client.get_task(task.task_id)
    assert current.status == "PENDING"
    assert "waiting for a worker that runs 'nobody-runs-this'" in current.progress_message


def test_sigterm_hands_back_work_that_outlasts_the_drain(
    server_factory: ServerFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    server = server_factory("--workers", "0")
    worker = worker_factory(server, "--drain-seconds", "0.5")
    with server.client() as client:
        task = _container(client)
        started = tmp_path / "started"
        _add(server.grpc_addr, task.task_id, "slow", seconds=30, started=str(started))
        # RUNNING on the server means leased: the handler may not have started yet (work
        # pushed but not started is handed back with another message).
        _wait(started.exists, what="the handler runs")
        assert worker.stop() == 0
        handed_back = client.get_task(task.task_id)
        assert handed_back.progress_message == "re-queued: worker shutting down"
        worker_factory(server, "--worker-id", "next")
        _wait(lambda: client.get_task(task.task_id).worker_id == "next", what="taken again")
        assert client.get_task(task.task_id).attempt == 1  # the handed-back attempt did not count


def test_git_script_runs_only_on_a_worker_that_allows_scripts(
    server_factory: ServerFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hello.py").write_text("print('hello from the script')\n")
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "hello.py"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "script"],
    ):
        subprocess.run(command, cwd=repo, check=True)
    server = server_factory()  # in-process workers do not run scripts
    with server.client() as client:
        task = _container(client)
        _add(
            server.grpc_addr,
            task.task_id,
            "git_script",
            repo_url=f"file://{repo}",
            script_path="hello.py",
            output_path="out/hello.json",
        )
        # The in-process workers take the oldest runnable work first: once a later echo task
        # has run, they have passed this one over.
        later = client.create_task(task_type="echo")
        assert client.wait_for_task(later.task_id, timeout=30).status == "COMPLETED"
        assert client.get_task(task.task_id).status == "PENDING"
        output = tmp_path / "script-output"
        worker_factory(server, "--allow-scripts", "--script-output-dir", str(output))
        done = client.wait_for_task(task.task_id, timeout=60)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None and done.result["stdout"] == "hello from the script\n"
    assert (output / "out" / "hello.json").exists()


def test_a_second_ctrl_c_hands_running_work_back_at_once(
    server_factory: ServerFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    """Issue 22 item 6, for remote workers: the second signal cuts a 60 s drain short."""
    server = server_factory("--workers", "0")
    worker = worker_factory(server, "--drain-seconds", "60")
    assert worker.proc is not None
    with server.client() as client:
        task = _container(client)
        started = tmp_path / "started"
        _add(server.grpc_addr, task.task_id, "slow", seconds=120, started=str(started))
        _wait(started.exists, what="the handler runs")  # leased is not yet running
        worker.proc.send_signal(signal.SIGINT)
        _wait(lambda: "draining running work" in worker.logs(), what="draining")
        second = time.monotonic()
        worker.proc.send_signal(signal.SIGINT)
        assert worker.proc.wait(15) == 0
        assert time.monotonic() - second < 10
        handed_back = client.get_task(task.task_id)
        assert handed_back.progress_message == "re-queued: worker shutting down"
