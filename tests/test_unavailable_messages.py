"""A database outage answers UNAVAILABLE with a plain message: the driver's error (the
database's name, asyncpg's internal state, PostgreSQL's own words) goes to the server's log
with the request id, never to the caller."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import make_url

from taskorch.client import Client, TaskorchClientError, UnavailableError
from tests import databases
from tests.conftest import ServerFactory

PLAIN = "The database is unavailable; retry later"


def _unavailable(call: object) -> UnavailableError:
    with pytest.raises(UnavailableError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_a_database_outage_answers_a_plain_message_and_logs_the_cause(
    server_factory: ServerFactory,
) -> None:
    if databases.backend() != "postgresql":
        pytest.skip("an outage is made by refusing PostgreSQL connections (the PostgreSQL run)")
    url = databases.create_postgres_database()
    name = make_url(url).database
    try:
        server = server_factory("--workers", "1", database_url=url)
        with server.client(timeout=15) as client:
            task = client.create_task(text="before the outage")
            databases.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            databases.admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
            errors = _refused_calls(client, task.task_id)
        for error in errors:
            assert error.message == PLAIN, error
            assert error.reason == "SERVICE_UNAVAILABLE"
            for secret in (str(name), "asyncpg", "postgres", "sqlalchemy", "connection", "UTF8"):
                assert secret.lower() not in error.message.lower()
        logs = server.logs()
        for error in errors:
            logged = [line for line in logs.splitlines() if error.request_id in line]
            assert any('"cause"' in line for line in logged), logged
    finally:
        databases.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        databases.discard(url)


def _refused_calls(client: Client, task_id: str) -> list[UnavailableError]:
    """A create, a read and a list, each retried until the outage is seen (pooled connections
    that were already open may answer the first calls)."""
    calls = (
        lambda: client.create_task(text="during the outage"),
        lambda: client.get_task(task_id),
        lambda: client.list_tasks(limit=5),
    )
    refused: list[UnavailableError] = []
    for call in calls:
        deadline = time.monotonic() + 30
        while True:
            try:
                call()
            except UnavailableError as exc:
                refused.append(exc)
                break
            except TaskorchClientError:
                raise
            assert time.monotonic() < deadline, "the outage was never reported"
            time.sleep(0.2)
    return refused
