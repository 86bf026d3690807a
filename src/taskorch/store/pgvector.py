"""The pgvector side table of collections (PostgreSQL with the ``vector`` extension).

``collection_vectors`` holds one row per chunk (its id, its collection, its embedding as a
``vector`` without fixed dimensions), deleted with its chunk (a foreign key with ON DELETE
CASCADE). Each collection has a partial HNSW index of its own over
``embedding::vector(<dimensions>)`` with ``vector_ip_ops`` (vectors are L2-normalised, so
inner product is cosine similarity), which queries use through ``<#>`` with the collection
id and dimensions written into the statement (a partial index is only used when the
planner sees its predicate as a constant). The table and the indexes are made at run time,
not by a migration: a database without the extension must still migrate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from sqlalchemy import Connection, bindparam, text

TABLE = "collection_vectors"
# Serialises the DDL of replicas that start at once (CREATE ... IF NOT EXISTS races).
_DDL_LOCK_KEY = 0x76656374
# pgvector's largest hnsw.ef_search.
MAX_EF_SEARCH = 1000


def extension_problem(conn: Connection) -> tuple[str | None, bool]:
    """(why pgvector cannot be used or None, whether CREATE EXTENSION is still needed)."""
    installed = conn.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    ).scalar()
    if installed is not None:
        return None, False
    available = conn.execute(
        text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    if available is None:
        return (
            "the PostgreSQL server has no pgvector ('vector' is not in pg_available_extensions)",
            False,
        )
    return None, True


def create_extension(conn: Connection) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))


def create_table(conn: Connection) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
    conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "chunk_id BIGINT PRIMARY KEY REFERENCES collection_chunks (chunk_id) "
            "ON DELETE CASCADE, "
            "collection_id VARCHAR(36) NOT NULL, "
            "embedding vector NOT NULL)"
        )
    )
    conn.execute(
        text(f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_collection_id ON {TABLE} (collection_id)")
    )


def _checked(collection_id: str) -> str:
    """The id as written into statements: only a UUID is (it comes from our own rows)."""
    return str(uuid.UUID(collection_id))


def index_name(collection_id: str) -> str:
    return f"{TABLE}_hnsw_{uuid.UUID(collection_id).hex}"


def index_exists(conn: Connection, collection_id: str) -> bool:
    found = conn.execute(
        text("SELECT to_regclass(:name)"), {"name": index_name(collection_id)}
    ).scalar()
    return found is not None


def create_index(conn: Connection, collection_id: str, dimensions: int) -> None:
    """The collection's HNSW index (built from the rows there are: faster than growing it
    row by row)."""
    conn.execute(text("SELECT set_config('maintenance_work_mem', '512MB', true)"))
    conn.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {index_name(collection_id)} ON {TABLE} "
            f"USING hnsw ((embedding::vector({int(dimensions)})) vector_ip_ops) "
            f"WITH (m = 16, ef_construction = 64) "
            f"WHERE collection_id = '{_checked(collection_id)}'"
        )
    )


def drop_index(conn: Connection, collection_id: str) -> None:
    conn.execute(text(f"DROP INDEX IF EXISTS {index_name(collection_id)}"))


def insert(conn: Connection, collection_id: str, rows: Sequence[tuple[int, bytes]]) -> None:
    """Stores chunks' vectors (little-endian float32 bytes, as collection_chunks has them)."""
    if not rows:
        return
    conn.execute(
        text(
            f"INSERT INTO {TABLE} (chunk_id, collection_id, embedding) VALUES "
            "(:chunk_id, :collection_id, CAST(CAST(:embedding AS real[]) AS vector)) "
            "ON CONFLICT (chunk_id) DO NOTHING"
        ),
        [
            {
                "chunk_id": chunk_id,
                "collection_id": collection_id,
                "embedding": np.frombuffer(vector, dtype="<f4").tolist(),
            }
            for chunk_id, vector in rows
        ],
    )


def missing(conn: Connection, collection_id: str, limit: int) -> list[tuple[int, bytes]]:
    """Chunks of the collection whose vector is not in the side table yet (at most
    ``limit``, by id)."""
    rows = conn.execute(
        text(
            "SELECT c.chunk_id, c.vector FROM collection_chunks c "
            f"LEFT JOIN {TABLE} v ON v.chunk_id = c.chunk_id "
            "WHERE c.collection_id = :collection_id AND v.chunk_id IS NULL "
            "ORDER BY c.chunk_id LIMIT :limit"
        ),
        {"collection_id": collection_id, "limit": limit},
    )
    return [(int(chunk_id), bytes(vector)) for chunk_id, vector in rows]


def count(conn: Connection, collection_id: str) -> int:
    return int(
        conn.execute(
            text(f"SELECT count(*) FROM {TABLE} WHERE collection_id = :collection_id"),
            {"collection_id": collection_id},
        ).scalar_one()
    )


def search(
    conn: Connection,
    collection_id: str,
    dimensions: int,
    query: Sequence[float],
    k: int,
    *,
    exact: bool,
    among: Sequence[int] | None = None,
    ef_search: int = 0,
    explain: bool = False,
) -> list[tuple[int, float]] | str:
    """The ``k`` chunks nearest to ``query`` as (chunk id, inner product), best first (with
    ``explain``: PostgreSQL's plan for the query, as text).

    ``exact`` (or ``among``, a set of candidate chunk ids) computes every distance (the
    HNSW index would drop candidates that a filter then removes); otherwise the
    collection's HNSW index answers with ``ef_search`` candidates.
    """
    dims = int(dimensions)
    distance = f"(embedding::vector({dims}) <#> CAST(CAST(:query AS real[]) AS vector({dims})))"
    where = f"collection_id = '{_checked(collection_id)}'"
    params: dict[str, object] = {"query": [float(x) for x in query], "k": k}
    if among is not None:
        where += " AND chunk_id IN :among"
        params["among"] = list(among)
    # "+ 0": an expression the HNSW index cannot order by, so the planner reads the rows.
    order = f"{distance} + 0" if exact or among is not None else distance
    stmt = text(
        ("EXPLAIN " if explain else "")
        + f"SELECT chunk_id, -{distance} AS score FROM {TABLE} WHERE {where} "
        f"ORDER BY {order} LIMIT :k"
    )
    if among is not None:
        stmt = stmt.bindparams(bindparam("among", expanding=True))
    else:
        conn.execute(
            text("SELECT set_config('hnsw.ef_search', :value, true)"),
            {"value": str(min(max(ef_search, k), MAX_EF_SEARCH))},
        )
    if explain:
        return "\n".join(str(row[0]) for row in conn.execute(stmt, params))
    return [(int(chunk_id), float(score)) for chunk_id, score in conn.execute(stmt, params)]
