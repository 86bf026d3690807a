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

from tests.servers import free_port

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


class PrivatePostgres:
    """A PostgreSQL cluster of a test's own (initdb in a temporary folder, a free port), so a
    test may crash and restart the database server itself without touching anyone else's.

    Needs the server binaries (``pg_ctl``, ``initdb``) and, when the tests run as root, the
    ``postgres`` system user to run them as (PostgreSQL refuses to run as root).
    """

    def __init__(self) -> None:
        self.bindir = _postgres_bindir()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("tests run as root and there is no 'postgres' user to run a cluster")
            self.run_as = ["runuser", "-u", "postgres", "--"]
            self._owner: tuple[int, int] | None = (user.pw_uid, user.pw_gid)
        else:
            self._owner = None
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="taskorch-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if self._owner is not None:
            os.chown(self.root, *self._owner)
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def crash(self) -> None:
        """Stops the server the way a crash would (``immediate``: no checkpoint, recovery
        from the WAL at the next start)."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        import shutil
        import subprocess

        subprocess.run(
            [
                *self.run_as,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def _pg(self, program: str, *args: str) -> None:
        import subprocess

        done = subprocess.run(
            [*self.run_as, str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}")


def _postgres_bindir() -> Path:
    import shutil
    import subprocess

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.insert(0, Path(found.stdout.strip()))
    for bindir in candidates:
        if (bindir / "pg_ctl").exists() and (bindir / "initdb").exists():
            return bindir
    pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb) to run a private cluster")
