"""The template service: built-in templates and each tenant's own (list, get, create, update,
delete).

Built-in templates are read-only; user templates belong to the caller's tenant, and another
tenant's template answers TEMPLATE_NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from taskorch.core.templates.builtin import load_builtin_templates
from taskorch.core.templates.definition import Template, parse_template
from taskorch.core.templates.parameters import Parameter
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    AlreadyExists,
    AlreadyStored,
    ErrorStatus,
    InvalidArgument,
    TaskorchError,
    TemplateNotFound,
)
from taskorch.domain.ids import new_id
from taskorch.store import templates as template_store
from taskorch.store.database import Database, Transaction
from taskorch.store.schema import utcnow


class TemplateReadOnly(TaskorchError):
    """Built-in templates ship with the server and cannot be changed or deleted."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Template '{name}' is built in and read-only; create a template with another "
            "name instead",
            reason="TEMPLATE_READ_ONLY",
            status=ErrorStatus.PERMISSION_DENIED,
            metadata={"id": name},
        )


class TemplateService:
    """Built-in templates and the user templates of each tenant."""

    def __init__(
        self,
        db: Database,
        builtins: Mapping[str, Template] | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.builtins = dict(load_builtin_templates() if builtins is None else builtins)
        self.clock = clock

    def builtin(self, name: str) -> Template | None:
        return self.builtins.get(name)

    async def list(self, caller: Caller) -> list[Template]:
        """Built-in templates and the caller's, by name."""
        records = await self.db.read(
            lambda conn: template_store.list_templates(conn, caller.tenant_id)
        )
        found = [*self.builtins.values(), *(_from_record(r) for r in records)]
        return sorted(found, key=lambda t: t.name)

    async def get(self, caller: Caller, name: str) -> Template:
        """Raises TemplateNotFound, also for another tenant's template."""
        name = _name(name)
        builtin = self.builtins.get(name)
        if builtin is not None:
            return builtin
        record = await self.db.read(
            lambda conn: template_store.get_template(conn, caller.tenant_id, name)
        )
        if record is None:
            known = ", ".join(t.name for t in await self.list(caller))
            raise TemplateNotFound(name, message=f"Template '{name}' not found; templates: {known}")
        return _from_record(record)

    async def create(self, caller: Caller, definition: Mapping[str, Any]) -> Template:
        """Stores a user template in the caller's tenant.

        Raises:
            InvalidArgument: the definition is invalid (naming the fields).
            AlreadyExists: a built-in template or one of the tenant's has that name.
        """
        template = parse_template(definition)
        self._refuse_builtin_name(template.name)
        now = self.clock()
        record = template_store.TemplateRecord(
            template_id=new_id(),
            tenant_id=caller.tenant_id,
            name=template.name,
            description=template.description,
            parameters=template.to_json()["parameters"],
            steps=template.to_json()["steps"],
            created_at=now,
            updated_at=now,
        )

        def insert(tx: Transaction) -> None:
            if template_store.get_template(tx.conn, caller.tenant_id, template.name) is not None:
                raise _taken(template.name)
            template_store.insert_template(tx.conn, record)

        try:
            await self.db.write(insert)
        except AlreadyStored:  # created by another replica meanwhile (store/ says so)
            raise _taken(template.name) from None
        return _from_record(record)

    async def update(self, caller: Caller, name: str, definition: Mapping[str, Any]) -> Template:
        """Replaces a user template's description, parameters and steps.

        Raises:
            TemplateReadOnly: a built-in template.
            TemplateNotFound: the tenant has no template of that name.
            InvalidArgument: the definition is invalid, or names another template.
        """
        name = _name(name)
        if name in self.builtins:
            raise TemplateReadOnly(name)
        given = definition.get("name")
        if given and given != name:
            raise InvalidArgument(
                f"template.name {given!r} differs from the template being updated ({name!r}); "
                "templates cannot be renamed",
                field="template.name",
            )
        template = parse_template({**definition, "name": name})
        data = template.to_json()

        def change(tx: Transaction) -> template_store.TemplateRecord:
            record = template_store.update_template(
                tx.conn,
                caller.tenant_id,
                name,
                description=template.description,
                parameters=data["parameters"],
                steps=data["steps"],
                updated_at=self.clock(),
            )
            if record is None:
                raise TemplateNotFound(name)
            return record

        return _from_record(await self.db.write(change))

    async def delete(self, caller: Caller, name: str) -> None:
        """Raises TemplateReadOnly (a built-in template) or TemplateNotFound."""
        name = _name(name)
        if name in self.builtins:
            raise TemplateReadOnly(name)

        def remove(tx: Transaction) -> None:
            if not template_store.delete_template(tx.conn, caller.tenant_id, name):
                raise TemplateNotFound(name)

        await self.db.write(remove)

    def _refuse_builtin_name(self, name: str) -> None:
        if name in self.builtins:
            raise AlreadyExists(
                f"Template '{name}' is a built-in template; choose another name",
                reason="TEMPLATE_ALREADY_EXISTS",
            )


def _name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidArgument("template name is required", field="name")
    return name


def _taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"Template '{name}' already exists; update it or choose another name",
        reason="TEMPLATE_ALREADY_EXISTS",
    )


def _from_record(record: template_store.TemplateRecord) -> Template:
    # Checked when written; not checked again, so that a stored template a later release
    # would refuse can still be listed, read, fixed or deleted.
    return Template(
        name=record.name,
        description=record.description,
        parameters=tuple(
            Parameter(
                name=str(p.get("name", "")),
                type=str(p.get("type", "string")),
                required=bool(p.get("required", False)),
                description=str(p.get("description") or ""),
                default=p.get("default"),
                enum=tuple(p.get("enum") or ()),
            )
            for p in record.parameters
            if isinstance(p, Mapping)
        ),
        steps=tuple(dict(s) for s in record.steps if isinstance(s, Mapping)),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
