"""Databases for test servers: a SQLite file, or a fresh PostgreSQL database per server.

``TASKORCH_TEST_BACKEND=postgresql`` runs the server tests on PostgreSQL (``make test`` does
this for the modules marked ``both_backends``); ``TASKORCH_TEST_POSTGRES_URL`` says where
(default: the local server with trust authentication, database ``test``). Without a
reachable PostgreSQL those runs are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "TASKORCH_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def backend() -> str:
    return os.environ.get("TASKORCH_TEST_BACKEND", "sqlite")


def _admin_dsn() -> str:
    url = make_url(POSTGRES_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _execute_async(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _execute(statement: str) -> None:
    """Runs one statement on a thread of its own (a test may already run an event loop)."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _execute_async(statement)).result()


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        _execute("SELECT 1")
    except Exception as exc:  # any failure to reach it is a reason to skip
        return f"PostgreSQL not reachable at {POSTGRES_URL} ({type(exc).__name__}: {exc})"
    return None


def create_postgres_database() -> str:
    """A new, empty database; returns its SQLAlchemy URL."""
    reason = postgres_reachable()
    if reason is not None:
        pytest.skip(f"{reason}; set TASKORCH_TEST_POSTGRES_URL to run the PostgreSQL tests")
    name = f"taskorch_test_{uuid.uuid4().hex[:12]}"
    _execute(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    _execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_database(workdir: Path, kind: str | None = None) -> str:
    """A database URL for one test server of the chosen backend."""
    if (kind or backend()) == "postgresql":
        return create_postgres_database()
    return f"sqlite:///{workdir / 'taskorch.db'}"


def discard(url: str) -> None:
    if url.startswith("postgresql"):
        drop_postgres_database(url)


async def _fetch_async(dsn: str, sql: str) -> list[tuple[object, ...]]:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


def fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    """Rows of a query on a test server's database (SQLite file or PostgreSQL), read directly."""
    if url.startswith("sqlite"):
        import sqlite3

        path = make_url(url).database
        assert path is not None
        with sqlite3.connect(path) as connection:
            return [tuple(row) for row in connection.execute(sql)]
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, _fetch_async(dsn, sql)).result()


def admin(sql: str) -> None:
    """Runs a statement on the PostgreSQL server as the test administrator."""
    _execute(sql)
