"""Retrieval values of the SDK: what ``client.collections`` returns, and its requests.

Collections hold documents embedded by a model of the server, searched by vector, keyword or
both; the calls are ``Collections`` and ``AsyncCollections`` (``_async_client.py``).

Documents are given as :class:`NewDocument` or as plain mappings with ``text`` and optional
``id`` and ``metadata`` (the REST body's shape).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskorch.client._models import _struct, _time
from taskorch.v1 import collection_service_pb2 as pb


@dataclass(frozen=True)
class Collection:
    """A collection of documents, embedded by one model and searched by an index.

    A collection: its embedding model, the model's ``dimensions``, how documents are split
    (``chunk_size``, ``chunk_overlap`` characters), counts, and the vector index searching it
    (``index`` "flat" (exact) or "hnsw", on ``backend`` "faiss").
    """

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
    """What ``add`` answers: the documents' ids and the chunks stored.

    The documents' ids, in the order given, and the chunks stored; a large add (over 100 documents
    or 200,000 characters) runs as task ``task_id`` instead (``chunks`` 0; follow it with
    ``wait_for_task`` / ``watch_task``).
    """

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
