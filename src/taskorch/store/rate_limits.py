"""Repository of the tenants' request rate limits (one row per tenant that has its own)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from taskorch.store.schema import tenant_rate_limits


@dataclass(frozen=True)
class TenantRateLimitRecord:
    tenant_id: str
    rate_per_second: float  # 0: unlimited
    burst: int
    updated_at: datetime


def set_limit(conn: Connection, record: TenantRateLimitRecord) -> None:
    """Sets (replaces) ``record.tenant_id``'s limit; call it in one transaction."""
    conn.execute(
        delete(tenant_rate_limits).where(tenant_rate_limits.c.tenant_id == record.tenant_id)
    )
    conn.execute(
        insert(tenant_rate_limits),
        {
            "tenant_id": record.tenant_id,
            "rate_per_second": record.rate_per_second,
            "burst": record.burst,
            "updated_at": record.updated_at,
        },
    )


def clear_limit(conn: Connection, tenant_id: str) -> bool:
    """Removes the tenant's own limit (the server default applies again); False if none."""
    done = conn.execute(
        delete(tenant_rate_limits).where(tenant_rate_limits.c.tenant_id == tenant_id)
    )
    return bool(done.rowcount)


def list_limits(conn: Connection) -> list[TenantRateLimitRecord]:
    rows = conn.execute(select(tenant_rate_limits).order_by(tenant_rate_limits.c.tenant_id))
    return [
        TenantRateLimitRecord(
            tenant_id=row["tenant_id"],
            rate_per_second=row["rate_per_second"],
            burst=row["burst"],
            updated_at=row["updated_at"],
        )
        for row in rows.mappings()
    ]
