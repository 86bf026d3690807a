"""Retrieval in the SDK: ``client.collections`` (:class:`Collections`, blocking) and
``async_client.collections`` (:class:`AsyncCollections`): collections of documents embedded
by a model of the server, and search over them by vector, keyword or both.

Documents are given as :class:`NewDocument` or as plain mappings with ``text`` and optional
``id`` and ``metadata`` (the REST body's shape).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskorch.client._models import _struct, _time
from taskorch.v1 import collection_service_pb2 as pb
from taskorch.v1 import collection_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from taskorch.client._client import AsyncClient, Client


@dataclass(frozen=True)
class Collection:
    """A collection: its embedding model, the model's ``dimensions``, how documents are split
    (``chunk_size``, ``chunk_overlap`` characters), counts, and the vector index searching it
    (``index`` "flat" (exact) or "hnsw", on ``backend`` "faiss")."""

    name: str
    model_name: str
    dimensions: int
    metric: str
    chunk_size: int
    chunk_overlap: int
    document_count: int
    chunk_count: int
    created_at: datetime | None
    updated_at: datetime | None
    index: str
    backend: str

    @classmethod
    def from_proto(cls, m: pb.Collection) -> Collection:
        return cls(
            name=m.name,
            model_name=m.model_name,
            dimensions=m.dimensions,
            metric=m.metric,
            chunk_size=m.chunk_size,
            chunk_overlap=m.chunk_overlap,
            document_count=m.document_count,
            chunk_count=m.chunk_count,
            created_at=_time(m, "created_at"),
            updated_at=_time(m, "updated_at"),
            index=m.index,
            backend=m.backend,
        )


@dataclass(frozen=True)
class NewDocument:
    """A document to add: ``id`` empty means the server gives it a UUID."""

    text: str
    id: str = ""
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class AddedDocuments:
    """What ``add`` answers: the documents' ids, in the order given, and the chunks stored;
    a large add (over 100 documents or 200,000 characters) runs as task ``task_id``
    instead (``chunks`` 0; follow it with ``wait_for_task`` / ``watch_task``)."""

    document_ids: list[str]
    chunks: int
    task_id: str = ""


@dataclass(frozen=True)
class Document:
    document_id: str
    collection: str
    text: str
    metadata: dict[str, Any] | None
    chunk_count: int
    created_at: datetime | None

    @classmethod
    def from_proto(cls, m: pb.Document) -> Document:
        return cls(
            document_id=m.document_id,
            collection=m.collection,
            text=m.text,
            metadata=_struct(m, "metadata"),
            chunk_count=m.chunk_count,
            created_at=_time(m, "created_at"),
        )


@dataclass(frozen=True)
class SearchResult:
    """A matching chunk (``text``) of document ``document_id``; higher ``score`` is better."""

    document_id: str
    text: str
    score: float
    metadata: dict[str, Any] | None
    chunk_index: int

    @classmethod
    def from_proto(cls, m: pb.SearchResult) -> SearchResult:
        return cls(
            document_id=m.document_id,
            text=m.text,
            score=m.score,
            metadata=_struct(m, "metadata"),
            chunk_index=m.chunk_index,
        )


def _added(answer: pb.AddDocumentsResponse) -> AddedDocuments:
    return AddedDocuments(list(answer.document_ids), answer.chunks, answer.task_id)


def _create_request(
    name: str, model_name: str, chunk_size: int, chunk_overlap: int | None
) -> pb.CreateCollectionRequest:
    request = pb.CreateCollectionRequest(name=name, model_name=model_name, chunk_size=chunk_size)
    if chunk_overlap is not None:
        request.chunk_overlap = chunk_overlap
    return request


def _add_request(
    name: str, documents: Iterable[NewDocument | Mapping[str, Any] | str]
) -> pb.AddDocumentsRequest:
    request = pb.AddDocumentsRequest(name=name)
    for document in documents:
        if isinstance(document, str):
            document = NewDocument(text=document)
        elif isinstance(document, Mapping):
            document = NewDocument(
                text=document.get("text", ""),
                id=document.get("id", ""),
                metadata=document.get("metadata"),
            )
        out = request.documents.add(id=document.id, text=document.text)
        if document.metadata is not None:
            out.metadata.update(document.metadata)
    return request


def _search_request(
    name: str,
    query: str,
    vector: Sequence[float] | None,
    top_k: int,
    filter: Mapping[str, Any] | None,
    mode: str,
) -> pb.SearchRequest:
    request = pb.SearchRequest(name=name, query=query, top_k=top_k, mode=mode)
    if vector is not None:
        request.vector.extend(vector)
    if filter is not None:
        request.filter.update(filter)
    return request


class Collections:
    """``client.collections``: collections of documents and search over them (blocking)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = pb_grpc.CollectionServiceStub(client._channel)

    def create(
        self,
        name: str,
        model_name: str = "",
        *,
        chunk_size: int = 0,
        chunk_overlap: int | None = None,
    ) -> Collection:
        """Creates a collection on an embedding model ("" = the server's default one)."""
        request = _create_request(name, model_name, chunk_size, chunk_overlap)
        return Collection.from_proto(self._client._call(self._stub.CreateCollection, request))

    def get(self, name: str) -> Collection:
        """One collection (``NotFoundError``, reason COLLECTION_NOT_FOUND, if none)."""
        request = pb.GetCollectionRequest(name=name)
        return Collection.from_proto(self._client._call(self._stub.GetCollection, request))

    def delete(self, name: str) -> Collection:
        request = pb.DeleteCollectionRequest(name=name)
        return Collection.from_proto(self._client._call(self._stub.DeleteCollection, request))

    def add(
        self, name: str, documents: Iterable[NewDocument | Mapping[str, Any] | str]
    ) -> AddedDocuments:
        """Adds documents (an existing id is replaced): they are durable and searchable when
        this answers, or, for a large add, when its task (``task_id``) completes."""
        answer = self._client._call(self._stub.AddDocuments, _add_request(name, documents))
        return _added(answer)

    def get_document(self, name: str, document_id: str) -> Document:
        request = pb.GetDocumentRequest(name=name, document_id=document_id)
        return Document.from_proto(self._client._call(self._stub.GetDocument, request))

    def delete_document(self, name: str, document_id: str) -> Document:
        request = pb.DeleteDocumentRequest(name=name, document_id=document_id)
        return Document.from_proto(self._client._call(self._stub.DeleteDocument, request))

    def search(
        self,
        name: str,
        query: str = "",
        *,
        vector: Sequence[float] | None = None,
        top_k: int = 0,
        filter: Mapping[str, Any] | None = None,
        mode: str = "",
    ) -> list[SearchResult]:
        """The best chunks for ``query`` (or ``vector``), best first. ``mode``: "vector"
        (default), "keyword" or "hybrid"; ``filter``: metadata values matched exactly."""
        request = _search_request(name, query, vector, top_k, filter, mode)
        answer = self._client._call(self._stub.Search, request)
        return [SearchResult.from_proto(r) for r in answer.results]

    # Last: below it, `list` in annotations would name this method.
    def list(self) -> list[Collection]:
        answer = self._client._call(self._stub.ListCollections, pb.ListCollectionsRequest())
        return [Collection.from_proto(c) for c in answer.collections]


class AsyncCollections:
    """``async_client.collections``: the same methods as :class:`Collections`, for asyncio."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stub = pb_grpc.CollectionServiceStub(client._channel)

    async def create(
        self,
        name: str,
        model_name: str = "",
        *,
        chunk_size: int = 0,
        chunk_overlap: int | None = None,
    ) -> Collection:
        request = _create_request(name, model_name, chunk_size, chunk_overlap)
        answer = await self._client._call(self._stub.CreateCollection, request)
        return Collection.from_proto(answer)

    async def get(self, name: str) -> Collection:
        request = pb.GetCollectionRequest(name=name)
        return Collection.from_proto(await self._client._call(self._stub.GetCollection, request))

    async def delete(self, name: str) -> Collection:
        request = pb.DeleteCollectionRequest(name=name)
        answer = await self._client._call(self._stub.DeleteCollection, request)
        return Collection.from_proto(answer)

    async def add(
        self, name: str, documents: Iterable[NewDocument | Mapping[str, Any] | str]
    ) -> AddedDocuments:
        answer = await self._client._call(self._stub.AddDocuments, _add_request(name, documents))
        return _added(answer)

    async def get_document(self, name: str, document_id: str) -> Document:
        request = pb.GetDocumentRequest(name=name, document_id=document_id)
        return Document.from_proto(await self._client._call(self._stub.GetDocument, request))

    async def delete_document(self, name: str, document_id: str) -> Document:
        request = pb.DeleteDocumentRequest(name=name, document_id=document_id)
        return Document.from_proto(await self._client._call(self._stub.DeleteDocument, request))

    async def search(
        self,
        name: str,
        query: str = "",
        *,
        vector: Sequence[float] | None = None,
        top_k: int = 0,
        filter: Mapping[str, Any] | None = None,
        mode: str = "",
    ) -> list[SearchResult]:
        request = _search_request(name, query, vector, top_k, filter, mode)
        answer = await self._client._call(self._stub.Search, request)
        return [SearchResult.from_proto(r) for r in answer.results]

    async def list(self) -> list[Collection]:
        request = pb.ListCollectionsRequest()
        answer = await self._client._call(self._stub.ListCollections, request)
        return [Collection.from_proto(c) for c in answer.collections]
