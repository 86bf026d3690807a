"""Repository of user templates (synchronous SQLAlchemy Core, functions of a ``Connection``).

Every function takes the tenant whose templates it may touch: names are unique per tenant,
and one tenant never sees another's. Built-in templates are not stored (they ship as files).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from taskorch.store.schema import templates


@dataclass(frozen=True)
class TemplateRecord:
    """A stored template as the table holds it; core/templates/definition.py checks it."""

    template_id: str
    tenant_id: str
    name: str
    description: str
    parameters: list[Any]
    steps: list[Any]
    created_at: datetime
    updated_at: datetime


def _record(row: RowMapping) -> TemplateRecord:
    return TemplateRecord(
        template_id=row["template_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        description=row["description"],
        parameters=list(row["parameters"] or []),
        steps=list(row["steps"] or []),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def list_templates(conn: Connection, tenant_id: str) -> list[TemplateRecord]:
    """The tenant's templates by name."""
    stmt = select(templates).where(templates.c.tenant_id == tenant_id).order_by(templates.c.name)
    return [_record(row) for row in conn.execute(stmt).mappings()]


def get_template(conn: Connection, tenant_id: str, name: str) -> TemplateRecord | None:
    stmt = select(templates).where(templates.c.tenant_id == tenant_id, templates.c.name == name)
    row = conn.execute(stmt).mappings().first()
    return _record(row) if row is not None else None


def insert_template(conn: Connection, record: TemplateRecord) -> None:
    """Raises IntegrityError when the tenant already has a template of that name."""
    conn.execute(
        insert(templates).values(
            template_id=record.template_id,
            tenant_id=record.tenant_id,
            name=record.name,
            description=record.description,
            parameters=record.parameters,
            steps=record.steps,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )
    )


def update_template(
    conn: Connection,
    tenant_id: str,
    name: str,
    *,
    description: str,
    parameters: list[Any],
    steps: list[Any],
    updated_at: datetime,
) -> TemplateRecord | None:
    """Replaces a template's definition; None when the tenant has no template of that name."""
    stmt = (
        update(templates)
        .where(templates.c.tenant_id == tenant_id, templates.c.name == name)
        .values(description=description, parameters=parameters, steps=steps, updated_at=updated_at)
        .returning(templates)
    )
    row = conn.execute(stmt).mappings().first()
    return _record(row) if row is not None else None


def delete_template(conn: Connection, tenant_id: str, name: str) -> bool:
    """True when a template was deleted."""
    stmt = delete(templates).where(templates.c.tenant_id == tenant_id, templates.c.name == name)
    return conn.execute(stmt).rowcount > 0
