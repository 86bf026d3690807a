"""Repository of API keys (hashes only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, RowMapping, func, insert, or_, select, update

from taskorch.store.schema import api_keys


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    role: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def _record(row: RowMapping) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row["key_id"],
        tenant_id=row["tenant_id"],
        role=row["role"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def insert_key(conn: Connection, record: ApiKeyRecord, key_hash: str) -> None:
    conn.execute(
        insert(api_keys),
        {
            "key_id": record.key_id,
            "tenant_id": record.tenant_id,
            "role": record.role,
            "name": record.name,
            "prefix": record.prefix,
            "key_hash": key_hash,
            "created_at": record.created_at,
        },
    )


def find_by_hash(conn: Connection, key_hash: str) -> tuple[ApiKeyRecord, str] | None:
    row = conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)).mappings().first()
    return (_record(row), row["key_hash"]) if row else None


def list_keys(conn: Connection, tenant_id: str | None = None) -> list[ApiKeyRecord]:
    stmt = select(api_keys).order_by(api_keys.c.created_at)
    if tenant_id is not None:
        stmt = stmt.where(api_keys.c.tenant_id == tenant_id)
    return [_record(row) for row in conn.execute(stmt).mappings()]


def revoke(conn: Connection, key_id_or_hash: str, now: datetime) -> ApiKeyRecord | None:
    """Revokes a key named by its id or its hash; None when there is no such key."""
    row = (
        conn.execute(
            update(api_keys)
            .where(
                or_(api_keys.c.key_id == key_id_or_hash, api_keys.c.key_hash == key_id_or_hash),
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
            .returning(api_keys)
        )
        .mappings()
        .first()
    )
    return _record(row) if row else None


def active_count(conn: Connection) -> int:
    return conn.execute(
        select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
    ).scalar_one()
