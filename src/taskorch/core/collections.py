"""Collections: documents split into chunks, embedded with a model of the repository, stored
in the database, and searched by vector, keyword or both.

The database is the source of truth (documents, chunks, vectors, and a revision per
collection that every change increases); the vectors are searched by a
:class:`~taskorch.core.vector_backends.VectorBackend` (FAISS in process, pgvector in the
database, or Qdrant), which can always be rebuilt from it.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import partial
from typing import Any, Protocol

import numpy as np
import structlog

from taskorch.core.planning import Plan, Step, TaskSpec, normalise_type
from taskorch.core.vector_backends import FaissBackend, VectorBackend
from taskorch.core.vectors import Hit, Vectors
from taskorch.domain.caller import Caller
from taskorch.domain.chat_values import Source
from taskorch.domain.errors import (
    AlreadyExists,
    AlreadyStored,
    CollectionNotFound,
    DocumentNotFound,
    FieldViolation,
    InvalidArgument,
)
from taskorch.domain.ids import new_id
from taskorch.store import collections as store
from taskorch.store.collections import (
    ChunkChange,
    CollectionRecord,
    DocumentRecord,
    NewChunk,
    StoredDocument,
)
from taskorch.store.database import Database
from taskorch.store.schema import utcnow

log = structlog.get_logger("taskorch.collections")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
DEFAULT_CHUNK_SIZE = 800
DEFAULT_CHUNK_OVERLAP = 100
MAX_CHUNK_SIZE = 8000
MAX_DOCUMENTS_PER_ADD = 1000
MAX_DOCUMENT_CHARS = 1_000_000
MAX_DOCUMENT_ID = 200
MAX_QUERY_CHARS = 10_000
DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
# Texts per embedding request: several requests in flight let the model's dynamic batcher
# fill its batches.
EMBED_GROUP = 16
EMBED_IN_FLIGHT = 16
# An add of more documents, or more characters in all, than this runs as a task
# (INGEST_TASK), committed INGEST_BATCH documents at a time.
LARGE_ADD_DOCUMENTS = 100
LARGE_ADD_CHARS = 200_000
INGEST_TASK = "collection_ingest"
INGEST_BATCH = 32
# Reciprocal rank fusion's constant (Cormack et al. 2009) and how deep each list goes.
RRF_K = 60
FUSION_DEPTH = 50


class SearchMode(Enum):
    VECTOR = "vector"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


class TaskCreator(Protocol):
    """Creates tasks (core.tasks.TaskService): a large add runs as one."""

    async def create(self, caller: Caller, spec: TaskSpec) -> Any: ...


class Embedder(Protocol):
    """The embedding models collections use (the inference engine in a server)."""

    def resolve(self, model_name: str) -> str:
        """The name of the feature_extraction model to use ("" means the default one).

        Raises:
            ModelNotFound: no such model.
            InvalidArgument: it is not an embedding model (field ``model_name``).
            Unavailable: it is loading or failed to load.
        """
        ...

    async def embed(self, model_name: str, texts: Sequence[str], *, field: str) -> Vectors:
        """L2-normalised embeddings of ``texts``, one row each."""
        ...


@dataclass(frozen=True)
class Collection:
    name: str
    model_name: str
    dimensions: int
    chunk_size: int
    chunk_overlap: int
    document_count: int
    chunk_count: int
    created_at: datetime
    updated_at: datetime
    index: str
    metric: str = "cosine"
    backend: str = "faiss"


@dataclass(frozen=True)
class NewCollection:
    name: str
    model_name: str = ""
    chunk_size: int = 0
    chunk_overlap: int | None = None


@dataclass(frozen=True)
class NewDocument:
    text: str
    document_id: str = ""
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Document:
    document_id: str
    collection: str
    text: str
    metadata: dict[str, Any] | None
    chunk_count: int
    created_at: datetime


@dataclass(frozen=True)
class AddedDocuments:
    """The ids of added documents; ``chunks`` stored (0 when the add runs as task
    ``task_id``, whose result tells)."""

    document_ids: list[str]
    chunks: int
    task_id: str = ""


@dataclass(frozen=True)
class SearchSpec:
    query: str = ""
    vector: Sequence[float] = ()
    top_k: int = 0
    filter: Mapping[str, Any] | None = None
    mode: str = ""


@dataclass(frozen=True)
class SearchResult:
    document_id: str
    text: str
    score: float
    metadata: dict[str, Any] | None
    chunk_index: int


@dataclass(frozen=True)
class SearchResults:
    results: list[SearchResult]
    mode: SearchMode


def split_text(text: str, size: int, overlap: int) -> list[str]:
    """Splits ``text`` into chunks of at most ``size`` characters, each repeating about the
    last ``overlap`` characters of the one before.

    A chunk ends at the last paragraph break, else sentence end, else whitespace in its
    second half, so words are not cut unless a word is longer than half a chunk. Leading
    and trailing whitespace of chunks is dropped; a text of only whitespace has no chunks.
    """
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            window = text[start + size // 2 : end]
            for separator in ("\n\n", ". ", "\n", " "):
                cut = window.rfind(separator)
                if cut >= 0:
                    end = start + size // 2 + cut + len(separator)
                    break
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= len(text):
            break
        next_start = max(end - overlap, start + 1)
        # Start the overlap at a word.
        space = text.find(" ", next_start, end)
        start = space + 1 if 0 <= space < end - 1 and next_start > start else next_start
    return chunks


def fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each id scores the sum of 1 / (k + rank) over the rankings
    it is in (rank 1 first); best first, ties by first appearance."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


class CollectionService:
    """Collections of a tenant: create, list, delete; add, read and delete documents;
    search."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        tasks: TaskCreator | None = None,
        vectors: VectorBackend | None = None,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.tasks = tasks
        self.vectors: VectorBackend = vectors or FaissBackend(db)
        self._warming: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Readies the vector backend, then brings every stored collection's index up to
        date in the background (a search that comes first does it for its collection).

        Raises:
            BackendUnavailable: the vector backend cannot run.
        """
        await self.vectors.open()
        log.info("vector backend ready", backend=self.vectors.name)
        self._warming = asyncio.create_task(self._warm(), name="collection-indexes")

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
        await self.vectors.close()

    async def _warm(self) -> None:
        await self.vectors.warm(await self.db.read(lambda conn: store.list_collections(conn, None)))

    # -- collections ----------------------------------------------------------------------

    async def create(self, caller: Caller, spec: NewCollection) -> Collection:
        if not NAME.fullmatch(spec.name):
            raise InvalidArgument(
                "name must be 1-100 letters, digits, '_', '-' or '.', starting with a letter "
                "or digit",
                field="name",
            )
        size = spec.chunk_size or DEFAULT_CHUNK_SIZE
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise InvalidArgument(
                f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}", field="chunk_size"
            )
        overlap = DEFAULT_CHUNK_OVERLAP if spec.chunk_overlap is None else spec.chunk_overlap
        overlap = min(overlap, size // 2) if spec.chunk_overlap is None else overlap
        if not 0 <= overlap < size:
            raise InvalidArgument(
                "chunk_overlap must be at least 0 and less than chunk_size", field="chunk_overlap"
            )
        model = self.embedder.resolve(spec.model_name)
        probe = await self.embedder.embed(model, ["dimensions"], field="model_name")
        now = utcnow()
        record = CollectionRecord(
            collection_id=new_id(),
            tenant_id=caller.tenant_id,
            name=spec.name,
            model_name=model,
            dimensions=int(probe.shape[1]),
            chunk_size=size,
            chunk_overlap=overlap,
            document_count=0,
            chunk_count=0,
            revision=0,
            created_at=now,
            updated_at=now,
        )

        def insert(tx: Any) -> None:
            if store.find(tx.conn, caller.tenant_id, spec.name) is not None:
                raise AlreadyExists(f"Collection '{spec.name}' already exists")
            store.insert_collection(tx.conn, record)
            self.vectors.created_in_transaction(tx.conn, record)

        try:
            await self.db.write(insert)
        except AlreadyStored:
            raise AlreadyExists(f"Collection '{spec.name}' already exists") from None
        await self.vectors.created(record)
        return self._collection(record)

    async def list_collections(self, caller: Caller) -> list[Collection]:
        records = await self.db.read(lambda conn: store.list_collections(conn, caller.tenant_id))
        return [self._collection(r) for r in records]

    async def get(self, caller: Caller, name: str) -> Collection:
        return self._collection(await self._find(caller, name))

    async def delete(self, caller: Caller, name: str) -> Collection:
        record = await self._find(caller, name)

        def remove(tx: Any) -> None:
            store.delete_collection(tx.conn, record.collection_id)
            self.vectors.deleted_in_transaction(tx.conn, record)

        await self.db.write(remove)
        await self.vectors.deleted(record)
        return self._collection(record)

    async def _find(self, caller: Caller, name: str) -> CollectionRecord:
        if not name:
            raise InvalidArgument("name is required", field="name")
        record = await self.db.read(lambda conn: store.find(conn, caller.tenant_id, name))
        if record is None:
            raise CollectionNotFound(name)
        return record

    def _collection(self, record: CollectionRecord) -> Collection:
        return Collection(
            name=record.name,
            model_name=record.model_name,
            dimensions=record.dimensions,
            chunk_size=record.chunk_size,
            chunk_overlap=record.chunk_overlap,
            document_count=record.document_count,
            chunk_count=record.chunk_count,
            created_at=record.created_at,
            updated_at=record.updated_at,
            index=self.vectors.index_kind(record),
            backend=self.vectors.name,
        )

    # -- documents ------------------------------------------------------------------------

    async def add(
        self, caller: Caller, name: str, documents: Sequence[NewDocument]
    ) -> AddedDocuments:
        """Splits, embeds and stores documents; they are durable and searchable on return.

        Raises:
            CollectionNotFound: no such collection of the caller's tenant.
            InvalidArgument: a document is empty, too long, has a bad id or metadata
                (``documents[i].<field>``), or there are none or too many.
        """
        record = await self._find(caller, name)
        checked = _check_documents(documents)
        if self.tasks is not None and (
            len(checked) > LARGE_ADD_DOCUMENTS
            or sum(len(d.text) for d in checked) > LARGE_ADD_CHARS
        ):
            spec = TaskSpec(
                task_type=INGEST_TASK,
                input_data={
                    "collection": name,
                    "documents": [
                        {"id": d.document_id, "text": d.text, "metadata": d.metadata}
                        for d in checked
                    ],
                },
            )
            task = await self.tasks.create(caller, spec)
            return AddedDocuments([d.document_id for d in checked], 0, task_id=task.task_id)
        return await self._store(record, checked)

    async def ingest(
        self,
        caller: Caller,
        name: str,
        documents: Sequence[NewDocument],
        progress: Callable[[float, str], Awaitable[None]],
    ) -> dict[str, Any]:
        """Runs a large add (the INGEST_TASK handler): commits ``INGEST_BATCH`` documents at a
        time, reporting progress after each. Run again after a crash (or a retry), it skips
        the documents already stored with the same text and metadata, so it resumes where the
        last commit left it.
        """
        record = await self._find(caller, name)
        chunks = skipped = 0
        for start in range(0, len(documents), INGEST_BATCH):
            batch = list(documents[start : start + INGEST_BATCH])
            stored = await self.db.read(
                partial(
                    store.stored_documents,
                    collection_id=record.collection_id,
                    document_ids=[d.document_id for d in batch],
                )
            )
            todo = [d for d in batch if stored.get(d.document_id) != (d.text, d.metadata)]
            skipped += len(batch) - len(todo)
            if todo:
                record = await self._find(caller, name)
                chunks += (await self._store(record, todo)).chunks
            done = start + len(batch)
            await progress(100.0 * done / len(documents), f"{done} of {len(documents)} documents")
        return {
            "collection": name,
            "documents": len(documents),
            "chunks": chunks,
            "skipped": skipped,
        }

    async def _store(self, record: CollectionRecord, checked: list[NewDocument]) -> AddedDocuments:
        pieces = [split_text(d.text, record.chunk_size, record.chunk_overlap) for d in checked]
        texts = [chunk for chunks in pieces for chunk in chunks]
        vectors = await self._embed_many(record.model_name, texts)
        stored: list[StoredDocument] = []
        row = 0
        for document, chunks in zip(checked, pieces, strict=True):
            stored.append(
                StoredDocument(
                    document_id=document.document_id,
                    text=document.text,
                    metadata=document.metadata,
                    chunks=[
                        NewChunk(text=chunk, vector=vectors[row + i].astype("<f4").tobytes())
                        for i, chunk in enumerate(chunks)
                    ],
                )
            )
            row += len(chunks)
        now = utcnow()

        def put(tx: Any) -> ChunkChange:
            change = store.put_documents(tx.conn, record.collection_id, stored, now)
            self.vectors.changed_in_transaction(tx.conn, record, change)
            return change

        await self.vectors.changed(record, await self.db.write(put))
        return AddedDocuments([d.document_id for d in checked], len(texts))

    async def _embed_many(self, model: str, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        groups = [texts[i : i + EMBED_GROUP] for i in range(0, len(texts), EMBED_GROUP)]
        # Bounded: the model's batcher refuses work past its queue limit (1024 inputs).
        slots = asyncio.Semaphore(EMBED_IN_FLIGHT)

        async def embed(group: Sequence[str]) -> Vectors:
            async with slots:
                return await self.embedder.embed(model, group, field="documents")

        try:
            parts = await asyncio.gather(*(embed(group) for group in groups))
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"a chunk cannot be embedded by {model!r}: {exc.message} (create the collection "
                "with a smaller chunk_size)",
                field="documents",
            ) from None
        return np.vstack(parts)

    async def get_document(self, caller: Caller, name: str, document_id: str) -> Document:
        record = await self._find(caller, name)
        document = await self.db.read(
            lambda conn: store.get_document(conn, record.collection_id, document_id)
        )
        if document is None:
            raise DocumentNotFound(document_id)
        return _document(record, document)

    async def delete_document(self, caller: Caller, name: str, document_id: str) -> Document:
        record = await self._find(caller, name)

        def remove(tx: Any) -> tuple[DocumentRecord, ChunkChange] | None:
            found = store.delete_document(tx.conn, record.collection_id, document_id, utcnow())
            if found is not None:
                self.vectors.changed_in_transaction(tx.conn, record, found[1])
            return found

        found = await self.db.write(remove)
        if found is None:
            raise DocumentNotFound(document_id)
        document, change = found
        await self.vectors.changed(record, change)
        return _document(record, document)

    # -- retrieval for chat sessions ------------------------------------------------------

    async def check_collections(self, caller: Caller, names: Sequence[str]) -> None:
        """Raises CollectionNotFound (naming it) unless the tenant has every collection."""
        for name in names:
            await self._find(caller, name)

    async def retrieve(
        self, caller: Caller, names: Sequence[str], query: str, top_k: int
    ) -> list[Source]:
        """The ``top_k`` chunks of these collections nearest to ``query`` (cosine, so scores
        compare across collections), best first. A collection deleted since is skipped."""
        found: list[Source] = []
        for name in names:
            try:
                results = await self.search(caller, name, SearchSpec(query=query, top_k=top_k))
            except CollectionNotFound:
                log.info("a chat session's collection is gone", collection=name)
                continue
            found += [
                Source(collection=name, document_id=r.document_id, text=r.text, score=r.score)
                for r in results.results
            ]
        found.sort(key=lambda source: -source.score)
        return found[:top_k]

    # -- search ---------------------------------------------------------------------------

    async def search(self, caller: Caller, name: str, spec: SearchSpec) -> SearchResults:
        """The chunks that best match ``spec``, best first.

        Raises:
            CollectionNotFound: no such collection of the caller's tenant.
            InvalidArgument: bad ``mode``, ``top_k``, ``filter``, ``vector`` or a missing
                ``query``.
        """
        record = await self._find(caller, name)
        mode = _mode(spec)
        if len(spec.query) > MAX_QUERY_CHARS:
            raise InvalidArgument(
                f"query is {len(spec.query)} characters long; the limit is {MAX_QUERY_CHARS}",
                field="query",
            )
        top_k = spec.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}", field="top_k")
        wanted = _check_filter(spec.filter)
        only: list[str] | None = None
        if wanted:
            only = await self.db.read(
                lambda conn: store.matching_documents(conn, record.collection_id, wanted)
            )
        depth = max(top_k, FUSION_DEPTH) if mode is SearchMode.HYBRID else top_k
        rankings: list[list[Hit]] = []
        if mode is not SearchMode.KEYWORD:
            query = await self._query_vector(record, spec)
            rankings.append(await self._vector_hits(record, query, depth, only))
        if mode is not SearchMode.VECTOR:
            keyword = await self.db.read(
                lambda conn: store.keyword_search(
                    conn, record.collection_id, spec.query, depth, only
                )
            )
            rankings.append([Hit(chunk_id, score) for chunk_id, score in keyword])
        if mode is SearchMode.HYBRID:
            fused = fuse([[hit.chunk_id for hit in hits] for hits in rankings])
            hits = [Hit(chunk_id, score) for chunk_id, score in fused[:top_k]]
        else:
            hits = rankings[0][:top_k]
        rows = await self.db.read(
            lambda conn: store.chunks(conn, record.collection_id, [h.chunk_id for h in hits])
        )
        results = [
            SearchResult(
                document_id=row.document_id,
                text=row.text,
                score=hit.score,
                metadata=row.metadata,
                chunk_index=row.position,
            )
            for hit in hits
            if (row := rows.get(hit.chunk_id)) is not None
        ]
        return SearchResults(results, mode)

    async def _query_vector(self, record: CollectionRecord, spec: SearchSpec) -> Vectors:
        if spec.vector:
            if len(spec.vector) != record.dimensions:
                raise InvalidArgument(
                    f"vector has {len(spec.vector)} dimensions; collection {record.name!r} has "
                    f"{record.dimensions}",
                    field="vector",
                )
            vector = np.asarray(spec.vector, dtype=np.float32)
            norm = float(np.linalg.norm(vector))
            if not math.isfinite(norm) or norm == 0.0:
                raise InvalidArgument("vector must be finite and not all zeros", field="vector")
            return vector / norm
        matrix = await self.embedder.embed(record.model_name, [spec.query], field="query")
        embedded: Vectors = matrix[0]
        return embedded

    async def _vector_hits(
        self, record: CollectionRecord, query: Vectors, k: int, only: Sequence[str] | None
    ) -> list[Hit]:
        chunk_ids: list[int] | None = None
        if only is not None:
            chunk_ids = await self.db.read(
                lambda conn: store.chunk_ids_of(conn, record.collection_id, only)
            )
        return await self.vectors.search(record, query, k, chunk_ids)


class IngestPlanner:
    """Plans a large add of documents (created by :meth:`CollectionService.add`): one
    subtask of kind ``collection_ingest`` that the in-process workers run."""

    def task_types(self) -> Sequence[str]:
        return (INGEST_TASK,)

    def canonical(self, task_type: str) -> str | None:
        return INGEST_TASK if normalise_type(task_type) == INGEST_TASK else None

    def plan(self, spec: TaskSpec, task_type: str) -> Plan:
        data = dict(spec.input_data or {})
        documents = data.get("documents")
        if not isinstance(data.get("collection"), str) or not isinstance(documents, list):
            raise InvalidArgument(
                "input_data needs collection (a name) and documents (a list)",
                field="input_data",
            )
        checked = _check_documents([_document_from_json(d) for d in documents])
        data["documents"] = [
            {"id": d.document_id, "text": d.text, "metadata": d.metadata} for d in checked
        ]
        summary = {"collection": data["collection"], "documents": len(checked)}
        return Plan(
            task_type=INGEST_TASK, steps=(Step(kind=INGEST_TASK, input=data),), input_data=summary
        )


def _document_from_json(data: Any) -> NewDocument:
    if not isinstance(data, Mapping):
        return NewDocument(text="")
    metadata = data.get("metadata")
    return NewDocument(
        text=str(data.get("text") or ""),
        document_id=str(data.get("id") or ""),
        metadata=dict(metadata) if isinstance(metadata, Mapping) else None,
    )


def ingest_handler(collections: CollectionService) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    """The in-process worker handler of INGEST_TASK subtasks (``ctx``: a WorkContext)."""

    async def run(ctx: Any) -> dict[str, Any]:
        data = ctx.input
        caller = Caller(tenant_id=ctx.lease.subtask.tenant_id)
        documents = [_document_from_json(d) for d in data["documents"]]
        return await collections.ingest(caller, data["collection"], documents, ctx.progress)

    return run


def _document(record: CollectionRecord, document: DocumentRecord) -> Document:
    return Document(
        document_id=document.document_id,
        collection=record.name,
        text=document.text,
        metadata=document.metadata,
        chunk_count=document.chunk_count,
        created_at=document.created_at,
    )


def _mode(spec: SearchSpec) -> SearchMode:
    word = (spec.mode or "vector").strip().lower()
    try:
        mode = SearchMode(word)
    except ValueError:
        raise InvalidArgument(
            f"mode must be vector, keyword or hybrid, not {spec.mode!r}", field="mode"
        ) from None
    if spec.query.strip():
        if spec.vector and mode is not SearchMode.VECTOR:
            raise InvalidArgument(
                "give either query or vector (a vector searches in vector mode only)",
                field="vector",
            )
        return mode
    if not spec.vector:
        raise InvalidArgument("query (or, in vector mode, vector) is required", field="query")
    if mode is not SearchMode.VECTOR:
        raise InvalidArgument(f"{mode.value} search needs a query text", field="query")
    return mode


_SCALARS = (str, int, float, bool, type(None))


def _check_filter(wanted: Mapping[str, Any] | None) -> dict[str, Any]:
    if not wanted:
        return {}
    for key, value in wanted.items():
        if not isinstance(value, _SCALARS):
            raise InvalidArgument(
                "filter values must be strings, numbers, booleans or null (matched exactly)",
                field=f"filter.{key}",
            )
    return dict(wanted)


def _check_documents(documents: Sequence[NewDocument]) -> list[NewDocument]:
    if not documents:
        raise InvalidArgument("documents must not be empty", field="documents")
    if len(documents) > MAX_DOCUMENTS_PER_ADD:
        raise InvalidArgument(
            f"at most {MAX_DOCUMENTS_PER_ADD} documents per call", field="documents"
        )
    violations: list[FieldViolation] = []
    checked: list[NewDocument] = []
    seen: set[str] = set()
    for i, document in enumerate(documents):
        where = f"documents[{i}]"
        document_id = document.document_id or new_id()
        if len(document_id) > MAX_DOCUMENT_ID or document_id != document_id.strip():
            violations.append(
                FieldViolation(
                    f"{where}.id",
                    f"id must be 1-{MAX_DOCUMENT_ID} characters without surrounding spaces",
                )
            )
        elif document_id in seen:
            violations.append(FieldViolation(f"{where}.id", f"id {document_id!r} is repeated"))
        seen.add(document_id)
        if not document.text.strip():
            violations.append(FieldViolation(f"{where}.text", "text must not be empty"))
        elif len(document.text) > MAX_DOCUMENT_CHARS:
            violations.append(
                FieldViolation(
                    f"{where}.text", f"text must be at most {MAX_DOCUMENT_CHARS} characters"
                )
            )
        for key, value in (document.metadata or {}).items():
            if not isinstance(value, _SCALARS):
                violations.append(
                    FieldViolation(
                        f"{where}.metadata.{key}",
                        "metadata values must be strings, numbers, booleans or null",
                    )
                )
        checked.append(
            NewDocument(text=document.text, document_id=document_id, metadata=document.metadata)
        )
    if violations:
        first = violations[0]
        raise InvalidArgument(
            f"{first.field}: {first.description}", field=first.field, violations=violations[1:]
        )
    return checked
