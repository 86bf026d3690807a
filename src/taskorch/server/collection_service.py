"""CollectionService over gRPC: protobuf in, core/collections.py calls, protobuf out."""

from __future__ import annotations

from typing import Any, TypeAlias

from taskorch.core.collections import (
    Collection,
    CollectionService,
    Document,
    NewCollection,
    NewDocument,
    SearchSpec,
)
from taskorch.server import convert
from taskorch.server.interceptors import current_caller
from taskorch.v1 import collection_service_pb2 as pb
from taskorch.v1 import collection_service_pb2_grpc as pb_grpc

# grpc ships no type information; servicer contexts are grpc.aio.ServicerContext.
Context: TypeAlias = Any


class CollectionServicer(pb_grpc.CollectionServiceServicer):
    """The CollectionService RPCs: collections, documents and search."""

    def __init__(self, collections: CollectionService) -> None:
        self.collections = collections

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: Context
    ) -> pb.Collection:
        """Creates a collection on an embedding (feature_extraction) model."""
        spec = NewCollection(
            name=request.name,
            model_name=request.model_name,
            chunk_size=request.chunk_size,
            chunk_overlap=(request.chunk_overlap if request.HasField("chunk_overlap") else None),
        )
        return collection_to_proto(await self.collections.create(current_caller(), spec))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: Context
    ) -> pb.ListCollectionsResponse:
        """The caller's collections, by name."""
        found = await self.collections.list_collections(current_caller())
        return pb.ListCollectionsResponse(collections=[collection_to_proto(c) for c in found])

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: Context
    ) -> pb.Collection:
        """One collection with its counts."""
        return collection_to_proto(await self.collections.get(current_caller(), request.name))

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: Context
    ) -> pb.Collection:
        """Deletes a collection with its documents."""
        return collection_to_proto(await self.collections.delete(current_caller(), request.name))

    async def AddDocuments(
        self, request: pb.AddDocumentsRequest, context: Context
    ) -> pb.AddDocumentsResponse:
        """Adds documents, chunked and embedded, durable and searchable when it answers."""
        documents = [
            NewDocument(
                text=d.text,
                document_id=d.id,
                metadata=convert.optional_struct(d, "metadata"),
            )
            for d in request.documents
        ]
        added = await self.collections.add(current_caller(), request.name, documents)
        return pb.AddDocumentsResponse(
            document_ids=added.document_ids, chunks=added.chunks, task_id=added.task_id
        )

    async def GetDocument(self, request: pb.GetDocumentRequest, context: Context) -> pb.Document:
        """One document of a collection."""
        document = await self.collections.get_document(
            current_caller(), request.name, request.document_id
        )
        return document_to_proto(document)

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Context
    ) -> pb.Document:
        """Deletes a document and its chunks."""
        document = await self.collections.delete_document(
            current_caller(), request.name, request.document_id
        )
        return document_to_proto(document)

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        """The chunks that best match a query text or a vector, best first."""
        spec = SearchSpec(
            query=request.query,
            vector=list(request.vector),
            top_k=request.top_k,
            filter=convert.optional_struct(request, "filter"),
            mode=request.mode,
        )
        found = await self.collections.search(current_caller(), request.name, spec)
        response = pb.SearchResponse(mode=found.mode.value)
        for result in found.results:
            out = response.results.add(
                document_id=result.document_id,
                text=result.text,
                score=result.score,
                chunk_index=result.chunk_index,
            )
            if result.metadata is not None:
                out.metadata.update(result.metadata)
        return response


def collection_to_proto(collection: Collection) -> pb.Collection:
    """A collection as the API's message."""
    out = pb.Collection(
        name=collection.name,
        model_name=collection.model_name,
        dimensions=collection.dimensions,
        metric=collection.metric,
        chunk_size=collection.chunk_size,
        chunk_overlap=collection.chunk_overlap,
        document_count=collection.document_count,
        chunk_count=collection.chunk_count,
        index=collection.index,
        backend=collection.backend,
    )
    convert.set_time(out.created_at, collection.created_at)
    convert.set_time(out.updated_at, collection.updated_at)
    return out


def document_to_proto(document: Document) -> pb.Document:
    """A document as the API's message."""
    out = pb.Document(
        document_id=document.document_id,
        collection=document.collection,
        text=document.text,
        chunk_count=document.chunk_count,
    )
    if document.metadata is not None:
        out.metadata.update(document.metadata)
    convert.set_time(out.created_at, document.created_at)
    return out
