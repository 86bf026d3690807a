"""User templates in the store: per tenant, built-ins read-only, names unique per tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskorch.core.templates.service import TemplateReadOnly, TemplateService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    AlreadyExists,
    AlreadyStored,
    InvalidArgument,
    TemplateNotFound,
)
from taskorch.store import templates as template_store
from taskorch.store.database import Database
from taskorch.store.schema import utcnow
from tests import databases

ALICE = Caller(tenant_id="alice")
BOB = Caller(tenant_id="bob")


def greeting(description: str = "Says hello") -> dict[str, Any]:
    return {
        "name": "greeting",
        "description": description,
        "parameters": [{"name": "who", "type": "string", "required": True}],
        "steps": [{"type": "echo", "message": "Hello {{who}}"}],
    }


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[TemplateService]:
    """On the test backend's database (TASKORCH_TEST_BACKEND=postgresql for PostgreSQL)."""
    url = databases.new_database(tmp_path)
    db = Database(url)
    await db.open()
    yield TemplateService(db)
    await db.close()
    databases.discard(url)


async def test_a_user_template_belongs_to_its_tenant(service: TemplateService) -> None:
    created = await service.create(ALICE, greeting())
    assert not created.builtin and created.created_at is not None
    assert (await service.get(ALICE, "greeting")).steps == created.steps
    assert "greeting" in [t.name for t in await service.list(ALICE)]
    assert "greeting" not in [t.name for t in await service.list(BOB)]
    with pytest.raises(TemplateNotFound):
        await service.get(BOB, "greeting")
    with pytest.raises(TemplateNotFound):
        await service.update(BOB, "greeting", greeting("mine now"))
    with pytest.raises(TemplateNotFound):
        await service.delete(BOB, "greeting")
    # The same name in another tenant is another template.
    await service.create(BOB, greeting("Bob's"))
    assert (await service.get(ALICE, "greeting")).description == "Says hello"
    assert (await service.get(BOB, "greeting")).description == "Bob's"


async def test_a_name_stored_by_another_writer_first_is_a_domain_error(
    service: TemplateService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store turns the unique-key violation into AlreadyStored (core sees no SQLAlchemy
    error), and the service answers it as the name being taken."""
    await service.create(ALICE, greeting())
    record = template_store.TemplateRecord(
        template_id="t-2",
        tenant_id="alice",
        name="greeting",
        description="",
        parameters=[],
        steps=[],
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    with pytest.raises(AlreadyStored):
        await service.db.write(lambda tx: template_store.insert_template(tx.conn, record))
    # Another replica stored the name after this one looked: the look-up misses it.
    monkeypatch.setattr(template_store, "get_template", lambda *_args: None)
    with pytest.raises(AlreadyExists, match="already exists") as caught:
        await service.create(ALICE, greeting())
    assert not isinstance(caught.value, AlreadyStored)


async def test_update_replaces_and_delete_removes(service: TemplateService) -> None:
    created = await service.create(ALICE, greeting())
    updated = await service.update(ALICE, "greeting", {**greeting("v2"), "name": ""})
    assert updated.description == "v2"
    assert updated.created_at == created.created_at
    assert updated.updated_at is not None and created.updated_at is not None
    assert updated.updated_at >= created.updated_at
    with pytest.raises(InvalidArgument, match="cannot be renamed"):
        await service.update(ALICE, "greeting", {**greeting(), "name": "other"})
    await service.delete(ALICE, "greeting")
    with pytest.raises(TemplateNotFound):
        await service.get(ALICE, "greeting")


async def test_names_are_unique_per_tenant_and_built_ins_are_read_only(
    service: TemplateService,
) -> None:
    await service.create(ALICE, greeting())
    with pytest.raises(AlreadyExists, match="already exists"):
        await service.create(ALICE, greeting())
    with pytest.raises(AlreadyExists, match="built-in"):
        await service.create(ALICE, {**greeting(), "name": "text-analysis"})
    with pytest.raises(TemplateReadOnly) as caught:
        await service.update(ALICE, "text-analysis", greeting())
    assert caught.value.reason == "TEMPLATE_READ_ONLY"
    with pytest.raises(TemplateReadOnly):
        await service.delete(ALICE, "text-analysis")
    assert (await service.get(BOB, "text-analysis")).builtin


async def test_unknown_template_lists_the_callers_templates(service: TemplateService) -> None:
    await service.create(ALICE, greeting())
    with pytest.raises(TemplateNotFound) as caught:
        await service.get(ALICE, "nope")
    assert caught.value.reason == "TEMPLATE_NOT_FOUND"
    assert "Template 'nope' not found; templates: " in caught.value.message
    assert "greeting" in caught.value.message and "text-analysis" in caught.value.message
