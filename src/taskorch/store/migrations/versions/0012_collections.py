"""Collections: documents, their chunks and vectors; keyword search on SQLite (FTS5);
chat sessions that answer from collections, and the sources of their replies

The chunks' text is indexed for keyword search by an FTS5 table on SQLite (BM25 ranking),
kept in step with collection_chunks by triggers; PostgreSQL searches the text with its
full-text functions at query time and needs no extra table.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_CHUNK_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE collection_chunks_fts USING fts5("
    "text, content='collection_chunks', content_rowid='chunk_id')",
    "CREATE TRIGGER collection_chunks_fts_insert AFTER INSERT ON collection_chunks BEGIN "
    "INSERT INTO collection_chunks_fts(rowid, text) VALUES (new.chunk_id, new.text); END",
    "CREATE TRIGGER collection_chunks_fts_delete AFTER DELETE ON collection_chunks BEGIN "
    "INSERT INTO collection_chunks_fts(collection_chunks_fts, rowid, text) "
    "VALUES ('delete', old.chunk_id, old.text); END",
]


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("collection_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("chunk_overlap", sa.Integer(), nullable=False),
        sa.Column("document_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("chunk_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("collection_id", name=op.f("pk_collections")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_collections_tenant_id_name")),
    )
    op.create_table(
        "collection_documents",
        sa.Column("collection_id", sa.String(length=36), nullable=False),
        sa.Column("document_id", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", _JSON, nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.collection_id"],
            name=op.f("fk_collection_documents_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "collection_id", "document_id", name=op.f("pk_collection_documents")
        ),
    )
    op.create_table(
        "collection_chunks",
        sa.Column("chunk_id", _CHUNK_ID, autoincrement=True, nullable=False),
        sa.Column("collection_id", sa.String(length=36), nullable=False),
        sa.Column("document_id", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.collection_id"],
            name=op.f("fk_collection_chunks_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chunk_id", name=op.f("pk_collection_chunks")),
    )
    op.create_index(
        op.f("ix_collection_chunks_collection_id_document_id"),
        "collection_chunks",
        ["collection_id", "document_id"],
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    op.add_column("chat_sessions", sa.Column("collections", _JSON, nullable=True))
    op.add_column("chat_messages", sa.Column("sources", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("sources")
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("collections")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE collection_chunks_fts")
    op.drop_index(
        op.f("ix_collection_chunks_collection_id_document_id"), table_name="collection_chunks"
    )
    op.drop_table("collection_chunks")
    op.drop_table("collection_documents")
    op.drop_table("collections")
