"""Fair sharing: tenants with work queued take turns, so one tenant's burst does not hold back
another tenant's few tasks; weights give a tenant more turns; off, it is first come, first
served."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taskorch.client import Client, Task
from tests.conftest import ServerFactory
from tests.security.conftest import create_key
from tests.servers import ServerProcess

BURST = 2_000
FEW = 20


def _submit(client: Client, count: int, **fields: object) -> list[Task]:
    """``count`` echo tasks, in batches of the most one call takes."""
    tasks: list[Task] = []
    while len(tasks) < count:
        n = min(1_000, count - len(tasks))
        tasks += client.create_tasks([{"task_type": "echo", **fields}] * n)
    return tasks


def _finished(client: Client, tasks: list[Task]) -> list[datetime]:
    """When each of the tasks completed, in order."""
    done = [client.wait_for_task(t.task_id, timeout=120) for t in tasks]
    assert all(t.status == "COMPLETED" for t in done), {t.status for t in done}
    return sorted(t.completed_at for t in done if t.completed_at)


def _queued_then_served(
    server_factory: ServerFactory, *serve_args: str, burst_a: int = BURST, burst_b: int = 0
) -> tuple[ServerProcess, Client, Client]:
    """A server that runs no work while tenant A's burst (and B's, if asked) is queued, then
    one on the same database with four slots; clients for tenants A and B."""
    holding = server_factory("--workers", "0", *serve_args, auth="keys")
    key_a = create_key(holding.database_url, "tenant-a")
    key_b = create_key(holding.database_url, "tenant-b")
    with holding.client(api_key=key_a) as a, holding.client(api_key=key_b) as b:
        _submit(a, burst_a)
        _submit(b, burst_b)
    holding.stop()
    serving = server_factory("--workers", "4", *serve_args, auth="keys")
    return serving, serving.client(api_key=key_a), serving.client(api_key=key_b)


def _completed_of_a(a: Client, since: datetime, until: datetime) -> int:
    """How many of tenant A's tasks completed in [since, until]."""
    count, token = 0, ""
    while True:
        page = a.list_tasks(status="COMPLETED", limit=1000, page_token=token)
        count += sum(1 for t in page.tasks if t.completed_at and since <= t.completed_at <= until)
        token = page.next_page_token
        if not token:
            return count


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def test_a_few_tasks_of_one_tenant_finish_before_the_400th_of_another_tenants_burst(
    server_factory: ServerFactory,
) -> None:
    # A's 2,000 are queued, then B submits 20; then the workers start.
    _, a, b = _queued_then_served(server_factory, burst_b=FEW)
    with a, b:
        done_b = _finished(b, list(b.list_tasks(limit=100).tasks))
        a_before = _completed_of_a(a, EPOCH, done_b[-1])
    # B's 20 took turns with A's burst (about one of A's per one of B's) instead of waiting
    # behind all of it.
    print(f"of A's queued {BURST}, {a_before} finished before B's last of {FEW}")
    assert len(done_b) == FEW
    assert a_before < 400, f"{a_before} of A's burst finished before B's last task"


def test_tasks_submitted_while_another_tenants_burst_runs_take_turns_with_it(
    server_factory: ServerFactory,
) -> None:
    _, a, b = _queued_then_served(server_factory)
    with a, b:
        submitted = datetime.now(UTC)
        done_b = _finished(b, _submit(b, FEW))
        a_meanwhile = _completed_of_a(a, submitted, done_b[-1])
    # About one of A's per one of B's (and the few A's already running when B submitted).
    print(f"{a_meanwhile} of A's burst finished between B's submit and B's last of {FEW}")
    assert a_meanwhile < 100, f"{a_meanwhile} of A's burst finished while B's 20 waited"


def test_without_fair_sharing_the_burst_runs_first(server_factory: ServerFactory) -> None:
    _, a, b = _queued_then_served(server_factory, "--no-fair-sharing", burst_a=500)
    with a, b:
        few = _submit(b, FEW)
        b_first = _finished(b, few)[0]
        a_before = _completed_of_a(a, EPOCH, b_first)
    assert a_before == 500  # first come, first served: all of A's burst, then B's


def test_a_tenant_of_weight_three_takes_three_turns_to_anothers_one(
    server_factory: ServerFactory,
) -> None:
    _, a, b = _queued_then_served(
        server_factory, "--tenant-weights", "tenant-a=3", burst_a=900, burst_b=200
    )
    with a, b:
        done_b = _finished(b, list(b.list_tasks(limit=1000).tasks))
        share_a = _completed_of_a(a, EPOCH, done_b[-1])
    # Until B's 200 ran out, A took about three turns for each of B's.
    assert len(done_b) == 200
    assert 2.4 <= share_a / len(done_b) <= 3.6, share_a


def test_tenant_weights_out_of_range_are_refused_naming_the_flag(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--tenant-weights", "tenant-a=1000", wait=False)
    assert server.proc is not None
    assert server.proc.wait(30) == 2
    log = server.logs()
    assert "--tenant-weights" in log and "between 0.01 and 100" in log, log


@pytest.mark.parametrize("text", ["tenant-a", "=2", "tenant-a=many"])
def test_tenant_weights_that_are_not_tenant_equals_weight_are_refused(
    server_factory: ServerFactory, text: str
) -> None:
    server = server_factory("--tenant-weights", text, wait=False)
    assert server.proc is not None
    assert server.proc.wait(30) == 2
    assert "is not TENANT=WEIGHT" in server.logs()
